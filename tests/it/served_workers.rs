//! `--verify-served-cert` worker by worker: nginx with four workers (`reuseport`: a listening
//! socket per worker) serves TLS from a kubelet-style volume; after a rotation the daemon must
//! have seen each current worker serve the new certificate. A worker stopped (SIGSTOP) before
//! the rotation keeps the port but never takes a connection again: it is named, not checked,
//! and the target stays stale.
//!
//! nginx and the daemon run in their own PID namespace (`nginx::nginx_and_daemon`): the daemon
//! shows the namespace's pids, which this test reads from each process's `NSpid`.

use std::path::Path;

use crate::nginx::{nginx_conf_with, tls_server};
use crate::served::checked;
use crate::support::tls::{KeyKind, pair, serial, served_subject};
use crate::support::{
    AtomicWriter, Daemon, eventually, free_port, let_content_age, now_ns, tempdir,
};

/// nginx with four workers, a listening socket each, serving v1 from `vol`; the daemon signals
/// it and checks what each worker serves.
fn four_workers(dir: &Path, vol: &Path) -> (u16, Daemon) {
    let port = free_port();
    let conf = nginx_conf_with(
        dir,
        4,
        &tls_server(vol, &format!("127.0.0.1:{port} ssl reuseport")),
    );
    (port, checked(dir, &conf, port, vol, &[]))
}

/// A kubelet-style volume `<dir>/tls` holding pair v1; pair v2 to rotate to, and its serial.
fn at_v1(
    dir: &Path,
) -> (
    std::path::PathBuf,
    AtomicWriter,
    [(&'static str, String); 2],
    String,
) {
    let vol = dir.join("tls");
    let w = AtomicWriter::new(&vol);
    let (crt1, key1) = pair(dir, "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(dir, "v2", KeyKind::EcPkcs8);
    w.write(&[("tls.crt", &crt1), ("tls.key", &key1)]).unwrap();
    let s2 = serial(dir, &crt2);
    (vol, w, [("tls.crt", crt2), ("tls.key", key2)], s2)
}

/// The live children of host pid `parent`, as host pids.
fn children(parent: i32) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut f = after.split_whitespace();
            let state = f.next().unwrap_or("X");
            state != "Z" && state != "X" && f.next() == Some(&parent.to_string())
        })
        .collect();
    out.sort_unstable();
    out
}

/// The pid of host process `pid` in its own (innermost) PID namespace.
fn ns_pid(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// nginx's master, as a host pid: the child of the daemon, itself the child of `unshare`.
fn master(d: &Daemon) -> i32 {
    let inner = eventually(
        "the daemon inside unshare",
        || children(d.pid()),
        |c| c.len() == 1,
    )[0];
    eventually("nginx's master", || children(inner), |c| c.len() == 1)[0]
}

/// Sends SIGKILL to a stopped worker when dropped, whatever the test's end.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.0);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGCONT);
    }
}

fn pids(list: &serde_json::Value) -> Vec<i64> {
    let mut out: Vec<i64> = list
        .as_array()
        .map(|a| a.iter().filter_map(|w| w["pid"].as_i64()).collect())
        .unwrap_or_default();
    out.sort_unstable();
    out
}

#[test]
fn each_of_four_nginx_workers_is_seen_serving_the_rotated_certificate() {
    let dir = tempdir();
    let (vol, w, v2, s2) = at_v1(dir.path());
    let (port, d) = four_workers(dir.path(), &vol);
    let target = d.status()["targets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    w.write(&v2).unwrap();
    let t = eventually(
        "the rotation applied, every worker seen serving it",
        || d.status()["targets"][0].clone(),
        |t| t["stale"] == false && t["served_certificate"]["serial"] == s2.as_str(),
    );
    let sc = &t["served_certificate"];
    assert_eq!(t["last_attempt"]["result"], "success", "{t}");
    assert_eq!(sc["per_worker"], true, "{sc}");
    assert_eq!(sc["not_checked"], serde_json::json!([]), "{sc}");
    let workers = sc["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4, "{sc}");
    for w in workers {
        assert_eq!(w["serial"], s2.as_str(), "{sc}");
        assert_eq!(w["matches_disk"], true, "{sc}");
        assert_eq!(w["name"], "nginx", "{sc}");
    }
    // The four are nginx's current workers: the master's children once the old ones are gone
    // (they close their listening sockets at once and exit when idle).
    let master = master(&d);
    let shown = pids(&sc["workers"]);
    eventually(
        "nginx's workers to be those the daemon names",
        || {
            let mut kids: Vec<i64> = children(master)
                .into_iter()
                .map(|p| ns_pid(p).into())
                .collect();
            kids.sort_unstable();
            kids
        },
        |kids| *kids == shown,
    );
    let detail = t["last_attempt"]["detail"].as_str().unwrap();
    assert!(detail.contains("from each of its 4 worker(s)"), "{detail}");
    for (result, n) in [("matches", 4.0), ("differs", 0.0), ("not_checked", 0.0)] {
        let labels = [("target", target.as_str()), ("result", result)];
        assert_eq!(
            d.metric("served_certificate_workers", &labels),
            Some(n),
            "{result}"
        );
    }
    assert!(served_subject(port).contains("CN=v2"));
}

#[test]
fn a_stopped_nginx_worker_is_named_not_checked_and_the_target_stays_stale() {
    use nix::sys::signal::{Signal, kill};
    let dir = tempdir();
    let (vol, w, v2, s2) = at_v1(dir.path());
    // nginx starts after the content: nothing to reload at start, and the daemon has settled
    // before a worker stops.
    let_content_age();
    let t = now_ns();
    let (_port, d) = four_workers(dir.path(), &vol);
    d.passed(t);
    let target = d.status()["targets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let master = master(&d);
    let workers = eventually(
        "nginx's four workers",
        || children(master),
        |c| c.len() == 4,
    );
    let stopped = Stopped(workers[0]);
    kill(nix::unistd::Pid::from_raw(stopped.0), Signal::SIGSTOP).unwrap();
    let inner = i64::from(ns_pid(stopped.0));

    w.write(&v2).unwrap();
    let t = eventually(
        "an attempt that failed on the stopped worker",
        || d.status()["targets"][0].clone(),
        |t| {
            t["failed_attempts"].as_u64().is_some_and(|n| n >= 1)
                && t["last_attempt"]["result"] == "failure"
                && t["served_certificate"]["disk"][0]["serial"] == s2.as_str()
        },
    );
    assert_eq!(t["stale"], true, "{t}");
    let sc = &t["served_certificate"];
    assert_eq!(sc["per_worker"], true, "{sc}");
    // It is there, holding the port, and was not seen serving the disk's certificate.
    let unseen = pids(&sc["not_checked"]).contains(&inner)
        || sc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["pid"] == inner && w["matches_disk"] == false);
    assert!(unseen, "pid {inner} not named: {sc}");
    assert!(
        !sc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["pid"] == inner && w["matches_disk"] == true)
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", stopped.0)).unwrap();
    assert!(stat.contains(") T "), "still stopped: {stat}");
    assert!(
        children(master).contains(&stopped.0),
        "still nginx's worker"
    );
    // The workers that took the port serve v2.
    for w in sc["workers"].as_array().unwrap() {
        if w["pid"] != inner {
            assert_eq!(w["serial"], s2.as_str(), "{sc}");
        }
    }
    let msg = t["last_error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("pid {inner} (nginx)")), "{msg}");
    let count = |result| {
        d.metric(
            "served_certificate_workers",
            &[("target", target.as_str()), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        count("not_checked") + count("differs") >= 1.0,
        "{}",
        d.metrics()
    );
    assert_eq!(d.metric("stale", &[("target", &target)]), Some(1.0));
}
