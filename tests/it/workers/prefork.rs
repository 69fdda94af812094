//! A pre-forking app of ours (`fixtures/prefork.py`: 4 workers, replaced one by one on SIGHUP)
//! beside the daemon, selected by its unique command line: the daemon counts the old workers
//! down as they go, and the doctor names them.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{consistent, older_pids, signals, target, target_when};
use crate::support::prefork::Prefork;
use crate::support::process::doctor;
use crate::support::{
    Daemon, credential, eventually_within, let_content_age, now_ns, tempdir, volume,
};

/// Longer than the daemon's pace of counting (about a second while a worker is older), so that
/// each step of the replacement lasts through at least one count.
const PAUSE: f64 = 1.5;

#[test]
fn prefork_workers_replaced_one_by_one_are_counted_down_to_zero() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let app = Prefork::start(dir.path(), &vol.join("token"), 4, PAUSE);
    let first: BTreeSet<i64> = app.workers_of("1").into_iter().map(i64::from).collect();
    assert_eq!(first.len(), 4);
    let t = now_ns();
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-cmdline",
        &app.cmdline,
        "--min-reload-interval",
        "0",
        "--resync-interval",
        "1s",
        "--applied-when",
        "workers-replaced",
    ]);
    d.wait_ready();
    d.passed(t);
    assert_eq!(signals(&d), (0.0, 0.0), "no signal at start");

    w.write(&[("token", credential("2"))]).unwrap();
    // The app pauses before its first replacement: the first count after the signal sees all 4.
    // (Counts before the signal, while the daemon waits for the app to be old enough to
    // signal, see them too.)
    let t = target_when(&d, "the signal sent, the 4 workers counted as older", |t| {
        t["workers"]["older_than_version"] == 4 && t["state"] == "draining"
    });
    let named: BTreeSet<i64> = older_pids(&t).into_iter().collect();
    assert_eq!(named, first, "the workers of version 1: {t}");
    // Every look until the last old worker is gone.
    let mut seen: Vec<Value> = vec![t];
    eventually_within(
        "the count down to 0 old workers of 4",
        Duration::from_secs(60),
        || {
            let t = target(&d.status());
            seen.push(t.clone());
            t
        },
        |t| t["workers"]["older_than_version"] == 0 && t["workers"]["total"] == 4,
    );
    let older: Vec<u64> = seen
        .iter()
        .map(|t| t["workers"]["older_than_version"].as_u64().unwrap())
        .collect();
    for t in &seen {
        consistent(t);
        let left = t["workers"]["older_than_version"].as_u64().unwrap();
        // Applied only once the last old worker is gone.
        if left > 0 {
            assert_eq!(
                (&t["state"], &t["stale"]),
                (&"draining".into(), &true.into()),
                "{t}"
            );
        }
        // The workers named are version 1's, never a replacement.
        assert!(older_pids(t).iter().all(|p| first.contains(p)), "{t}");
    }
    assert!(
        older.windows(2).all(|w| w[1] <= w[0]),
        "the count only goes down: {older:?}"
    );
    assert!(
        older.iter().any(|n| (1..4).contains(n)),
        "a step between 4 and 0 seen: {older:?}"
    );
    let t = target_when(&d, "the target applied", |t| t["state"] == "idle");
    assert_eq!(t["stale"], false, "{t}");
    assert_eq!(t["workers"]["current"], 4, "{t}");
    app.wait_reloaded("2");
    d.passed(now_ns());
    assert_eq!(signals(&d), (1.0, 1.0), "one signal for one rotation");
    assert_eq!(app.hups(), 1, "the app took one SIGHUP");
}

/// The doctor's `workers` check of the first target.
fn workers_check(json: &Value) -> Value {
    let checks = json["groups"][0]["targets"][0]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {json}"));
    checks
        .iter()
        .find(|c| c["what"] == "workers")
        .unwrap_or_else(|| panic!("no workers check: {checks:?}"))
        .clone()
}

#[test]
fn doctor_names_the_workers_older_than_the_content_until_they_are_replaced() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let app = Prefork::start(dir.path(), &vol.join("token"), 4, 0.1);
    let first = app.workers_of("1");
    // The content changes after the workers started, and nobody signals.
    let_content_age();
    w.write(&[("token", credential("2"))]).unwrap();
    let args = [
        "--watch",
        vol.to_str().unwrap(),
        "--process-cmdline",
        &app.cmdline,
        "--applied-when",
        "workers-replaced",
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ];
    let (code, text, json) = doctor(&args);
    let check = workers_check(&json);
    assert_eq!(check["ok"], false, "{check}");
    let detail = check["detail"].as_str().unwrap();
    for pid in &first {
        assert!(
            detail.contains(&format!("pid {pid} (python3) started ")),
            "{detail}"
        );
        assert!(text.contains(&format!("pid {pid} (python3)")), "{text}");
    }
    assert_eq!(code, 1, "{text}");
    let problems = json["problems"].to_string();
    assert!(
        problems.contains("workers"),
        "old workers are a problem: {problems}"
    );

    // The app replaces them (as if the daemon had signalled it).
    app.signal(Signal::SIGHUP);
    app.wait_reloaded("2");
    let (code, text, json) = doctor(&args);
    let check = workers_check(&json);
    assert_eq!(check["ok"], true, "{check}");
    for pid in &first {
        assert!(!text.contains(&format!("pid {pid} (python3)")), "{text}");
    }
    // The master still started before the content: only its freshness is in doubt.
    let problems = json["problems"].to_string();
    assert!(!problems.contains("workers"), "{problems}");
    assert!(problems.contains("freshness"), "{code}: {problems}");
}
