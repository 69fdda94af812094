//! A daemon short of file descriptors or threads: it says so (a log line naming the limit,
//! `/status` resources, `resource_exhausted_total`), its probes keep answering, and it recovers
//! by itself once the resource is back (the limit raised at run time with `prlimit --pid`).

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{Daemon, Fixture, bin, eventually, http_get, open_dir};

fn prlimit(pid: i32, limit: &str) {
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), limit])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit --pid {pid} {limit}");
}

fn exhausted(d: &Daemon, resource: &str) -> f64 {
    d.metric("resource_exhausted_total", &[("resource", resource)])
        .unwrap_or(0.0)
}

fn episode(status: &Value, resource: &str) -> Option<Value> {
    status["resources"]["exhausted"]
        .as_array()?
        .iter()
        .find(|e| e["resource"] == resource)
        .cloned()
}

/// Descriptors the process `pid` holds now.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn out_of_descriptors_is_said_and_the_daemon_recovers_when_they_return() {
    let f = Fixture::new();
    let d = crate::support::daemon_for(&[&f.vol], &f.sink, &[]);
    // A limit of 3: a new descriptor takes the lowest free number, which is 3 or more (0, 1 and 2
    // are held), so nothing new can be opened, whatever the daemon closes meanwhile.
    let held = 3;
    prlimit(d.pid(), &format!("--nofile={held}:"));
    f.rotate("2");
    eventually(
        "the warning",
        || d.log(),
        |l| l.contains(&format!("out of file descriptors (its limit is {held})")),
    );
    assert_eq!(
        f.sink.count(),
        0,
        "a call went out without the new content being read"
    );
    // Back: the held version is read again and delivered, without another change.
    prlimit(d.pid(), "--nofile=1024:");
    eventually(
        "the reload once descriptors are back",
        || f.sink.count(),
        |n| *n >= 1,
    );
    assert!(exhausted(&d, "file_descriptors") >= 1.0);
    let status = d.status();
    let e = episode(&status, "file_descriptors").expect("the episode in /status");
    assert!(e["failures"].as_u64().unwrap() >= 1, "{e}");
    assert!(e["what_to_do"].as_str().unwrap().contains("nofile"), "{e}");
    assert_eq!(status["targets"][0]["stale"], false, "{}", d.log());
}

#[test]
fn a_probe_gets_in_when_idle_connections_hold_every_descriptor() {
    let f = Fixture::new();
    let d = crate::support::daemon_for(&[&f.vol], &f.sink, &[]);
    let held = open_fds(d.pid());
    prlimit(d.pid(), &format!("--nofile={}:", held + 4));
    // Idle keep-alive connections, more than the daemon has room for.
    let idle: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(d.addr).unwrap())
        .collect();
    // The daemon has met its limit (it may already have closed an idle connection, so the
    // table's count is no proof: its own report is).
    eventually(
        "the daemon to run out of descriptors",
        || d.log(),
        |l| {
            l.contains(&format!(
                "out of file descriptors (its limit is {})",
                held + 4
            ))
        },
    );
    // An idle connection makes room for the probe.
    let (code, _) = http_get(d.addr, "/healthz").unwrap();
    assert_eq!(code, 200);
    drop(idle);
}

#[test]
fn a_daemon_that_cannot_start_a_thread_says_so_and_recovers() {
    // A uid of this test's own: RLIMIT_NPROC counts every process of the uid.
    let uid = 23000 + u32::from_str_radix(&crate::support::unique(), 16).unwrap() % 1000;
    let dir = open_dir();
    let watched = dir.path().join("w");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("token"), "1").unwrap();
    std::os::unix::fs::chown(&watched, Some(uid), Some(uid)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(uid), Some(uid)).unwrap();
    let marker = out.join("ran");
    let cmd = format!("touch {}", marker.display());
    // Three threads (main, signals, admin): no room for the thread that reads the files.
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
        "prlimit",
        "--nproc=3:64",
        bin(),
        "--watch",
        watched.to_str().unwrap(),
        "--exec",
        &cmd,
        "--reload-on-start",
        "always",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let d = Daemon::spawn(c);
    eventually(
        "the failure to be counted",
        || exhausted(&d, "threads"),
        |n| *n >= 1.0,
    );
    // Counted, then said: the line may follow the count by a moment.
    eventually(
        "the failure to be said",
        || d.log(),
        |l| l.contains("cannot start a thread"),
    );
    assert_eq!(http_get(d.addr, "/healthz").unwrap().0, 200);
    assert!(episode(&d.status(), "threads").is_some());
    // Only the uid itself may raise it (no CAP_SYS_RESOURCE needed up to the hard limit).
    let ok = Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .args(["prlimit", "--pid", &d.pid().to_string(), "--nproc=64:"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit as uid {uid}");
    eventually(
        "the group read and the command run",
        || marker.exists(),
        |m| *m,
    );
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
