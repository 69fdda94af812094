//! An idle daemon costs nothing: after a reload of each kind of target (an HTTP call, a signal
//! with its workers counted, a signal under `--applied-when workers-replaced`), nothing is
//! left running. A timer left in the past would wake the reconciler at once, again and again:
//! a core busy for good, on every pod.

use crate::support::{App, Daemon, Fixture, daemon_for, let_content_age, now_ns, tempdir, volume};

/// CPU time of `d` (every thread), in clock ticks.
fn ticks(d: &Daemon) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    f[0] + f[1]
}

/// The ticks `d` uses, once its target holds the rotation, over two full resync rounds (the
/// daemons here resync every 500 ms): a window the daemon's own scans bound, long enough for a
/// timer left in the past to spin a core.
fn idle_ticks(d: &Daemon) -> u64 {
    crate::support::eventually(
        "the rotation applied",
        || d.status()["targets"][0].clone(),
        |t| t["stale"] == false && t["last_attempt"]["result"] == "success",
    );
    d.passed(now_ns());
    let t0 = ticks(d);
    for _ in 0..2 {
        d.passed(now_ns());
    }
    ticks(d) - t0
}

/// Flags of every daemon here: a resync every 500 ms, whose scans bound the window measured.
const RESYNC: [&str; 2] = ["--resync-interval", "500ms"];

/// At most this many ticks over the window (at least a second: a busy core is 100 or more; an
/// idle daemon's two resyncs a few).
const IDLE: u64 = 20;

#[test]
fn an_http_target_leaves_nothing_running_after_a_reload() {
    let f = Fixture::new();
    let d = daemon_for(&[&f.vol], &f.sink, &RESYNC);
    f.rotate("2");
    let used = idle_ticks(&d);
    assert!(used <= IDLE, "{used} ticks over two resyncs idle");
}

#[test]
fn a_signal_target_leaves_nothing_running_after_its_workers_are_counted() {
    for extra in [&[][..], &["--applied-when", "workers-replaced"][..]] {
        let dir = tempdir();
        let (w, vol) = volume(dir.path());
        let_content_age();
        let app = App::start(dir.path(), &vol.join("token"), &[]);
        app.wait_up();
        let mut args = vec![
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            &app.name,
            "--min-reload-interval",
            "0",
        ];
        args.extend(extra);
        args.extend(RESYNC);
        let d = Daemon::start(&args);
        d.wait_ready();
        w.write(&[("token", crate::support::credential("2"))])
            .unwrap();
        let used = idle_ticks(&d);
        assert!(
            used <= IDLE,
            "{extra:?}: {used} ticks over two resyncs idle"
        );
        assert!(
            d.status()["targets"][0]["workers"]["counts"]
                .as_u64()
                .is_some_and(|c| c >= 1),
            "{extra:?}: counted"
        );
    }
}
