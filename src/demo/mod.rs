//! `secret-reloader demo`: the real thing on a fresh machine, in one command.
//!
//! A temporary kubelet-style volume, the demonstration app holding a credential from it, and the
//! daemon (the same code as in production, configured as a sidecar would be) watching the volume
//! and signalling the app. Every few seconds the credential is rotated exactly as kubelet does it;
//! each rotation is printed with the measured time from the `..data` swap to the app holding the
//! new version. Metrics and status are served on the listen address; Ctrl-C ends it cleanly.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod app;
pub mod atomic_writer;
pub mod kubelet_write;

use crate::action::signal::send::START_MARGIN;
use crate::config::{Config, LogFormat, LogLevel};
use crate::monotonic_ns;
use atomic_writer::AtomicWriter;

/// Removes the demo's directory and stops its app, however the demo ends.
struct Cleanup {
    dir: PathBuf,
    app: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(app) = &mut self.app {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(app.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = app.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the demonstration does.
#[derive(Debug, Clone)]
pub struct Demo {
    /// Time between rotations.
    pub interval: Duration,
    /// Rotations before it ends (`None`: until Ctrl-C).
    pub rotations: Option<u32>,
    /// Address of the daemon's metrics and status.
    pub listen: String,
}

/// Runs the demonstration; returns the exit code.
pub fn run(args: Demo) -> i32 {
    crate::report::logging::init(LogFormat::Text, LogLevel::Info);
    match demo(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo: {e}");
            1
        }
    }
}

fn demo(args: Demo) -> Result<(), String> {
    // On tmpfs where there is one, as kubelet mounts a Secret volume (read on the reload
    // thread); else in the temporary directory (read on a lane).
    let name = format!("secret-reloader-demo-{}", std::process::id());
    let shm = std::path::Path::new("/dev/shm").join(&name);
    let dir = if std::fs::create_dir_all(&shm).is_ok() {
        shm
    } else {
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        dir
    };
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        app: None,
    };
    let volume = dir.join("secret");
    let writer = AtomicWriter::new(&volume);
    writer
        .write(&[("token", credential(1))])
        .map_err(|e| format!("cannot write the volume: {e}"))?;
    // Kubelet mounts a Secret's volume before it starts the pod's containers: an app starts
    // after its content. The daemon trusts a process to hold the content on disk only when it
    // started more than START_MARGIN after the content's change time (start times count in
    // clock ticks, file times lag); an app started within that margin of its content (this
    // demo's, started right after the write, was) may hold either version, so the daemon
    // signals it at start, and first waits for it to be a second old (a Go runtime handles every
    // signal before the app does): warnings and a reload that no pod would show. So the demo
    // keeps kubelet's order, and the daemon's rule is untouched: the app starts once the
    // content is provably older than the guard. Every change time the write made is at most
    // now (the kernel's file times come from a clock that only lags), and the start time the
    // daemon will read is at most one tick before the real start: after START_MARGIN, one tick
    // and a millisecond, the app's start time is past the content's by more than the margin.
    let tick = Duration::from_nanos(1_000_000_000 / crate::process::clock_ticks_per_sec());
    std::thread::sleep(START_MARGIN + tick + Duration::from_millis(1));

    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let pid_file = dir.join("app.pid");
    let mut app = Command::new(&exe)
        .args(["demo-app", "--credential"])
        .arg(volume.join("token"))
        .arg("--pid-file")
        .arg(&pid_file)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the demo app: {e}"))?;
    let lines = app_lines(app.stdout.take().expect("piped"));
    cleanup.app = Some(app);
    wait_for_version(&lines, "1", Duration::from_secs(10))?;

    let listen = std::net::TcpListener::bind(&args.listen)
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listen.local_addr().map_err(|e| e.to_string())?;
    let argv: Vec<String> = [
        "secret-reloader",
        "--watch",
        &volume.display().to_string(),
        "--pid-file",
        &pid_file.display().to_string(),
        "--signal",
        "HUP",
        "--listen",
        &addr.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = Config::from_argv(&argv).map_err(|e| e.to_string())?;
    println!("secret-reloader demo");
    println!(
        "  volume    {}  (kubelet layout: ..data -> timestamped directory)",
        volume.display()
    );
    println!(
        "  app       pid {} reloads its credential on SIGHUP",
        cleanup.app.as_ref().map_or(0, Child::id)
    );
    println!("  daemon    {}", argv[1..].join(" "));
    println!("  metrics   http://{addr}/metrics   status  http://{addr}/status");
    println!(
        "  rotating every {}; Ctrl-C ends\n",
        humantime::format_duration(args.interval)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        listen.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(listen).map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(crate::daemon::serve(config, listener, async {
            let _ = stop_rx.await;
        }));
        let ctrl_c = crate::daemon::signals::install(std::time::Duration::from_secs(5))
            .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?
            .terminated();
        let rotations = rotate(&writer, &lines, &args);
        let summary = tokio::select! {
            r = rotations => r,
            _ = ctrl_c => Ok(()),
        };
        let _ = stop_tx.send(());
        let _ = daemon.await;
        summary
    })?;
    drop(cleanup);
    println!("\ndemo ended: app stopped, {} removed", dir.display());
    Ok(())
}

async fn rotate(
    writer: &AtomicWriter,
    lines: &mpsc::Receiver<String>,
    args: &Demo,
) -> Result<(), String> {
    let mut latencies = Vec::new();
    // The app starts with version 1; rotation n brings version n + 1.
    let mut rotation = 0u32;
    while args.rotations.is_none_or(|n| rotation < n) {
        tokio::time::sleep(args.interval).await;
        rotation += 1;
        let version = rotation + 1;
        let swapped = writer
            .write(&[("token", credential(version))])
            .map_err(|e| format!("rotation failed: {e}"))?;
        let swap_ns = monotonic_ns() - swapped.elapsed().as_nanos() as u64;
        let want = version.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let reloaded_at = loop {
            match lines.try_recv() {
                Ok(line) => {
                    if let Some(at) = parse_report(&line, &want) {
                        break at;
                    }
                }
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(_) => {
                    return Err(format!(
                        "the app did not report version {version} within 10s"
                    ));
                }
            }
        };
        let ms = reloaded_at.saturating_sub(swap_ns) as f64 / 1e6;
        latencies.push(ms);
        println!(
            "rotation {rotation}: ..data swapped -> app holds version {version} after {ms:.3} ms (SIGHUP)"
        );
    }
    if !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        println!(
            "\n{} rotations: median {:.3} ms, max {:.3} ms from the swap to the app holding the new version",
            latencies.len(),
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
    }
    Ok(())
}

/// The credential of a version: the first line names it; the second is the (made-up) secret.
fn credential(version: u32) -> String {
    let secret = getrandom::u64().unwrap_or(0);
    format!("version={version}\ntoken={secret:016x}\n")
}

/// `at_ns` of an app report line saying it holds `version`.
fn parse_report(line: &str, version: &str) -> Option<u64> {
    let rest = line.split(" holds version ").nth(1)?;
    let (v, rest) = rest.split_once(' ')?;
    if v != version {
        return None;
    }
    rest.split("at_ns=")
        .nth(1)?
        .trim_end_matches(')')
        .parse()
        .ok()
}

fn app_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_version(
    lines: &mpsc::Receiver<String>,
    version: &str,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if parse_report(&line, version).is_some() => return Ok(()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Err(format!("the demo app did not start with version {version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        let line = "app: pid 7 holds version 3 (reloads=2 at_ns=12345)";
        assert_eq!(parse_report(line, "3"), Some(12345));
        assert_eq!(parse_report(line, "4"), None);
    }
}
