//! Processes the tests start and look at: a command run to its end within a limit (the doctor
//! among them), a started process killed on drop, the demo app started through a name of the
//! test's own, and what `/proc` says of a process.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::native::{exited_within, task_state};
use super::{App, AppState, bin, eventually, unique};

/// What a finished process said.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `cmd` to its end; panics when it runs past `limit` (it is killed then).
pub fn run_to_end(mut cmd: Command, limit: Duration) -> Exit {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start");
    // Drain the pipes while waiting: a full pipe must not look like a hang.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    if !exited_within(&mut child, limit) {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
        panic!("{cmd:?} did not end within {limit:?}; stderr:\n{stderr}");
    }
    let took = started.elapsed();
    let status = child.wait().expect("the status of a reaped child");
    Exit {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
        took,
    }
}

/// The binary with `args` (any bytes), run to its end within 10 s.
pub fn run_bin(args: &[&OsStr]) -> Exit {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    run_to_end(cmd, Duration::from_secs(10))
}

/// The injector (`secret-reloader-inject`) with `args`, run to its end within 10 s.
pub fn run_inject_bin(args: &[&OsStr]) -> Exit {
    let mut cmd = Command::new(super::inject_bin());
    cmd.args(args);
    run_to_end(cmd, Duration::from_secs(10))
}

/// `args` as `OsStr`s.
pub fn os<'a>(args: &'a [&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(OsStr::new).collect()
}

/// OsString from bytes.
pub fn os_bytes(b: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(b).to_os_string()
}

/// `secret-reloader doctor` with `args`, in text and in JSON: (exit code, text, JSON). See
/// [`doctor_through`].
pub fn doctor<A: AsRef<OsStr>>(args: &[A]) -> (i32, String, Value) {
    doctor_through::<&str, A>(&[], args)
}

/// `secret-reloader doctor` with `args`, started through `wrapper` (a command line that runs the
/// binary given as its last argument: `setpriv ...`, `unshare ... sh -c '...; exec "$0" "$@"'`,
/// `nsenter ... --`; none for the binary itself), run twice to its end: in text and with
/// `--output json`. Returns (exit code, text with what went to stderr after it, JSON). Neither run
/// may panic, and both must agree on the exit code.
pub fn doctor_through<W: AsRef<OsStr>, A: AsRef<OsStr>>(
    wrapper: &[W],
    args: &[A],
) -> (i32, String, Value) {
    let run = |extra: &[&str]| {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.arg("doctor").args(args).args(extra);
        let e = run_to_end(cmd, Duration::from_secs(30));
        assert!(
            !e.stderr.contains("panicked"),
            "doctor panicked: {}",
            e.stderr
        );
        e
    };
    let text = run(&[]);
    let json = run(&["--output", "json"]);
    assert_eq!(text.code, json.code, "text and JSON runs disagree");
    let v: Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON does not parse ({e}): {}", json.stdout));
    (text.code, text.stdout + &text.stderr, v)
}

/// A process started by the test, killed and reaped on drop (also when the test fails).
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A symlink to the binary named `app<random>` in `<dir>/bin`: processes started through it share
/// that name (comm and argv[0]) and no other test's.
pub fn named_exe(dir: &Path) -> (String, PathBuf) {
    let name = format!("app{}", unique());
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin_dir.join(&name);
    std::os::unix::fs::symlink(bin(), &exe).unwrap();
    (name, exe)
}

/// `<dir>/run`, a directory every uid may write its state into.
pub fn run_dir(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
    run
}

/// Starts the demo app through `exe` as `uid:gid` (through `setpriv`, like a container with
/// another runAsUser; `None`: the test's own user), reporting into `state`.
pub fn demo_app_as(exe: &Path, credential: &Path, state: &Path, user: Option<(u32, u32)>) -> Proc {
    let mut cmd = match user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &gid.to_string(),
                "--clear-groups",
            ])
            .arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg("demo-app")
        .arg("--credential")
        .arg(credential)
        .arg("--state-file")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Proc(cmd.spawn().expect("start the demo app"))
}

/// Waits until the demo app of pid `pid` reports into `state` (handler installed, credential
/// loaded); what it reports.
pub fn wait_up(state: &Path, pid: i32) -> AppState {
    eventually(
        &format!("pid {pid} to report into {}", state.display()),
        || App::state_of(state),
        |s| s.as_ref().is_some_and(|s| s.pid == pid),
    )
    .unwrap()
}

/// Whether the process `pid` still runs (not a zombie).
pub fn running(pid: i32) -> bool {
    task_state(pid, pid).is_some_and(|c| c != 'Z' && c != 'X')
}

/// The threads of the process `pid` with their state letters (none once it is reaped).
pub fn threads(pid: i32) -> Vec<(i32, char)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: i32 = t.file_name().to_str()?.parse().ok()?;
            Some((tid, task_state(pid, tid)?))
        })
        .collect()
}

/// The resident memory of the process `pid`, from `/proc/<pid>/status`, in KiB.
pub fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Runs `f` on a thread that entered the network namespace of process `pid` (only that thread
/// moves; the namespace goes with the thread).
pub fn in_netns_of<T: Send + 'static>(pid: i32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open the netns");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("the thread in the namespace")
}
