//! The floor: the least any watcher can do between kubelet's `..data` swap and the action, in a
//! process of its own so that, like the daemon, it crosses a process boundary to act. This very
//! bench binary, re-executed in a hidden mode:
//!
//! - `--floor-signal DIR PID`: at the rename onto `DIR/..data`, `kill(PID, SIGHUP)`;
//! - `--floor-http DIR ADDR PATH`: at the rename, connect to ADDR, send
//!   `POST PATH HTTP/1.1` with an empty body and read the response.
//!
//! One `inotify_init`, one watch on DIR for `IN_MOVED_TO` only, one blocking `read`. No scan, no
//! fingerprint, no checks: what is left is the kernel's event delivery, one process wakeup, and
//! the action itself.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

enum Action {
    Signal(libc::pid_t),
    Http(SocketAddr, String),
}

/// If the arguments ask for a hidden floor mode, runs it (it never returns); otherwise returns.
/// Looked up anywhere in the arguments, as `cargo bench` puts its own before them.
pub fn hidden_mode(args: &[String]) {
    let after = |flag: &str, n: usize| {
        args.iter().position(|a| a == flag).map(|i| {
            args.get(i + 1..i + 1 + n)
                .expect("floor mode arguments")
                .to_vec()
        })
    };
    if let Some(a) = after("--floor-signal", 2) {
        run(&a[0], Action::Signal(a[1].parse().expect("pid")));
    }
    if let Some(a) = after("--floor-http", 3) {
        run(
            &a[0],
            Action::Http(a[1].parse().expect("address"), a[2].clone()),
        );
    }
}

fn run(dir: &str, action: Action) -> ! {
    // SAFETY: plain system calls on a descriptor this process owns.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1 failed");
    let path = CString::new(Path::new(dir).as_os_str().as_bytes()).unwrap();
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MOVED_TO) };
    assert!(wd >= 0, "inotify_add_watch {dir} failed");
    let request = match &action {
        Action::Http(_, p) => format!("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        Action::Signal(_) => String::new(),
    };
    // Tell the bench the watch is in place.
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            std::process::exit(1);
        }
        if !names_data(&buf[..n as usize]) {
            continue;
        }
        match &action {
            Action::Signal(pid) => unsafe {
                libc::kill(*pid, libc::SIGHUP);
            },
            Action::Http(addr, _) => {
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.set_nodelay(true);
                    let _ = s.write_all(request.as_bytes());
                    let mut got = Vec::new();
                    let mut sink = [0u8; 256];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut sink) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got.extend_from_slice(&sink[..k]),
                        }
                    }
                }
            }
        }
    }
}

/// Whether a buffer of inotify events names `..data`.
fn names_data(mut b: &[u8]) -> bool {
    const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
    while b.len() >= HEAD {
        let len = u32::from_ne_bytes(b[12..16].try_into().unwrap()) as usize;
        let name = &b[HEAD..(HEAD + len).min(b.len())];
        let name = name.split(|&c| c == 0).next().unwrap_or(&[]);
        if name == b"..data" {
            return true;
        }
        b = &b[(HEAD + len).min(b.len())..];
    }
    false
}

/// A floor process, ended when dropped.
pub struct Floor {
    child: Child,
}

impl Floor {
    /// A floor that sends SIGHUP to `pid` at every swap in `dir`.
    pub fn signal(dir: &Path, pid: u32) -> Floor {
        Floor::spawn(&[
            "--floor-signal".into(),
            dir.display().to_string(),
            pid.to_string(),
        ])
    }

    /// A floor that makes one HTTP request to `addr` `path` at every swap in `dir`.
    pub fn http(dir: &Path, addr: SocketAddr, path: &str) -> Floor {
        Floor::spawn(&[
            "--floor-http".into(),
            dir.display().to_string(),
            addr.to_string(),
            path.into(),
        ])
    }

    fn spawn(args: &[String]) -> Floor {
        let exe = std::env::current_exe().expect("the bench binary");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the floor");
        // One line once its watch is in place; it writes nothing after.
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        assert_eq!(line.trim(), "ready", "floor {args:?} did not start");
        Floor { child }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
