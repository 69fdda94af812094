//! Fleets: `--splay`. Fifty daemons (pods `web-0` … `web-49` by their HOSTNAME) on one kubelet-style
//! volume, each calling its own path of one real HTTP endpoint: after a rotation each calls
//! exactly once, at the offset its /status shows (derived from its identity), and the calls
//! spread over the window.

use std::time::Duration;

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, credential, eventually, now_ns, tempdir};

const PODS: usize = 50;
const WINDOW_MS: u64 = 4000;

#[test]
fn fifty_replicas_reload_once_each_spread_over_the_window() {
    let dir = tempdir();
    let vol = dir.path().join("secret");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start();
    let window = format!("{WINDOW_MS}ms");
    let daemons: Vec<Daemon> = (0..PODS)
        .map(|i| {
            let url = sink.url(&format!("/-/reload/{i}"));
            let hostname = format!("web-6d5f8b7c9-{i}");
            Daemon::start_with(
                &[
                    "--watch",
                    vol.to_str().unwrap(),
                    "--reload-url",
                    &url,
                    "--splay",
                    &window,
                ],
                &[("HOSTNAME", &hostname)],
            )
        })
        .collect();
    for d in &daemons {
        d.wait_ready();
    }
    let offsets: Vec<u64> = daemons
        .iter()
        .map(|d| d.status()["config"]["splay"]["offset_ms"].as_u64().unwrap())
        .collect();
    assert!(offsets.iter().all(|o| *o < WINDOW_MS), "{offsets:?}");
    // Deterministic: the same identity gives the same offset.
    let again = Daemon::start_with(
        &[
            "--watch",
            vol.to_str().unwrap(),
            "--reload-url",
            &sink.url("/x"),
            "--splay",
            &window,
        ],
        &[("HOSTNAME", "web-6d5f8b7c9-7")],
    );
    assert_eq!(
        again.status()["config"]["splay"]["offset_ms"].as_u64(),
        Some(offsets[7])
    );
    drop(again);
    assert_eq!(sink.count(), 0, "no call before the rotation");

    let since = now_ns();
    let swapped = writer.write(&[("token", credential("2"))]).unwrap();
    eventually("a call from every pod", || sink.count(), |n| *n >= PODS);
    for d in &daemons {
        d.passed(since);
    }
    let calls = sink.calls();
    let mut delays = Vec::new();
    for (i, offset) in offsets.iter().enumerate() {
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| c.path == format!("/-/reload/{i}"))
            .collect();
        assert_eq!(mine.len(), 1, "pod {i} called {} times", mine.len());
        let after = mine[0].at.duration_since(swapped);
        // Not before its turn; at its turn give or take a loaded machine.
        assert!(
            after + Duration::from_millis(5) >= Duration::from_millis(*offset),
            "pod {i}: called {after:?} after the swap, before its offset {offset} ms"
        );
        // Fifty daemons beside a parallel test suite on two cores: a timer may fire late.
        assert!(
            after < Duration::from_millis(offset + 3000),
            "pod {i}: called {after:?} after the swap, offset {offset} ms"
        );
        delays.push(after.as_secs_f64());
    }
    delays.sort_by(f64::total_cmp);
    let (first, last) = (delays[0], delays[PODS - 1]);
    let per_second: Vec<usize> = (0..WINDOW_MS / 1000)
        .map(|s| delays.iter().filter(|d| (**d as u64) == s).count())
        .collect();
    eprintln!(
        "splay {WINDOW_MS} ms over {PODS} pods: first call {:.0} ms, last {:.0} ms, median {:.0} ms after \
         the swap; calls per second of the window {per_second:?}",
        first * 1e3,
        last * 1e3,
        delays[PODS / 2] * 1e3
    );
    assert!(last - first > 0.6 * WINDOW_MS as f64 / 1e3, "{delays:?}");
    assert!(per_second.iter().all(|n| *n <= PODS / 2), "{per_second:?}");
}
