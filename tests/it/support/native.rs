//! Native fixtures: two small C programs the tests build with the system's compiler, for
//! conditions no Rust test code can create from outside the daemon.
//!
//! - [`StallFs`] (`stallfs.c`): a volume served through FUSE whose reads (or lookups, listings,
//!   ...) can be made to hang, like a volume on storage that stopped answering; the test keeps
//!   writing the backing directory as kubelet would.
//! - [`seccomp_deny`] (`seccomp_deny.c`): runs a command with some system calls refused, like a
//!   container runtime's seccomp profile that predates them.
//!
//! Both are compiled once per run into `target/tmp/native`, named by a hash of their source and
//! flags. The tests need root (as all of `tests/it`), gcc, libc6-dev, pkg-config, libfuse3-dev and
//! libseccomp-dev; a missing one fails the test with the Debian package to install, never skips
//! it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{eventually, tempdir, unique};

/// A fixture's source and what it links against: (pkg-config name, Debian package).
fn source(name: &str) -> (&'static str, (&'static str, &'static str)) {
    match name {
        "stallfs" => (include_str!("stallfs.c"), ("fuse3", "libfuse3-dev")),
        "seccomp_deny" => (
            include_str!("seccomp_deny.c"),
            ("libseccomp", "libseccomp-dev"),
        ),
        _ => panic!("no native fixture named {name}"),
    }
}

/// The built executable of fixture `name` (`stallfs`, `seccomp_deny`), compiled on first use.
///
/// Several test binaries may build at once (`it` and `system` share this code): each compiles to
/// a name of its own and renames into place, so a reader sees no executable or a whole one.
pub fn build(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held while compiling: the tests of one run that want the same fixture wait for one gcc.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(exe) = built.get(name) {
        return exe.clone();
    }
    let (code, (pc, package)) = source(name);
    let flags = pkg_config(pc, package);
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, code.as_bytes());
    sha2::Digest::update(&mut hasher, flags.join(" ").as_bytes());
    let hash: String = sha2::Digest::finalize(hasher)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("native");
    std::fs::create_dir_all(&dir).expect("create target/tmp/native");
    let exe = dir.join(format!("{name}-{hash}"));
    if !exe.exists() {
        let tmp = dir.join(format!(
            ".{name}-{hash}.{}.{}",
            std::process::id(),
            unique()
        ));
        let src = tmp.with_extension("c");
        std::fs::write(&src, code).expect("write the fixture's source");
        let out = Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .args(&flags)
            .output();
        let _ = std::fs::remove_file(&src);
        let out = match out {
            Ok(out) => out,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("gcc not found: install the Debian packages gcc and libc6-dev")
            }
            Err(e) => panic!("run gcc: {e}"),
        };
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            panic!(
                "gcc could not build the {name} fixture (it needs the Debian packages gcc, \
                 libc6-dev and {package}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::rename(&tmp, &exe).expect("move the built fixture into place");
    }
    built.insert(name.to_string(), exe.clone());
    exe
}

/// Compiler and linker flags of library `pc`; panics naming `package` when it is not installed.
fn pkg_config(pc: &str, package: &str) -> Vec<String> {
    let out = match Command::new("pkg-config")
        .args(["--cflags", "--libs", pc])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("pkg-config not found: install the Debian package pkg-config")
        }
        Err(e) => panic!("run pkg-config: {e}"),
    };
    assert!(
        out.status.success(),
        "pkg-config does not know {pc}: install the Debian package {package} ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The built `seccomp_deny` launcher; see `seccomp_deny.c`. Run alone with `--try CALLS`, it
/// makes those calls and prints `NAME ok` or `NAME EPERM` (or the errno's name) for each.
pub fn seccomp_deny() -> PathBuf {
    build("seccomp_deny")
}

/// The launcher's arguments that run a command with `syscalls` refused with `errno` (`"EPERM"`,
/// `"ENOSYS"`): the launcher first, the command and its arguments to follow. For a shell script
/// or another wrapper's command line.
pub fn deny_args(syscalls: &[&str], errno: &str) -> Vec<OsString> {
    assert!(!syscalls.is_empty(), "no system call to deny");
    vec![
        seccomp_deny().into(),
        "--errno".into(),
        errno.into(),
        syscalls.join(",").into(),
        "--".into(),
    ]
}

/// A command that runs what is added to it (`.arg(program).args(...)`) with `syscalls` failing
/// with EPERM; it and everything it starts.
pub fn deny_syscalls(syscalls: &[&str]) -> Command {
    deny_syscalls_with(syscalls, "EPERM")
}

/// As [`deny_syscalls`], the calls failing with `errno` (`"EPERM"`, `"ENOSYS"`, a number).
pub fn deny_syscalls_with(syscalls: &[&str], errno: &str) -> Command {
    let args = deny_args(syscalls, errno);
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    cmd
}

/// Operations `stallfs` can hold. `getattr` is also every lookup of a name (path resolution);
/// `flush` is every close(2). With libfuse before 3.17 the kernel looks up and lists one at a time
/// per directory: a held `getattr` or `readdir` also holds the other lookups (of names not in the
/// kernel's cache) and listings of the same directory. The others hold only themselves.
pub const STALL_OPS: &[&str] = &[
    "getattr", "readlink", "opendir", "readdir", "open", "read", "flush", "release", "statfs",
];

/// Waits at most `limit` for `child` to end (it is reaped then); whether it did. Not a poll: the
/// wait is on the kernel's notice of the exit (a pidfd turns readable), and it does not panic, so
/// that a drop can bound its wait with it and a test kill what does not end.
pub fn exited_within(child: &mut Child, limit: Duration) -> bool {
    fn ended(child: &mut Child) -> bool {
        !matches!(child.try_wait(), Ok(None))
    }
    if ended(child) {
        return true;
    }
    // SAFETY: pidfd_open takes a pid and flags and touches no memory of ours; the child is not
    // reaped (try_wait above), so its pid is still its own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return ended(child);
    };
    if fd < 0 {
        return ended(child);
    }
    // SAFETY: a descriptor just opened, owned here alone.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, ours, for the length of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        // Only a signal's interruption is waited through again.
        if rc >= 0 || std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            break;
        }
    }
    ended(child)
}

/// A backing directory served read-only through FUSE at a mount point, with every access
/// reaching the server (no kernel caching), whose operations can be held.
///
/// Dropping it releases what is held, unmounts and ends the server, within bounded waits: a
/// reader that was held completes normally. Declare it after the `TempDir` that holds its mount
/// point, so that it is dropped first. If the test process is killed instead, the server sees
/// its parent end, unmounts and exits, which frees the threads stuck in the mount.
pub struct StallFs {
    child: Child,
    mountpoint: PathBuf,
    /// The FUSE connection's number (the mount's device minor), for an abort through fusectl.
    conn: u32,
    control: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl StallFs {
    /// Serves `backing` at `mountpoint` (created if missing); returns once the mount is up.
    pub fn mount(backing: &Path, mountpoint: &Path) -> StallFs {
        assert!(
            Path::new("/dev/fuse").exists(),
            "no /dev/fuse: this kernel has no FUSE (modprobe fuse)"
        );
        let exe = build("stallfs");
        std::fs::create_dir_all(mountpoint).expect("create the mount point");
        let mountpoint = mountpoint.canonicalize().expect("mount point");
        let control = tempdir();
        let mut child = Command::new(exe)
            .arg(backing)
            .arg(control.path())
            .arg(&mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stallfs");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let reading = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut fs = StallFs {
            child,
            mountpoint,
            conn: 0,
            control,
            log,
        };
        // A server that neither mounts nor exits in time is ended by the drop.
        let (conn, exited) = eventually(
            &format!("stallfs to mount {}", fs.mountpoint.display()),
            || {
                (
                    fuse_mount_of(&fs.mountpoint),
                    fs.child.try_wait().ok().flatten(),
                )
            },
            |(conn, exited)| conn.is_some() || exited.is_some(),
        );
        match (conn, exited) {
            (Some(conn), _) => fs.conn = conn,
            (None, status) => {
                // Everything it said, to its end: the drop prints it.
                let _ = reading.join();
                panic!(
                    "stallfs exited ({status:?}) before mounting {}",
                    fs.mountpoint.display()
                );
            }
        }
        fs
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What the server wrote to stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// From now on, holds every operation in `ops` (see [`STALL_OPS`]) whose path in the mount
    /// contains `name_contains` (all of them when `None`); replaces the previous setting. The
    /// path is the one the server is asked for: for `open` and `read` the file's real path once
    /// the kernel has followed the symbolic links (`/..2026_.../token`, not `/token`).
    pub fn stall(&self, ops: &[&str], name_contains: Option<&str>) {
        for op in ops {
            assert!(STALL_OPS.contains(op), "stallfs cannot hold {op:?}");
        }
        let text = format!(
            "ops={}\nmatch={}\n",
            ops.join(","),
            name_contains.unwrap_or("")
        );
        // Renamed into place: the server never reads a half-written control.
        let tmp = self.control.path().join(".stall.tmp");
        std::fs::write(&tmp, text).expect("write the stall control");
        std::fs::rename(&tmp, self.control.path().join("stall")).expect("set the stall control");
    }

    /// Lets every held operation complete and holds nothing more.
    pub fn release(&self) {
        match std::fs::remove_file(self.control.path().join("stall")) {
            Err(e) if e.kind() != ErrorKind::NotFound => panic!("release stallfs: {e}"),
            _ => {}
        }
    }

    /// The operations held now, as (operation, path in the mount).
    pub fn stalled(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.control.path().join("stalled"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(op, path)| (op.to_string(), path.to_string()))
            .collect()
    }

    /// Waits until the server holds an `op` whose path contains `name_contains`; returns that
    /// path. The way to know a reader is stuck, rather than sleeping.
    pub fn wait_stalled(&self, op: &str, name_contains: &str) -> String {
        let held = eventually(
            &format!("stallfs to hold a {op} of *{name_contains}*"),
            || self.stalled(),
            |s| s.iter().any(|(o, p)| o == op && p.contains(name_contains)),
        );
        held.into_iter()
            .find(|(o, p)| o == op && p.contains(name_contains))
            .unwrap()
            .1
    }

    /// Kills the server without unmounting, as when a FUSE driver crashes: what it held fails
    /// (ECONNABORTED), every later access of the mount fails with ENOTCONN, and the mount stays
    /// until the drop.
    pub fn kill_server(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits at most `limit` for the server to end; whether it did.
    fn reaped(&mut self, limit: Duration) -> bool {
        exited_within(&mut self.child, limit)
    }
}

impl Drop for StallFs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- stallfs log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(self.control.path().join("stall"));
        // Detached first, so that nothing new enters the mount while the server ends; a
        // process still inside keeps its reference until the connection ends below.
        let c_path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2 reads a NUL-terminated path and touches no memory of ours.
        let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 && fuse_mount_of(&self.mountpoint).is_some() {
            eprintln!(
                "stallfs: umount {}: {}",
                self.mountpoint.display(),
                std::io::Error::last_os_error()
            );
        }
        if self.reaped(Duration::ZERO) {
            return;
        }
        // SIGTERM lets the server finish what it answers; SIGKILL closes /dev/fuse, which
        // aborts the connection: whatever is still waiting on it fails instead of hanging.
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        if self.reaped(Duration::from_secs(2)) {
            return;
        }
        let _ = self.child.kill();
        if self.reaped(Duration::from_secs(5)) {
            return;
        }
        // A server that does not die of SIGKILL is itself stuck in the kernel (in its own
        // mount): only an abort through the FUSE control file system frees it.
        let abort = format!("/sys/fs/fuse/connections/{}/abort", self.conn);
        let _ = std::fs::write(&abort, "1");
        if !self.reaped(Duration::from_secs(5)) {
            eprintln!(
                "stallfs: server {} did not end (connection {}; is fusectl mounted?)\n{}",
                self.pid(),
                self.conn,
                self.log()
            );
        }
    }
}

/// The connection number of the stallfs mount at `mountpoint`, if one is mounted there.
pub fn fuse_mount_of(mountpoint: &Path) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        // id parent major:minor root mountpoint options... - fstype source superoptions
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let here = unescape(fields.get(4)?) == mountpoint.as_os_str().as_bytes();
        if !here || fields.get(dash + 1) != Some(&"fuse.stallfs") {
            return None;
        }
        fields.get(2)?.split_once(':')?.1.parse().ok()
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let s = std::str::from_utf8(&b[i + 1..i + 4]).unwrap();
            out.push(u8::from_str_radix(s, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A task's scheduler state (`R`, `S`, `D`, `Z`, ...): `/proc/<pid>/task/<tid>/stat`'s third
/// field, `None` once it is gone. A reader held by [`StallFs`] sleeps in `S`, and in `D` once a
/// fatal signal came: it cannot die until the request ends.
pub fn task_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Where a task sleeps in the kernel (`/proc/<pid>/task/<tid>/wchan`), e.g.
/// `request_wait_answer` for a FUSE request.
pub fn task_wchan(pid: i32, tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default()
}
