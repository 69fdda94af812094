//! Verification after a reload: the target counts as having applied a version only when the
//! verify URL passes; a failing verification is a failed attempt, retried.

use crate::support::sink::{Mode, Sink};
use crate::support::{Daemon, Fixture, eventually};

#[test]
fn verify_failing_then_passing() {
    // A kubelet-style volume holding version 1, and the reload endpoint.
    let f = Fixture::new();
    let check = Sink::start();
    check.set(Mode::Status(503));
    let (reload_url, verify_url) = (f.url(), check.url("/-/ready"));
    let d = Daemon::start(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &reload_url,
        "--verify-url",
        &verify_url,
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "300ms",
    ]);
    d.wait_ready();
    let target = reload_url.as_str();
    f.rotate("2");
    eventually(
        "a failed verification",
        || d.metric("verify_total", &[("target", target), ("result", "failure")]),
        |v| v.is_some_and(|v| v >= 1.0),
    );
    assert!(
        check.count() >= 5,
        "five probes per verification: {}",
        check.count()
    );
    let status = d.status();
    let t = &status["targets"][0];
    assert_eq!(
        t["stale"], true,
        "not applied while verification fails: {t}"
    );
    assert!(
        t["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("verification failed after 5 probes"),
        "{t}"
    );
    assert!(
        t["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("answered 503"),
        "{t}"
    );
    check.set(Mode::Status(200));
    eventually(
        "stale to clear",
        || d.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
    assert_eq!(
        d.metric("verify_total", &[("target", target), ("result", "success")]),
        Some(1.0)
    );
    let detail = d.status()["targets"][0]["last_attempt"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("verified: GET"), "{detail}");
}

#[test]
fn verify_contains_must_find_its_text() {
    // A kubelet-style volume holding version 1, and the reload endpoint.
    let f = Fixture::new();
    let check = Sink::start(); // answers "ok\n"
    let (reload_url, verify_url) = (f.url(), check.url("/healthz"));
    let args = |text: &'static str| {
        vec![
            "--watch".to_string(),
            f.vol().to_string(),
            "--reload-url".into(),
            reload_url.clone(),
            "--verify-url".into(),
            verify_url.clone(),
            "--verify-contains".into(),
            text.into(),
            "--reload-retries".into(),
            "0".into(),
        ]
    };
    let wrong: Vec<String> = args("ready");
    let right: Vec<String> = args("ok");
    let wrong = Daemon::start(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    let right = Daemon::start(&right.iter().map(String::as_str).collect::<Vec<_>>());
    wrong.wait_ready();
    right.wait_ready();
    f.rotate("2");
    eventually(
        "the right text to verify",
        || right.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
    let st = eventually(
        "the wrong text to fail",
        || wrong.status(),
        |s| s["targets"][0]["state"] == "failed",
    );
    assert!(
        st["targets"][0]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("without the expected text")
    );
    assert_eq!(wrong.metric("stale", &[]), Some(1.0));
}

#[test]
fn verify_json_on_an_answer_that_is_not_json_fails_saying_so() {
    // A kubelet-style volume holding version 1, and the reload endpoint.
    let f = Fixture::new();
    let check = Sink::start(); // answers "ok\n"
    let (reload_url, verify_url) = (f.url(), check.url("/healthz"));
    let d = Daemon::start(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &reload_url,
        "--verify-url",
        &verify_url,
        "--verify-json",
        "/ready == true",
        "--reload-retries",
        "0",
    ]);
    d.wait_ready();
    f.rotate("2");
    let st = eventually(
        "the verification to fail",
        || d.status(),
        |s| s["targets"][0]["state"] == "failed",
    );
    let msg = st["targets"][0]["last_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "GET {verify_url} answered 200: the answer is not JSON ("
        )),
        "{msg}"
    );
    assert_eq!(
        st["config"]["groups"][0]["targets"][0]["verify"]["json"],
        serde_json::json!(["/ready == true"]),
        "{st}"
    );
    assert_eq!(d.metric("stale", &[]), Some(1.0));
}
