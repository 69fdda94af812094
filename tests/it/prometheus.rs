//! A real Prometheus server (Debian's `prometheus` package): one scraping the daemon every
//! second (the target is up, and when a kubelet-style Secret rotates, the reload shows up in what
//! Prometheus stored, read back through its HTTP API); one reloaded by SIGHUP and verified by what
//! it reports of its own reload (`--verify-json` on `/api/v1/status/runtimeinfo`). Everything on
//! 127.0.0.1; Prometheus gets its own storage directory and an ephemeral port, and is killed with
//! its daemon.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::process::doctor;
use crate::support::prometheus::{Prometheus, START_DEADLINE, Sighupped, prometheus_yml};
use crate::support::sink::Sink;
use crate::support::{
    AtomicWriter, Daemon, credential, daemon_beside, eventually, eventually_within, http_get,
    tempdir,
};

#[test]
fn prometheus_scrapes_the_daemon_and_sees_a_rotation_reloaded() {
    let dir = tempdir();
    let vol = dir.path().join("secret");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let url = sink.url("/-/reload");
    let daemon = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
    ]);
    daemon.wait_ready();
    let target_label = format!("http://{}/-/reload", sink.addr);
    let successes = format!(
        "secret_reloader_reloads_total{{job=\"secret-reloader\",result=\"success\",target=\"{target_label}\"}}"
    );

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom = Prometheus::start(&prom_dir, daemon.addr);

    prom.wait_until("the target to be up", START_DEADLINE, || {
        prom.value("up{job=\"secret-reloader\"}") == Some(1.0)
    });
    // Prometheus has stored the counter before the rotation: 0, nothing reloaded yet.
    prom.wait_until(
        "the reload counter before the rotation",
        START_DEADLINE,
        || prom.value(&successes).is_some(),
    );
    assert_eq!(prom.value(&successes), Some(0.0));
    assert_eq!(
        prom.value("secret_reloader_build_info{job=\"secret-reloader\"}"),
        Some(1.0)
    );

    writer.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually("the reload call", || sink.delivered(), |c| !c.is_empty());
    assert_eq!(calls[0].version.as_deref(), Some("2"));

    // What Prometheus scraped moved: the counter went from 0 to 1 within its own history.
    prom.wait_until("Prometheus to see the reload", START_DEADLINE, || {
        prom.value(&successes) == Some(1.0)
    });
    assert_eq!(
        prom.value(&format!(
            "max_over_time({successes}[10m]) - min_over_time({successes}[10m])"
        )),
        Some(1.0),
        "Prometheus holds the counter before and after the rotation"
    );
    let changes = "secret_reloader_changes_total{job=\"secret-reloader\",watch=\"default\"}";
    prom.wait_until("the change to be counted", START_DEADLINE, || {
        prom.value(changes) == Some(1.0)
    });
    // Waited for too: a scrape may fall between two updates of the daemon's bookkeeping.
    let durations = format!(
        "secret_reloader_reload_duration_seconds_count{{job=\"secret-reloader\",target=\"{target_label}\"}}"
    );
    prom.wait_until(
        "the reload's duration to be recorded",
        START_DEADLINE,
        || prom.value(&durations) == Some(1.0),
    );
    let stale =
        format!("secret_reloader_stale{{job=\"secret-reloader\",target=\"{target_label}\"}}");
    prom.wait_until("the target not to be stale", START_DEADLINE, || {
        prom.value(&stale) == Some(0.0)
    });
    assert_eq!(
        prom.value("up{job=\"secret-reloader\"}"),
        Some(1.0),
        "still up"
    );
}

/// What Prometheus at `addr` reports of itself (`Null` while it does not answer).
fn runtimeinfo(addr: std::net::SocketAddr) -> serde_json::Value {
    match http_get(addr, "/api/v1/status/runtimeinfo") {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

#[test]
fn verify_json_holds_a_sighupped_prometheus_to_what_it_reports_of_its_reload() {
    let dir = tempdir();
    let p = Sighupped::new(dir.path());
    let (vol, writer, addr) = (&p.vol, &p.writer, p.addr);
    let verify_url = format!("http://{addr}/api/v1/status/runtimeinfo");
    let flags = [
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        "prometheus",
        "--verify-url",
        &verify_url,
        "--verify-json",
        "/data/reloadConfigSuccess == true",
        "--verify-json",
        "/data/lastConfigTime >= $CHANGE",
    ];
    // The doctor's look at the verify URL (one GET), with the daemon's own flags.
    let doctor_says = || {
        let (_, text, json) = doctor(&[&["--standalone"][..], &flags].concat());
        let check = json["groups"][0]["targets"][0]["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["what"] == "verify endpoint").cloned());
        let check = check.unwrap_or_else(|| panic!("no verify check:\n{text}"));
        (
            check["ok"] == true,
            check["detail"].as_str().unwrap().to_string(),
        )
    };
    let tuning = ["--min-reload-interval", "0", "--retry-backoff-max", "1s"];
    let d = daemon_beside(&p.command, &[&flags[..], &tuning].concat());
    d.wait_ready();
    let log = || p.log();
    let info = eventually_within(
        "Prometheus to answer",
        START_DEADLINE,
        || (runtimeinfo(addr), log()),
        |(info, _)| info["data"]["reloadConfigSuccess"] == true,
    )
    .0;
    // lastConfigTime counts whole seconds: a change in the second of Prometheus's first load
    // would not be after it. The rotation comes in a later second (the test's input).
    let loaded = info["data"]["lastConfigTime"].as_str().unwrap().to_string();
    let loaded = humantime::parse_rfc3339(&loaded).unwrap();
    eventually(
        "a second after Prometheus's first load",
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        },
        |now| *now > loaded.duration_since(UNIX_EPOCH).unwrap().as_secs(),
    );

    // A configuration Prometheus refuses: SIGHUP'd, it keeps the old one and says so.
    writer
        .write(&[(
            "prometheus.yml",
            "global:\n  scrape_interval: banana\n".to_string(),
        )])
        .unwrap();
    let st = eventually_within(
        "the verification to fail on what Prometheus reports",
        START_DEADLINE,
        || (d.status(), log()),
        |(s, _)| {
            s["targets"][0]["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("/data/reloadConfigSuccess is false, want == true"))
        },
    )
    .0;
    let t = &st["targets"][0];
    let msg = t["last_error"]["message"].as_str().unwrap();
    assert!(msg.contains("verification failed after 5 probes"), "{msg}");
    assert!(
        msg.contains(&format!("GET {verify_url} answered 200: ")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "/data/lastConfigTime is \"{}\", want >= $CHANGE (",
            info["data"]["lastConfigTime"].as_str().unwrap()
        )),
        "the time of the first load, before the change: {msg}"
    );
    assert_eq!(t["stale"], true, "{t}");
    assert!(
        d.metric("verify_total", &[("result", "failure")])
            .is_some_and(|v| v >= 1.0)
    );
    assert_eq!(runtimeinfo(addr)["data"]["reloadConfigSuccess"], false);
    let (ok, detail) = doctor_says();
    assert!(!ok, "{detail}");
    assert!(
        detail.contains("/data/reloadConfigSuccess is false, want == true"),
        "{detail}"
    );

    // Fixed: Prometheus loads it and reports so; the target holds the version.
    writer
        .write(&[("prometheus.yml", prometheus_yml("3"))])
        .unwrap();
    let st = eventually_within(
        "the fixed configuration to be verified",
        START_DEADLINE,
        || (d.status(), log()),
        |(s, _)| s["targets"][0]["stale"] == false,
    )
    .0;
    let detail = st["targets"][0]["last_attempt"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("verified: GET")
            && detail
                .contains(": /data/reloadConfigSuccess == true, /data/lastConfigTime >= $CHANGE"),
        "{detail}"
    );
    let info = runtimeinfo(addr);
    assert_eq!(info["data"]["reloadConfigSuccess"], true, "{info}");
    assert_eq!(d.metric("stale", &[]), Some(0.0));
    assert!(
        d.metric("verify_total", &[("result", "success")])
            .is_some_and(|v| v >= 1.0)
    );
    let (ok, detail) = doctor_says();
    assert!(ok, "{detail}");
    assert!(
        detail.ends_with(": /data/reloadConfigSuccess == true, /data/lastConfigTime >= $CHANGE"),
        "{detail}"
    );
}
