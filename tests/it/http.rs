//! HTTP targets: faults of the endpoint (error status, refused, hanging past the time limit) and
//! recovery, retries bounded per version, A → B (failed) → A, storm protection, headers and the
//! bearer token file, configmap-reload's flags, clean shutdown during retries.

use std::fs;

use crate::support::sink::{Mode, Sink};
use crate::support::{
    AtomicWriter, DEADLINE, Daemon, Fixture, credential, eventually, now_ns, tempdir,
};

struct Setup {
    _dir: tempfile::TempDir,
    writer: AtomicWriter,
    sink: Sink,
    daemon: Daemon,
}

fn setup(extra: &[&str]) -> Setup {
    let f = Fixture::new();
    let url = f.url();
    let mut args = vec!["--watch", f.vol(), "--reload-url", &url];
    args.extend(extra);
    let daemon = Daemon::start(&args);
    daemon.wait_ready();
    Setup {
        _dir: f.dir,
        writer: f.writer,
        sink: f.sink,
        daemon,
    }
}

fn failures(d: &Daemon) -> f64 {
    d.metric("reloads_total", &[("result", "failure")])
        .unwrap_or(0.0)
}

#[test]
fn error_refused_hanging_then_recovery_delivers_the_latest_version_once() {
    let s = setup(&[
        "--reload-timeout",
        "300ms",
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "200ms",
        // The recovery causes no filesystem event: the resyncs make a scan after it certain.
        // Retries are unbounded here (nothing given up for a resync to try again), and a resync
        // finds the same content.
        "--resync-interval",
        "1s",
    ]);
    let (sink, d) = (&s.sink, &s.daemon);

    sink.set(Mode::Status(500));
    s.writer.write(&[("token", credential("2"))]).unwrap();
    eventually("a failed call answered 500", || sink.count(), |n| *n >= 1);
    eventually(
        "stale to be 1",
        || d.metric("stale", &[]),
        |v| *v == Some(1.0),
    );
    s.writer.write(&[("token", credential("3"))]).unwrap();

    sink.refuse();
    let before = failures(d);
    eventually(
        "a refused attempt to be counted",
        || failures(d),
        |f| *f > before,
    );
    s.writer.write(&[("token", credential("4"))]).unwrap();

    sink.set(Mode::Hang);
    sink.listen();
    let calls = sink.count();
    eventually("a call that hangs", || sink.count(), |n| *n > calls);
    let before = failures(d);
    eventually(
        "the hanging call to time out and count as failure",
        || failures(d),
        |f| *f > before,
    );
    s.writer.write(&[("token", credential("5"))]).unwrap();
    let status = d.status();
    assert!(
        status["targets"][0]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{status}"
    );

    sink.set(Mode::Status(200));
    let t = now_ns();
    let delivered = eventually(
        "one successful delivery",
        || sink.delivered(),
        |c| !c.is_empty(),
    );
    assert_eq!(
        delivered[0].version.as_deref(),
        Some("5"),
        "the newest content wins"
    );
    eventually(
        "stale to be 0",
        || d.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
    d.passed(t);
    assert_eq!(
        sink.delivered().len(),
        1,
        "exactly one delivery after recovery: {:#?}",
        sink.delivered()
    );
    assert_eq!(d.status()["targets"][0]["stale"], false);
}

#[test]
fn a_then_failed_b_then_a_again_reloads_a() {
    let s = setup(&["--reload-retries", "0", "--min-reload-interval", "0"]);
    let (sink, d) = (&s.sink, &s.daemon);
    sink.set(Mode::Status(500));
    s.writer.write(&[("token", credential("B"))]).unwrap();
    eventually(
        "B's attempt to be given up",
        || d.status()["targets"][0]["state"].clone(),
        |st| st == "failed",
    );
    assert_eq!(
        sink.count(),
        1,
        "--reload-retries 0: one attempt per version"
    );
    assert_eq!(
        d.metric("stale", &[]),
        Some(1.0),
        "a failed version stays stale"
    );
    sink.set(Mode::Status(200));
    s.writer.write(&[("token", credential("1"))]).unwrap(); // back to A
    let delivered = eventually("A to be delivered", || sink.delivered(), |c| !c.is_empty());
    assert_eq!(
        delivered[0].version.as_deref(),
        Some("1"),
        "after a failed B the app's version is unknown"
    );
    eventually(
        "stale to be 0",
        || d.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
}

#[test]
fn reload_retries_bound_attempts_per_version_until_the_next_change() {
    let s = setup(&[
        "--reload-retries",
        "2",
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "100ms",
    ]);
    let (sink, d) = (&s.sink, &s.daemon);
    sink.set(Mode::Status(503));
    // No short resync here: a resync tries a version whose retries were used up again, which is
    // what this test says does not happen until then. Without one, the barrier is the swap's own
    // scan: it starts after `t` (taken before the swap, which is scanned at once), and the target
    // settles on it only once its retries are used up.
    let t = now_ns();
    s.writer.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the version to be reported failed",
        || d.status()["targets"][0]["state"].clone(),
        |st| st == "failed",
    );
    d.passed(t);
    assert_eq!(
        sink.count(),
        3,
        "first attempt + 2 retries, then nothing until the next change"
    );
    let status = d.status();
    let t = &status["targets"][0];
    assert_eq!(t["failed_attempts"], 3);
    assert!(
        t["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("answered 503, expected 200"),
        "{t}"
    );
    assert_eq!(t["stale"], true);
    assert!(t["stale_since"].is_string());
    sink.set(Mode::Status(200));
    s.writer.write(&[("token", credential("3"))]).unwrap();
    let delivered = eventually(
        "the next change to be delivered",
        || sink.delivered(),
        |c| !c.is_empty(),
    );
    assert_eq!(delivered[0].version.as_deref(), Some("3"));
}

#[test]
fn storm_of_swaps_gives_a_handful_of_calls_ending_with_the_final_content() {
    // Default --min-reload-interval 1s. The resyncs make a scan after the last swap certain (it
    // is scanned at once, maybe before the test reads the clock); they find the same content.
    let s = setup(&["--resync-interval", "1s"]);
    let start = std::time::Instant::now();
    for i in 2..=201 {
        s.writer
            .write(&[("token", credential(&i.to_string()))])
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let burst = start.elapsed();
    let t = now_ns();
    let calls = eventually(
        "the final content to be delivered",
        || s.sink.calls(),
        |c| {
            c.last()
                .is_some_and(|c| c.version.as_deref() == Some("201"))
        },
    );
    s.daemon.passed(t);
    let calls_after = s.sink.count();
    assert_eq!(calls_after, calls.len(), "nothing after the final content");
    let max = 2 + burst.as_secs() as usize + 1;
    assert!(
        calls.len() <= max,
        "200 swaps in {burst:?} gave {} calls (at most {max} expected)",
        calls.len()
    );
    assert!(
        calls.len() >= 2,
        "the first change is acted on at once, the rest coalesce: {}",
        calls.len()
    );
}

#[test]
fn method_headers_and_bearer_token_read_at_every_call() {
    let dir = tempdir();
    let token_file = dir.path().join("bearer");
    fs::write(&token_file, "first-token\n").unwrap();
    let s = setup(&[
        "--reload-method",
        "put",
        "--reload-header",
        "X-Reloaded-By: secret-reloader",
        "--reload-bearer-token-file",
        token_file.to_str().unwrap(),
        "--min-reload-interval",
        "0",
    ]);
    s.writer.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually("first call", || s.sink.calls(), |c| c.len() == 1);
    let header = |c: &crate::support::sink::Call, name: &str| {
        c.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(calls[0].method, "PUT");
    assert_eq!(calls[0].path, "/-/reload");
    assert_eq!(
        header(&calls[0], "x-reloaded-by").as_deref(),
        Some("secret-reloader")
    );
    assert_eq!(
        header(&calls[0], "authorization").as_deref(),
        Some("Bearer first-token")
    );
    fs::write(&token_file, "rotated-token\n").unwrap();
    s.writer.write(&[("token", credential("3"))]).unwrap();
    let calls = eventually("second call", || s.sink.calls(), |c| c.len() == 2);
    assert_eq!(
        header(&calls[1], "authorization").as_deref(),
        Some("Bearer rotated-token")
    );
    assert!(
        !s.daemon.log().contains("rotated-token"),
        "the token must not be logged"
    );
}

#[test]
fn configmap_reload_flags_and_environment_variables() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    sink.set(Mode::Status(202));
    let url = sink.url("/reload");
    // configmap-reload's own flags, with its meaning.
    let d = Daemon::start(&[
        "--volume-dir",
        vol.to_str().unwrap(),
        "--webhook-url",
        &url,
        "--webhook-method",
        "GET",
        "--webhook-status-code",
        "202",
        "--webhook-retries",
        "3",
    ]);
    d.wait_ready();
    writer.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually("a GET", || sink.delivered(), |c| c.len() == 1);
    assert_eq!(calls[0].method, "GET");
    drop(d);

    // The same through SECRET_RELOADER_* variables.
    let d = Daemon::start_with(
        &[],
        &[
            ("SECRET_RELOADER_WATCH", vol.to_str().unwrap()),
            ("SECRET_RELOADER_RELOAD_URL", &url),
            ("SECRET_RELOADER_RELOAD_EXPECTED_STATUS", "202"),
            ("SECRET_RELOADER_MIN_RELOAD_INTERVAL", "0"),
        ],
    );
    d.wait_ready();
    writer.write(&[("token", credential("3"))]).unwrap();
    let calls = eventually(
        "a call configured from the environment",
        || sink.delivered(),
        |c| c.len() == 2,
    );
    assert_eq!(calls[1].version.as_deref(), Some("3"));
    assert_eq!(calls[1].method, "POST");
}

#[test]
fn sigterm_during_retries_and_during_a_hanging_call_exits_0_promptly() {
    let mut s = setup(&["--reload-timeout", "60s", "--shutdown-grace", "1s"]);
    s.sink.set(Mode::Hang);
    s.writer.write(&[("token", credential("2"))]).unwrap();
    eventually("the hanging call", || s.sink.count(), |n| *n == 1);
    let t0 = std::time::Instant::now();
    let status = s.daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < DEADLINE / 2,
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert!(
        s.daemon.log().contains("shutdown grace period"),
        "{}",
        s.daemon.log()
    );

    let mut s = setup(&["--retry-backoff-max", "60s", "--min-reload-interval", "0"]);
    s.sink.set(Mode::Status(500));
    s.writer.write(&[("token", credential("2"))]).unwrap();
    eventually("a few failures", || failures(&s.daemon), |f| *f >= 3.0);
    let status = s.daemon.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn metrics_follow_changes_and_reloads() {
    let s = setup(&["--min-reload-interval", "0"]);
    let d = &s.daemon;
    let m = d.metrics();
    for name in [
        "secret_reloader_build_info",
        "secret_reloader_reloads_total",
        "secret_reloader_changes_total",
        "secret_reloader_stale",
        "secret_reloader_watched_files",
        "secret_reloader_watch_errors_total",
        "secret_reloader_polling",
    ] {
        assert!(m.contains(name), "{name} missing from:\n{m}");
    }
    s.writer
        .write(&[("token", credential("2")), ("extra", "x".into())])
        .unwrap();
    eventually("one delivery", || s.sink.count(), |n| *n == 1);
    let target = s.sink.url("/-/reload");
    let target = target.as_str();
    eventually(
        "success counted",
        || {
            d.metric(
                "reloads_total",
                &[("target", target), ("result", "success")],
            )
        },
        |v| *v == Some(1.0),
    );
    assert_eq!(
        d.metric("changes_total", &[("watch", "default")]),
        Some(1.0)
    );
    assert_eq!(
        d.metric("watched_files", &[("watch", "default")]),
        Some(2.0)
    );
    assert!(
        d.metric("last_change_timestamp_seconds", &[("watch", "default")])
            .unwrap()
            > 1.7e9
    );
    assert!(
        d.metric(
            "last_reload_success_timestamp_seconds",
            &[("target", target)]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        d.metric("reload_duration_seconds_count", &[("target", target)]),
        Some(1.0)
    );
    assert_eq!(
        d.metric("build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    let (code, _) = crate::support::http_get(d.addr, "/healthz").unwrap();
    assert_eq!(code, 200);
}
