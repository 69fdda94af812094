//! Test support: real processes, real HTTP servers, real directories, each test with its own.
//! One module for both test binaries: `tests/it` declares it, `tests/system` includes this file.
//!
//! - [`Daemon`]: the built binary on `127.0.0.1:<ephemeral>`, killed on drop.
//! - [`App`]: the demonstration app under a unique process name, killed on drop.
//! - [`sink::Sink`]: a real HTTP endpoint on 127.0.0.1 that counts calls; [`raw::RawEndpoint`]
//!   one on raw TCP that keeps every request head as it came.
//! - [`held::Upstream`]: a connection held open through a proxy, and which process holds it;
//!   [`prefork::Prefork`]: a pre-forking app that replaces its workers one by one.
//! - [`process`]: commands run to their end within a limit (the doctor among them), processes
//!   killed on drop, what `/proc` says of a process.
//! - [`eventually`]: poll a condition with a generous deadline; never a fixed sleep as assertion.
//!   Every wait of the tests goes through it ([`eventually_within`] when the deadline must be
//!   longer), but a child's exit, which [`native::exited_within`] waits for.

// Each test binary uses part of this module (`tests/system` little of it): what one of them
// does not use is not dead code.
#![allow(dead_code)]

pub mod held;
pub mod native;
pub mod prefork;
pub mod process;
pub mod prometheus;
pub mod raw;
pub mod sink;
pub mod tls;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Re-exported for the tests; the dead_code allowance above does not cover a re-export that one
// binary (`tests/system`) leaves unused.
#[allow(unused_imports)]
pub use secret_reloader::demo::atomic_writer::{AtomicWriter, SymlinkOrder};

/// Generous deadline for anything the daemon should do "at once" (the machine is shared).
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_secret-reloader")
}

/// The built injector (`secret-reloader-inject`, with its `webhook`).
pub fn inject_bin() -> &'static str {
    env!("CARGO_BIN_EXE_secret-reloader-inject")
}

/// A fresh temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sr-it-")
        .tempdir()
        .expect("temp dir")
}

/// A fresh temporary directory that other uids may traverse (processes run through `setpriv`).
pub fn open_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// A kubelet-style volume `<dir>/vol` holding version 1 of a `token`: its writer and its path.
pub fn volume(dir: &Path) -> (AtomicWriter, PathBuf) {
    let vol = dir.join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    (w, vol)
}

/// A port nobody listens on now, on any interface (a listener given `:PORT` binds them all).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A short random hex string for unique names.
pub fn unique() -> String {
    format!("{:06x}", getrandom::u32().unwrap() & 0xff_ffff)
}

/// Polls `cond` every 10 ms until it holds or `DEADLINE` passes; panics with `what` and the last
/// value seen.
pub fn eventually<T: std::fmt::Debug>(
    what: &str,
    probe: impl FnMut() -> T,
    cond: impl Fn(&T) -> bool,
) -> T {
    eventually_within(what, DEADLINE, probe, cond)
}

/// [`eventually`] with a deadline of `limit`, for what takes longer than anything the daemon does
/// (a Prometheus server starting on a loaded machine).
pub fn eventually_within<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> T,
    cond: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let v = probe();
        if cond(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last seen: {v:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the daemon's `/status` stamps its scans on the same
/// clock, so a test can tell whether a scan started after something it did.
pub fn now_ns() -> u64 {
    secret_reloader::monotonic_ns()
}

/// A plain HTTP/1.0 GET; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One GET with extra header lines; (status, raw response). `Connection: close` is sent.
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

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text format (enough for the daemon's own output).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n.to_string(), rest.trim_end_matches('}')),
            None => (series.to_string(), ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label pair");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.push(Sample {
            name,
            labels: map,
            value: value.parse().expect("sample value"),
        });
    }
    out
}

/// The value of the sample `name` whose labels include `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The daemon binary, running; killed on drop.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon with `args` (plus `--listen 127.0.0.1:0`) and waits for its address.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with(args, &[])
    }

    /// Starts the daemon with exactly `args` (a command line that names its own listen address,
    /// as other tools' command lines do) and waits for its address.
    pub fn start_exact(args: &[&str]) -> Daemon {
        Daemon::spawn(Daemon::command(args))
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Daemon::command(args);
        cmd.args(["--listen", "127.0.0.1:0"])
            .envs(env.iter().copied());
        Daemon::spawn(cmd)
    }

    /// As [`Daemon::start`], with arguments that need not be UTF-8.
    pub fn start_os(args: &[&OsStr]) -> Daemon {
        let mut cmd = Daemon::command(args);
        cmd.args(["--listen", "127.0.0.1:0"]);
        Daemon::spawn(cmd)
    }

    /// The binary with `args`, its stderr piped for [`Daemon::spawn`].
    fn command<S: AsRef<OsStr>>(args: &[S]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Spawns a prepared command whose stderr is piped, and waits for the listening address.
    /// It leads a process group of its own: dropping the daemon kills the group, so a daemon
    /// started through `unshare` and `setpriv` (which clears the parent-death signal that
    /// `--kill-child` sets) ends with its wrapper.
    pub fn spawn(mut cmd: Command) -> Daemon {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut child = cmd.spawn().expect("start the daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Text logs say `addr=127.0.0.1:1234`, JSON logs `"addr":"127.0.0.1:1234"`.
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
                } else if let Some(addr) = line.split("\"addr\":\"").nth(1) {
                    let _ = tx.send(addr.split('"').next().unwrap_or("").to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not start listening; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Daemon { child, addr, log }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The pid of the daemon process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").expect("GET /metrics").1
    }

    /// The value of one metric sample, if exported.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&self.metrics(), &format!("secret_reloader_{name}"), labels)
    }

    /// Successful reloads, as the daemon counts them; for a signal target, the signals it sent:
    /// exact once it has settled, while the app may still be handling the last one when its own
    /// count is read.
    pub fn signals_sent(&self) -> f64 {
        self.metric("reloads_total", &[("result", "success")])
            .unwrap_or(0.0)
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.addr, "/status").expect("GET /status");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("status JSON")
    }

    /// The barrier of negative assertions ("no reload came"): waits until the daemon has
    /// provably passed the point where it would have acted on everything done before `since`
    /// (a [`now_ns`] taken after the test's last change): every target has fully acted on a
    /// scan that started after `since` (`settled_scan_monotonic_ns`), so nothing more will
    /// come of that change. A change that causes no event is caught by a resync: give such
    /// daemons a short `--resync-interval`.
    pub fn passed(&self, since: u64) -> serde_json::Value {
        eventually(
            "every target to act on a scan after the change",
            || self.status(),
            |s| {
                s["targets"].as_array().is_some_and(|ts| {
                    !ts.is_empty()
                        && ts.iter().all(|t| {
                            t["settled_scan_monotonic_ns"]
                                .as_u64()
                                .is_some_and(|n| n > since)
                        })
                })
            },
        )
    }

    /// Waits until the first target's last error holds `text`; that message.
    pub fn error_containing(&self, text: &str) -> String {
        let status = eventually(
            &format!("an error saying '{text}'"),
            || self.status(),
            |s| {
                s["targets"][0]["last_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            },
        );
        status["targets"][0]["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        eventually(
            "/readyz to answer 200",
            || http_get(self.addr, "/readyz").map(|r| r.0).unwrap_or(0),
            |c| *c == 200,
        );
    }

    /// Sends SIGTERM and waits (with the deadline) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(nix::sys::signal::SIGTERM)
    }

    /// Sends `sig` and waits (with the deadline) for the exit status.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
        self.exited(&format!("{sig}"))
    }

    /// Waits (with the deadline) for the exit status of a daemon told to end `how`.
    pub fn exited(&mut self, how: &str) -> ExitStatus {
        assert!(
            native::exited_within(&mut self.child, DEADLINE),
            "daemon did not exit after {how}; log:\n{}",
            self.log()
        );
        self.child
            .try_wait()
            .expect("wait")
            .expect("the status of a reaped child")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL);
        let _ = self.child.kill();
        // Bounded: a daemon with a thread held in a stalled filesystem is not reaped until that
        // filesystem answers (a test's StallFs, dropped after it, releases it).
        native::exited_within(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// What the demonstration app reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppState {
    pub pid: i32,
    pub reloads: u64,
    pub version: String,
}

/// The demonstration app under a unique process name (so a daemon told `--process-name` finds
/// this test's app and no other); killed on drop, its workers with it.
pub struct App {
    proc: Option<process::Proc>,
    pub name: String,
    pub state_file: PathBuf,
    exe: PathBuf,
    args: Vec<String>,
    /// `setpriv` options to run as another user; empty for the test's own user.
    setpriv: Vec<String>,
}

impl App {
    /// Starts `<dir>/bin/<name> demo-app --credential <credential> <extra>`.
    pub fn start(dir: &Path, credential: &Path, extra: &[&str]) -> App {
        App::start_as(dir, credential, extra, None)
    }

    /// As [`App::start`], running as `user` (uid, gid, supplementary groups) through `setpriv`,
    /// like a container with another runAsUser. `dir` must be searchable by that user; the app
    /// writes its state into `<dir>/run`, which is made writable for it.
    pub fn start_as(
        dir: &Path,
        credential: &Path,
        extra: &[&str],
        user: Option<(u32, u32, &[u32])>,
    ) -> App {
        let (name, exe) = process::named_exe(dir);
        let state_file = process::run_dir(dir).join(format!("{name}.state"));
        let mut args = vec![
            "demo-app".to_string(),
            "--credential".into(),
            credential.display().to_string(),
        ];
        args.extend(["--state-file".to_string(), state_file.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut prefix = Vec::new();
        if let Some((uid, gid, groups)) = user {
            prefix = vec![
                "--reuid".to_string(),
                uid.to_string(),
                "--regid".into(),
                gid.to_string(),
            ];
            if groups.is_empty() {
                prefix.push("--clear-groups".into());
            } else {
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                prefix.extend(["--groups".to_string(), list.join(",")]);
            }
        }
        let mut app = App {
            proc: None,
            name,
            state_file,
            exe,
            args,
            setpriv: prefix,
        };
        app.spawn();
        app
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.state_file);
        let mut cmd = if self.setpriv.is_empty() {
            Command::new(&self.exe)
        } else {
            let mut c = Command::new("setpriv");
            c.args(&self.setpriv).arg(&self.exe);
            c
        };
        let child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start app");
        self.proc = Some(process::Proc(child));
    }

    /// The pid of the (master) process.
    pub fn pid(&self) -> i32 {
        self.proc.as_ref().expect("running").pid()
    }

    /// The state file of the master, or of worker `i`.
    pub fn state_of(path: &Path) -> Option<AppState> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut st = AppState::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => st.pid = v.parse().ok()?,
                Some(("reloads", v)) => st.reloads = v.parse().ok()?,
                Some(("version", v)) => st.version = v.to_string(),
                _ => {}
            }
        }
        Some(st)
    }

    /// What the app reports now.
    pub fn state(&self) -> Option<AppState> {
        App::state_of(&self.state_file)
    }

    /// Waits until the app reports it is up (handler installed, credential loaded).
    pub fn wait_up(&self) -> AppState {
        process::wait_up(&self.state_file, self.pid())
    }

    /// Reloads so far (0 when not up).
    pub fn reloads(&self) -> u64 {
        self.state().map_or(0, |s| s.reloads)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.proc.as_mut().map(|p| p.0.try_wait()), Some(Ok(None)))
    }

    /// Kills the app and starts it again (a new pid).
    pub fn restart(&mut self) {
        self.proc = None;
        self.spawn();
    }
}

/// The most common setup: a kubelet-style volume `<tmp>/vol` holding version 1 of a `token`, and a
/// reload endpoint that loads the token's version at every call.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub vol: PathBuf,
    pub writer: AtomicWriter,
    pub sink: sink::Sink,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempdir();
        let vol = dir.path().join("vol");
        let writer = AtomicWriter::new(&vol);
        writer.write(&[("token", credential("1"))]).unwrap();
        let sink = sink::Sink::start_with_probe(Some(vol.join("token")));
        Fixture {
            dir,
            vol,
            writer,
            sink,
        }
    }

    /// The volume as a flag value.
    pub fn vol(&self) -> &str {
        self.vol.to_str().unwrap()
    }

    /// The reload endpoint's URL.
    pub fn url(&self) -> String {
        self.sink.url("/-/reload")
    }

    /// Writes `version` of the token, as kubelet would.
    pub fn rotate(&self, version: &str) {
        self.writer
            .write(&[("token", credential(version))])
            .unwrap();
    }
}

/// A ready daemon watching `watch` that calls `sink` at every change, with storm protection off
/// so that every change is its own action; `extra` flags after those.
pub fn daemon_for(watch: &[&Path], sink: &sink::Sink, extra: &[&str]) -> Daemon {
    let url = sink.url("/-/reload");
    let mut args: Vec<&str> = Vec::new();
    for w in watch {
        args.extend(["--watch", w.to_str().unwrap()]);
    }
    args.extend(["--reload-url", &url, "--min-reload-interval", "0"]);
    args.extend(extra);
    let d = Daemon::start(&args);
    d.wait_ready();
    d
}

/// The daemon (with `args` and `--listen 127.0.0.1:0`) as PID 1 of a new PID namespace, after
/// `app` (a shell command, started there in the background first): as in a pod with
/// `shareProcessNamespace: true`, a process selector sees that app only, and when the daemon
/// ends the kernel ends the app too.
pub fn daemon_beside(app: &str, args: &[&str]) -> Daemon {
    daemon_beside_as(app, None, args)
}

/// As [`daemon_beside`], the daemon running as `uid` (and its gid) without capabilities when
/// given.
pub fn daemon_beside_as(app: &str, uid: Option<u32>, args: &[&str]) -> Daemon {
    let drop = uid
        .map(|u| format!("setpriv --reuid {u} --regid {u} --clear-groups --inh-caps=-all "))
        .unwrap_or_default();
    let script = format!("{app} & exec {drop}\"$0\" \"$@\"");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "sh",
        "-c",
    ])
    .arg(&script)
    .arg(bin())
    .args(args)
    .args(["--listen", "127.0.0.1:0"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    Daemon::spawn(cmd)
}

/// Content older than any process started after this returns. Process start times count in
/// 10 ms clock ticks: the order of a file's ctime and a process's start needs real time between
/// them (this is the test's input, not a wait for the daemon).
pub fn let_content_age() {
    std::thread::sleep(Duration::from_millis(100));
}

/// Version file content the demo app understands: first line names the version.
pub fn credential(version: &str) -> String {
    format!("version={version}\nsecret=s3cr3t-{version}-value\n")
}
