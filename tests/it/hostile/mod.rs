//! The hostile suite: regressions of bugs found from outside (each test named after what must
//! hold), and standing abuse of every input the daemon takes from others: paths and values that
//! are not UTF-8 or carry control characters, FIFOs and devices where files are expected, URLs and
//! headers that carry credentials, processes that pose as the app, the admin port held open by
//! slow clients, clients outside the pod (a network namespace of the test's own).
//!
//! Everything goes through the built binary. Negative assertions wait on the daemon's barrier
//! (`Daemon::passed`), never on a fixed sleep.

mod actions;
mod admin;
mod command_output;
mod confinement;
mod doctor;
mod impostors;
mod limits;
mod paths;
mod seccomp;
mod signals;
mod special_files;
mod stalls;
mod starved;
mod state_file;
mod stray_signals;
mod usage;
mod watching;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, bin, tempdir};

/// A temp dir that other uids may traverse (processes run through `setpriv`).
pub fn open_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub use crate::support::let_content_age;

/// Starts the daemon with arguments that need not be UTF-8 (plus `--listen 127.0.0.1:0`).
pub fn daemon_os(args: &[&OsStr]) -> Daemon {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Daemon::spawn(cmd)
}

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
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
            panic!("{cmd:?} did not end within {limit:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
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

/// `args` as `OsStr`s.
pub fn os<'a>(args: &'a [&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(OsStr::new).collect()
}

/// `secret-reloader doctor` with `args`, in text and in JSON: (exit code, text, JSON). Neither run
/// may panic, and both must agree on the exit code.
pub fn doctor(args: &[&OsStr]) -> (i32, String, Value) {
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(bin());
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

/// One GET with extra header lines; (status, raw head, body). `Connection: close` is sent.
pub fn get_with(addr: SocketAddr, path: &str, extra: &[&str]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, resp))
}

/// The body of an HTTP response text.
pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The daemon's resident memory, from `/proc/<pid>/status`, in KiB.
pub fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Whether the process `pid` still runs (not a zombie).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(|c| c != 'Z' && c != 'X'))
        })
        .unwrap_or(false)
}

/// SIGTERM, then the exit within `limit`: the daemon never hangs on what it was given.
pub fn terminates_within(d: &mut Daemon, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    let status = d.terminate();
    let took = started.elapsed();
    assert!(
        took < limit,
        "SIGTERM took {took:?} (limit {limit:?}); log:\n{}",
        d.log()
    );
    status
}

/// A process started by the test under a name of its own, killed on drop.
pub struct Proc(pub std::process::Child);

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
    let name = format!("app{}", crate::support::unique());
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin_dir.join(&name);
    std::os::unix::fs::symlink(bin(), &exe).unwrap();
    (name, exe)
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

/// Waits until the demo app `p` reports into `state` (handler installed, credential loaded).
pub fn wait_up(state: &Path, p: &Proc) {
    let pid = p.pid();
    crate::support::eventually(
        &format!("pid {pid} to report"),
        || crate::support::App::state_of(state),
        |s| s.as_ref().is_some_and(|s| s.pid == pid),
    );
}

/// A directory every uid may write its state into.
pub fn run_dir(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
    run
}

/// How a [`RawEndpoint`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMode {
    /// `200 OK` with the body, then close.
    Answer,
    /// Read the request head, never answer, keep the connection open.
    Hang,
}

struct RawInner {
    mode: Mutex<RawMode>,
    heads: Mutex<Vec<String>>,
    held: Mutex<Vec<TcpStream>>,
    body: String,
    stop: AtomicBool,
}

/// An HTTP endpoint on 127.0.0.1 written on raw TCP: it records every request head exactly as it
/// arrived (request line with its query, every header line, duplicates included).
pub struct RawEndpoint {
    pub addr: SocketAddr,
    inner: Arc<RawInner>,
}

impl RawEndpoint {
    /// An endpoint answering `200` with `body`.
    pub fn start(body: &str) -> RawEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(RawInner {
            mode: Mutex::new(RawMode::Answer),
            heads: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            body: body.to_string(),
            stop: AtomicBool::new(false),
        });
        let shared = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve_raw(&shared, stream));
            }
        });
        RawEndpoint { addr, inner }
    }

    /// `http://127.0.0.1:<port><path_and_query>`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn set(&self, mode: RawMode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// Request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.inner.heads.lock().unwrap().clone()
    }

    /// Request heads whose request line starts with `method`.
    pub fn requests(&self, method: &str) -> Vec<String> {
        self.heads()
            .into_iter()
            .filter(|h| h.starts_with(&format!("{method} ")))
            .collect()
    }
}

impl Drop for RawEndpoint {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.held.lock().unwrap().clear();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_raw(inner: &RawInner, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
            if head.len() > 64 * 1024 {
                return;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        inner.heads.lock().unwrap().push(head);
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        match *inner.mode.lock().unwrap() {
            RawMode::Answer => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{}",
                    inner.body.len(),
                    inner.body
                );
                let _ = stream.write_all(resp.as_bytes());
                return;
            }
            RawMode::Hang => {
                if let Ok(s) = stream.try_clone() {
                    inner.held.lock().unwrap().push(s);
                }
                // Read on (nothing more should come) until the client or the endpoint closes.
            }
        }
    }
}

/// The header lines of a raw request head named `name` (case-insensitive), values trimmed.
pub fn header_lines(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
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

/// `s` with every byte below 0x20 (but tab and newline) and DEL reported: text leaving the daemon
/// must hold none (an escape sequence on a terminal, a forged log line).
pub fn raw_controls(s: &str) -> Vec<(usize, char)> {
    s.char_indices()
        .filter(|(_, c)| c.is_control() && *c != '\n' && *c != '\t' && *c != '\r')
        .collect()
}

/// Lines of `text` that start with `prefix` (after nothing: a forged line starts there).
pub fn lines_starting_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// OsString from bytes.
pub fn os_bytes(b: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(b).to_os_string()
}

/// Every string in `v` (keys included) that carries a control character once decoded: text
/// leaving the daemon as JSON must be escaped before it is encoded (a JSON `\u001b` is still an
/// escape sequence for whoever prints the value).
pub fn json_controls(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.chars().any(char::is_control) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                for (k, x) in o {
                    if k.chars().any(char::is_control) {
                        out.push(k.clone());
                    }
                    walk(x, out);
                }
            }
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}
