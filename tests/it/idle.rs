//! An idle daemon costs nothing: after a reload of each kind of target (an HTTP call, a signal
//! with its workers counted, a signal under `--applied-when workers-replaced`), nothing is
//! left running. A timer left in the past would wake the reconciler at once, again and again:
//! a core busy for good, on every pod.

use std::time::Duration;

use crate::support::{App, Daemon, Fixture, daemon_for, let_content_age, tempdir, volume};

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

/// The ticks `d` uses over two seconds once its target holds the rotation.
fn idle_ticks(d: &Daemon) -> u64 {
    crate::support::eventually(
        "the rotation applied",
        || d.status()["targets"][0].clone(),
        |t| t["stale"] == false && t["last_attempt"]["result"] == "success",
    );
    let t0 = ticks(d);
    // A window, not a wait for an event: what is measured is what happens in it.
    std::thread::sleep(Duration::from_secs(2));
    ticks(d) - t0
}

/// At most this many ticks in two seconds (a busy core is about 200; an idle daemon 0).
const IDLE: u64 = 20;

#[test]
fn an_http_target_leaves_nothing_running_after_a_reload() {
    let f = Fixture::new();
    let d = daemon_for(&[&f.vol], &f.sink, &[]);
    f.rotate("2");
    let used = idle_ticks(&d);
    assert!(used <= IDLE, "{used} ticks in 2 s idle");
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
        let d = Daemon::start(&args);
        d.wait_ready();
        w.write(&[("token", crate::support::credential("2"))])
            .unwrap();
        let used = idle_ticks(&d);
        assert!(used <= IDLE, "{extra:?}: {used} ticks in 2 s idle");
        assert!(
            d.status()["targets"][0]["workers"]["counts"]
                .as_u64()
                .is_some_and(|c| c >= 1),
            "{extra:?}: counted"
        );
    }
}
