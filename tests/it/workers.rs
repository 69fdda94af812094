//! Workers, counted: after a reload signal, which of the app's workers (the live direct children
//! of the process the daemon signals) started before the version they should hold, in `/status`
//! (`targets[0].workers`) and the metrics, and with `--applied-when workers-replaced`, a target
//! applied only once they are gone (`draining` until then, `failed` after
//! `--worker-drain-timeout`, never signalled twice for one version).
//!
//! Real apps, each holding an old worker the way it does in production:
//! - `nginx`: Debian's nginx, a request proxied to an upstream of the test that never finishes.
//! - `haproxy`: HAProxy in master-worker mode, a TCP connection proxied the same way.
//! - `prefork`: a pre-forking app of ours (`fixtures/prefork.py`) that replaces its workers one by
//!   one; and the doctor's `workers` check on it.
//!
//! What the daemon can and cannot see of workers, app by app (found by hand and by these tests):
//! - nginx: the master's children are its workers, and its cache manager and cache loader when
//!   a `proxy_cache_path` is set (counted like workers; a reload replaces them too). After SIGHUP
//!   the master forks new workers within the signal's own 10 ms clock tick (measured: the same
//!   `starttime` as a process started right after `kill`), and asks the old ones to finish: an
//!   old worker with a request in flight stays ("nginx: worker process is shutting down" in its
//!   title) until that request ends, for as long as it lasts unless `worker_shutdown_timeout`
//!   is set. The daemon sees its pid, `comm` (`nginx`, as every nginx process) and start time;
//!   it cannot see which connections it holds, nor its title. A kubelet rotation is signalled
//!   about 3 ms after the change (the `..data` swap skips the debounce), so nginx's new workers
//!   start a few milliseconds after both the change and the signal: only the signal's time can
//!   tell them from the old ones.
//! - HAProxy (`-W`): the master re-executes itself on SIGUSR2 (same pid, same start time) and
//!   forks a new worker about 40 ms later; the old worker stays a child of the master while it
//!   has connections (`hard-stop-after` bounds it). Every process's `comm` is `haproxy`; the
//!   new worker's command line says `-sf <old pid>`, which the daemon does not read.
//! - A pre-forking app (gunicorn, php-fpm, ours): its workers are its children; one replaced one
//!   by one is seen going from old to new worker by worker. Ours keeps `python3` as the `comm`
//!   of every process (the standard library sets no process name), so it is selected by its
//!   command line, which its forked workers share: the selector takes the top-level match, the
//!   master.
//! - PostgreSQL reloads in place (checked by hand with Debian's 15): SIGHUP to the postmaster
//!   is passed on to its children, which apply the new configuration themselves; nothing is
//!   replaced. Its children (checkpointer, background writer, WAL writer, autovacuum and logical
//!   replication launchers, one backend per client connection) keep their pids and start times
//!   across the reload, so every one counts as older for good: `workers-replaced` does not fit
//!   PostgreSQL (its target would fail at the drain timeout); the default `signalled` does, and
//!   its count stays information only.
//! - Prometheus reloads in place in one process (checked by hand: no children before or after
//!   SIGHUP): there is nothing to count (`total` 0) and `workers-replaced` is applied at the
//!   first count after the signal, as for the demo app here.

mod haproxy;
mod nginx;
mod prefork;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, eventually, eventually_within};

/// Returns once an app started at `started` is old enough for the daemon to signal it at once
/// (1 s: a younger one's handler may not be its own yet): a rotation after this is signalled
/// right after the change, as in production, and the app's new workers start right after it.
/// An input of the test (the app's age), not a wait for the daemon.
fn aged(started: Instant) {
    let age = Duration::from_millis(1500);
    std::thread::sleep(age.saturating_sub(started.elapsed()));
}

/// The first target of a `/status`.
fn target(status: &Value) -> Value {
    status["targets"][0].clone()
}

/// The pids of the workers a target names as older than its version.
fn older_pids(t: &Value) -> Vec<i64> {
    t["workers"]["older"]
        .as_array()
        .map(|o| o.iter().filter_map(|w| w["pid"].as_i64()).collect())
        .unwrap_or_default()
}

/// How many times the daemon counted the target's workers (0 before the first count).
fn counts(t: &Value) -> u64 {
    t["workers"]["counts"].as_u64().unwrap_or(0)
}

/// The first target's state once `cond` holds.
fn target_when(d: &Daemon, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || target(&d.status()), cond)
}

/// Waits until the daemon counted the workers `more` times after the count `since`: it looked
/// again, so whatever it would have done on that look is done. Returns the target then.
fn counted_again(d: &Daemon, since: u64, more: u64) -> Value {
    eventually_within(
        &format!("{more} more counts of the workers after count {since}"),
        crate::support::DEADLINE * 2,
        || target(&d.status()),
        |t| counts(t) >= since + more,
    )
}

/// The signals the daemon sent, as the existing tests count them (successful reloads) and as
/// attempts whatever their result (a drain that timed out must not turn its signal into a
/// failure, nor a second signal hide among failures).
fn signals(d: &Daemon) -> (f64, f64) {
    let failed = d
        .metric("reloads_total", &[("result", "failure")])
        .unwrap_or(0.0);
    let sent = d.signals_sent();
    (sent, sent + failed)
}

/// The daemon's `workers_older_than_version` and `workers` gauges for `target`.
fn gauges(d: &Daemon, target: &str) -> (Option<f64>, Option<f64>) {
    let labels = [("target", target)];
    (
        d.metric("workers_older_than_version", &labels),
        d.metric("workers", &labels),
    )
}

/// An RFC 3339 time of `/status`.
fn time(v: &Value) -> std::time::SystemTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    humantime::parse_rfc3339_weak(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The checks of the daemon's invariants that hold at every look at a counted target: the
/// counts add up, and every old worker named started before the reference time (give or take
/// the 20 ms by which a start must follow a change to be trusted when no reload was sent).
fn consistent(t: &Value) {
    let w = &t["workers"];
    let (total, current, older) = (
        w["total"].as_u64().unwrap(),
        w["current"].as_u64().unwrap(),
        w["older_than_version"].as_u64().unwrap(),
    );
    assert_eq!(total, current + older, "{w}");
    assert_eq!(older_pids(t).len() as u64, older, "{w}");
    // The version's age is counted from the reference to the count (both shown to the
    // millisecond).
    let age = time(&w["checked_at"])
        .duration_since(time(&w["reference"]))
        .unwrap_or_default()
        .as_secs_f64();
    let shown = w["version_age_seconds"].as_f64().unwrap();
    assert!((shown - age).abs() < 0.01, "{w}");
    let reference = time(&w["reference"]) + Duration::from_millis(20);
    for o in w["older"].as_array().unwrap() {
        assert!(
            time(&o["started"]) <= reference,
            "{o} vs reference {reference:?}"
        );
    }
}

#[test]
fn an_http_target_has_no_workers_in_status_or_metrics() {
    let f = crate::support::Fixture::new();
    let d = crate::support::daemon_for(&[&f.vol], &f.sink, &["--resync-interval", "1s"]);
    f.rotate("2");
    target_when(&d, "the rotation applied", |t| {
        t["stale"] == false && t["last_attempt"]["result"] == "success"
    });
    // Past a resync too: workers are counted at each one, for signal targets.
    d.passed(crate::support::now_ns());
    let t = target(&d.status());
    assert!(
        t.get("workers").is_none(),
        "no workers for an HTTP target: {t}"
    );
    let name = t["name"].as_str().unwrap();
    assert_eq!(gauges(&d, name), (None, None));
}

#[test]
fn an_app_without_workers_is_applied_at_the_signal_with_workers_replaced() {
    // The demo app reloads in place in one process, as Prometheus does.
    let dir = crate::support::tempdir();
    let (w, vol) = crate::support::volume(dir.path());
    crate::support::let_content_age();
    let app = crate::support::App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--min-reload-interval",
        "0",
        "--applied-when",
        "workers-replaced",
    ]);
    d.wait_ready();
    w.write(&[("token", crate::support::credential("2"))])
        .unwrap();
    let t = target_when(&d, "the rotation applied", |t| {
        t["state"] == "idle" && t["stale"] == false && t["last_attempt"]["result"] == "success"
    });
    consistent(&t);
    assert_eq!(t["workers"]["total"], 0, "{t}");
    let reloads = eventually("the app to reload", || app.reloads(), |n| *n >= 1);
    assert_eq!(reloads, 1);
}
