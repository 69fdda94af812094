//! nginx (the Debian package, one worker) proxying a request that never finishes to an upstream
//! of the test: after the SIGHUP the old worker carries it until the upstream closes, and the
//! daemon names it (the pid `/proc` says holds the connection) until it is gone.
//!
//! nginx and the daemon run in their own PID namespace (`nginx::nginx_and_daemon`): the pids the
//! daemon reports are that namespace's, and nginx's `$pid` (sent to the upstream) is too.

use std::path::Path;

use serde_json::Value;

use super::{
    aged, consistent, counted_again, counts, gauges, older_pids, signals, target, target_when,
};
use crate::nginx::{nginx_and_daemon, nginx_conf_with};
use crate::support::held::{Client, Upstream, ns_pid};
use crate::support::process::running;
use crate::support::{
    AtomicWriter, Daemon, credential, eventually, free_port, http_get, let_content_age, now_ns,
    tempdir, volume,
};

/// nginx with one worker on 127.0.0.1:`port`, `/hold` proxied to `upstream` unbuffered and
/// without a read timeout, its workers' `$pid` sent along.
fn conf(dir: &Path, port: u16, upstream: std::net::SocketAddr) -> std::path::PathBuf {
    let server = format!(
        "listen 127.0.0.1:{port};\n    \
         location /hold {{ proxy_pass http://{upstream}; proxy_buffering off; \
         proxy_read_timeout 1h; proxy_set_header X-Worker-Pid $pid; }}\n    \
         location / {{ return 200 \"ok\\n\"; }}"
    );
    nginx_conf_with(dir, 1, &server)
}

/// nginx beside the daemon, at version 1, with a request held by its worker.
/// Fields drop in order: the daemon (and nginx with its namespace) before the directory.
struct Setup {
    d: Daemon,
    client: Option<Client>,
    upstream: Upstream,
    writer: AtomicWriter,
    dir: tempfile::TempDir,
    /// The worker holding the request: its pid in the namespace, and as the test sees it.
    old: (i64, i32),
}

impl Setup {
    /// The daemon (told `--process-name nginx`, resyncing every second, `extra` flags after)
    /// beside nginx started after version 1; no signal at start; then a request held.
    fn start(extra: &[&str]) -> Setup {
        let dir = tempdir();
        let (writer, vol) = volume(dir.path());
        let upstream = Upstream::start();
        let_content_age();
        let port = free_port();
        let conf = conf(dir.path(), port, upstream.addr);
        let mut args = vec![
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            "nginx",
            "--resync-interval",
            "1s",
            "--min-reload-interval",
            "0",
        ];
        args.extend(extra);
        let t = now_ns();
        let started = std::time::Instant::now();
        let d = nginx_and_daemon(dir.path(), &conf, &args);
        d.wait_ready();
        let addr = ([127, 0, 0, 1], port).into();
        eventually(
            "nginx to answer",
            || http_get(addr, "/").map(|r| r.0).unwrap_or(0),
            |c| *c == 200,
        );
        d.passed(t);
        assert_eq!(signals(&d), (0.0, 0.0), "no signal at start");

        let client = Client::connect(port, "/hold");
        let head = upstream.wait_held(1).remove(0);
        let pid: i64 = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Worker-Pid: "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no worker pid in {head}"));
        let holders = client.proxy_side_holders();
        assert_eq!(
            holders.len(),
            1,
            "one process holds nginx's end: {holders:?}"
        );
        let host = holders[0];
        assert_eq!(
            ns_pid(host).map(i64::from),
            Some(pid),
            "the holder {host} is the worker nginx names"
        );
        aged(started);
        Setup {
            d,
            client: Some(client),
            upstream,
            writer,
            dir,
            old: (pid, host),
        }
    }

    fn rotate(&self) {
        self.writer.write(&[("token", credential("2"))]).unwrap();
    }

    /// SIGHUPs nginx received, as its own log says.
    fn sighups(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("error.log"))
            .unwrap_or_default()
            .matches("(SIGHUP) received")
            .count()
    }

    /// Finishes the held request; waits until nginx closed it.
    fn release(&mut self) {
        self.upstream.release();
        self.client.take().unwrap().wait_closed();
    }

    /// The target's name, for metric labels.
    fn name(&self) -> String {
        target(&self.d.status())["name"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Asserts one signal, as the daemon and nginx count them, once the daemon provably passed
    /// every point where it would have sent another.
    fn one_signal(&self) {
        self.d.passed(now_ns());
        assert_eq!(signals(&self.d), (1.0, 1.0), "one signal for one rotation");
        assert_eq!(self.sighups(), 1, "nginx received one SIGHUP");
    }
}

/// Waits until the old worker is counted, beside the new one.
fn old_counted(s: &Setup, also: impl Fn(&Value) -> bool) -> Value {
    let old = s.old.0;
    let t = target_when(&s.d, "the old worker counted beside the new one", |t| {
        older_pids(t) == [old] && t["workers"]["total"] == 2 && also(t)
    });
    consistent(&t);
    assert_eq!(t["workers"]["current"], 1, "{t}");
    assert_eq!(t["workers"]["older"][0]["name"], "nginx", "{t}");
    t
}

#[test]
fn nginx_old_worker_holding_a_request_is_counted_and_the_default_applies_at_the_signal() {
    let mut s = Setup::start(&[]);
    s.rotate();
    let t = old_counted(&s, |t| t["stale"] == false);
    assert_eq!(t["state"], "idle", "signalled: applied at the signal: {t}");
    assert_eq!(t["last_attempt"]["result"], "success", "{t}");
    assert_eq!(gauges(&s.d, &s.name()), (Some(1.0), Some(2.0)));
    s.one_signal();

    s.release();
    let t = target_when(&s.d, "the old worker gone from the count", |t| {
        t["workers"]["older_than_version"] == 0 && t["workers"]["total"] == 1
    });
    consistent(&t);
    assert!(!running(s.old.1), "the old worker exited");
    assert_eq!(gauges(&s.d, &s.name()), (Some(0.0), Some(1.0)));
    s.one_signal();
}

#[test]
fn nginx_target_drains_until_the_old_worker_finishes_its_request() {
    let mut s = Setup::start(&["--applied-when", "workers-replaced"]);
    s.rotate();
    let t = old_counted(&s, |t| t["state"] == "draining");
    assert_eq!(t["stale"], true, "draining: not applied yet: {t}");
    // Still draining after the daemon looked twice more: the old worker holds it back.
    let t = counted_again(&s.d, counts(&t), 2);
    assert_eq!(
        (&t["state"], &t["stale"]),
        (&"draining".into(), &true.into()),
        "{t}"
    );
    assert_eq!(older_pids(&t), [s.old.0], "{t}");
    assert_eq!(gauges(&s.d, &s.name()).0, Some(1.0));

    s.release();
    let t = target_when(&s.d, "the target applied once the old worker exited", |t| {
        t["state"] == "idle" && t["stale"] == false
    });
    consistent(&t);
    assert_eq!(t["workers"]["older_than_version"], 0, "{t}");
    assert!(!running(s.old.1), "the old worker exited");
    s.one_signal();
}

#[test]
fn nginx_drain_timeout_fails_naming_the_old_worker_and_never_signals_again() {
    let mut s = Setup::start(&[
        "--applied-when",
        "workers-replaced",
        "--worker-drain-timeout",
        "2s",
    ]);
    s.rotate();
    let old = s.old.0;
    let t = target_when(&s.d, "the drain to time out", |t| t["state"] == "failed");
    assert_eq!(t["stale"], true, "{t}");
    let msg = t["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("pid {old} (nginx) started ")),
        "{msg}"
    );
    // Past the deadline, the daemon looked again and again (and resynced): no second signal.
    let t = counted_again(&s.d, counts(&t), 3);
    assert_eq!(
        (&t["state"], &t["stale"]),
        (&"failed".into(), &true.into()),
        "{t}"
    );
    s.one_signal();

    s.release();
    let t = target_when(&s.d, "the target applied once the old worker exited", |t| {
        t["state"] == "idle" && t["stale"] == false
    });
    assert_eq!(t["workers"]["older_than_version"], 0, "{t}");
    s.one_signal();
}
