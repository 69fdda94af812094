//! Drop-in for prometheus-config-reloader and configmap-reload: their command lines run against
//! real apps (Debian's Prometheus reloaded over HTTP and by SIGHUP, a real HTTP endpoint), and
//! their metric series come out of a real scrape — then feed the kube-prometheus alert
//! `ConfigReloaderSidecarErrors` under `promtool test rules`. Also `/startupz`, the startup probe
//! of the native-sidecar layout.

use std::fs;
use std::process::Command;

use crate::support::prometheus::{
    Prometheus, START_DEADLINE, Sighupped, prometheus_binary, prometheus_yml,
};
use crate::support::sink::Mode;
use crate::support::{
    AtomicWriter, Daemon, Fixture, daemon_beside, eventually, http_get, metric, open_dir, tempdir,
};

/// A configuration Prometheus refuses to load (its `/-/reload` answers 500).
const BROKEN_YML: &str = "global:\n  scrape_interval: banana\n";

/// The configuration Prometheus at `addr` runs with (empty while it does not answer).
fn loaded_config(addr: std::net::SocketAddr) -> String {
    let Ok((200, body)) = http_get(addr, "/api/v1/status/config") else {
        return String::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["yaml"].as_str().unwrap_or_default().to_string()
}

/// kube-prometheus's alert on prometheus-config-reloader's series, as it ships (the
/// `config-reloaders` group of kube-prometheus-stack).
const CONFIG_RELOADERS_RULES: &str = r#"groups:
  - name: config-reloaders
    rules:
      - alert: ConfigReloaderSidecarErrors
        annotations:
          description: Errors encountered while the {{$labels.pod}} config-reloader sidecar attempts to sync config in {{$labels.namespace}} namespace.
          summary: config-reloader sidecar has not had a successful reload for 10m
        expr: max_over_time(reloader_last_reload_successful{namespace=~".+"}[5m]) == 0
        for: 10m
        labels:
          severity: warning
"#;

#[test]
fn prometheus_config_reloader_flags_reload_a_real_prometheus_and_feed_its_alert() {
    let dir = tempdir();
    let vol = dir.path().join("config");
    let writer = AtomicWriter::new(&vol);
    writer
        .write(&[("prometheus.yml", prometheus_yml("1"))])
        .unwrap();
    let prom = Prometheus::start_with(
        &vol.join("prometheus.yml"),
        &dir.path().join("data"),
        &["--web.enable-lifecycle"],
    );
    assert!(loaded_config(prom.addr).contains("rev: \"1\""));

    // The container args prometheus-config-reloader is given, unchanged (the listen address on
    // an ephemeral port of the loopback).
    let d = Daemon::start_exact(&[
        "--watched-dir",
        vol.to_str().unwrap(),
        "--reload-url",
        &format!("http://{}/-/reload", prom.addr),
        "--reload-method=http",
        "--watch-interval=3m0s",
        "--delay-interval=1s",
        "--log-format=logfmt",
        "--log-level=info",
        "--listen-address=127.0.0.1:0",
    ]);
    d.wait_ready();
    let scrape = |name: &str| metric(&d.metrics(), name, &[]);
    // Its series are there from the start, with nothing failed.
    for name in [
        "reloader_reloads_total",
        "reloader_reloads_failed_total",
        "reloader_last_reload_success_timestamp_seconds",
        "reloader_watch_events_total",
        "reloader_watch_errors_total",
    ] {
        assert!(scrape(name).is_some(), "{name} missing:\n{}", d.metrics());
    }
    assert_eq!(scrape("reloader_watches"), Some(1.0));
    assert_eq!(scrape("reloader_last_reload_successful"), Some(1.0));
    let before = scrape("reloader_reloads_total").unwrap();

    // A rotation: Prometheus loads it, the reload is counted as prometheus-config-reloader counts.
    writer
        .write(&[("prometheus.yml", prometheus_yml("2"))])
        .unwrap();
    prom.wait_until("Prometheus to load rev 2", START_DEADLINE, || {
        loaded_config(prom.addr).contains("rev: \"2\"")
    });
    let ok = eventually(
        "the reload counted",
        || {
            (
                scrape("reloader_reloads_total"),
                scrape("reloader_last_reload_successful"),
            )
        },
        |(n, ok)| n.is_some_and(|n| n > before) && *ok == Some(1.0),
    );
    assert!(scrape("reloader_watch_events_total").unwrap() >= 1.0);
    assert!(scrape("reloader_last_reload_success_timestamp_seconds").unwrap() > 1.7e9);

    // A configuration Prometheus refuses: /-/reload answers 500, the reload failed.
    writer.write(&[("prometheus.yml", BROKEN_YML)]).unwrap();
    let failing = eventually(
        "the failed reload",
        || {
            (
                scrape("reloader_last_reload_successful"),
                scrape("reloader_reloads_failed_total"),
            )
        },
        |(ok, failed)| *ok == Some(0.0) && failed.is_some_and(|f| f >= 1.0),
    );
    assert!(
        loaded_config(prom.addr).contains("rev: \"2\""),
        "Prometheus kept rev 2"
    );

    // Fixed: the next attempt (its backoff) succeeds.
    writer
        .write(&[("prometheus.yml", prometheus_yml("4"))])
        .unwrap();
    prom.wait_until("Prometheus to load rev 4", START_DEADLINE, || {
        loaded_config(prom.addr).contains("rev: \"4\"")
    });
    let fixed = eventually(
        "the reload to succeed again",
        || scrape("reloader_last_reload_successful"),
        |ok| *ok == Some(1.0),
    );
    let (_, ok_value) = ok;
    let (fail_value, _) = failing;

    // The alert, fed by what was scraped: 20 minutes of the failing scrape's value, then 20 of
    // the fixed one, with the namespace and pod labels a PodMonitor adds.
    let series = |v: Option<f64>| format!("{}x19", v.unwrap());
    let labels = r#"{namespace="monitoring",pod="prometheus-k8s-0",job="prometheus-k8s"}"#;
    let tests = format!(
        r#"rule_files: [config-reloaders.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'reloader_last_reload_successful{labels}'
        values: '{before_fail} {fail} {fixed}'
    alert_rule_test:
      - {{eval_time: 0m, alertname: ConfigReloaderSidecarErrors, exp_alerts: []}}
      - {{eval_time: 9m, alertname: ConfigReloaderSidecarErrors, exp_alerts: []}}
      - eval_time: 18m
        alertname: ConfigReloaderSidecarErrors
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: monitoring, pod: prometheus-k8s-0, job: prometheus-k8s}}
            exp_annotations:
              description: Errors encountered while the prometheus-k8s-0 config-reloader sidecar attempts to sync config in monitoring namespace.
              summary: config-reloader sidecar has not had a successful reload for 10m
      - {{eval_time: 30m, alertname: ConfigReloaderSidecarErrors, exp_alerts: []}}
"#,
        before_fail = ok_value.unwrap(),
        fail = series(fail_value),
        fixed = series(fixed),
    );
    let rules_dir = dir.path().join("rules");
    fs::create_dir(&rules_dir).unwrap();
    fs::write(
        rules_dir.join("config-reloaders.rules.yml"),
        CONFIG_RELOADERS_RULES,
    )
    .unwrap();
    fs::write(rules_dir.join("tests.yml"), &tests).unwrap();
    let promtool = prometheus_binary().with_file_name("promtool");
    let out = Command::new(&promtool)
        .args(["test", "rules", "tests.yml"])
        .current_dir(&rules_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}\n{tests}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_reloader_signal_method_sighups_prometheus() {
    let dir = tempdir();
    let p = Sighupped::new(dir.path());
    let (vol, writer, addr) = (&p.vol, &p.writer, p.addr);
    // Beside the daemon in one PID namespace, as in a pod with shareProcessNamespace: no
    // --process-executable-name, so its default, `prometheus`.
    let d = daemon_beside(
        &p.command,
        &[
            "--watched-dir",
            vol.to_str().unwrap(),
            "--reload-method=signal",
            "--min-reload-interval=0",
        ],
    );
    d.wait_ready();
    let log = || p.log();
    eventually(
        "Prometheus to be ready",
        || (http_get(addr, "/-/ready").map(|r| r.0).unwrap_or(0), log()),
        |(code, _)| *code == 200,
    );
    assert!(loaded_config(addr).contains("rev: \"1\""));

    writer
        .write(&[("prometheus.yml", prometheus_yml("2"))])
        .unwrap();
    eventually(
        "Prometheus to load rev 2 on SIGHUP",
        || (loaded_config(addr), d.log(), log()),
        |(config, _, _)| config.contains("rev: \"2\""),
    );
    let scrape = |name: &str| metric(&d.metrics(), name, &[]);
    eventually(
        "the signal counted as a reload",
        || {
            (
                scrape("reloader_reloads_total"),
                scrape("reloader_last_reload_successful"),
            )
        },
        |(n, ok)| *n == Some(1.0) && *ok == Some(1.0),
    );
    let status = d.status();
    assert_eq!(status["targets"][0]["kind"], "signal", "{status}");
    assert!(
        status["targets"][0]["name"]
            .as_str()
            .is_some_and(|n| n.contains("prometheus")),
        "{status}"
    );
}

#[test]
fn configmap_reload_flags_export_its_series_through_success_and_failure() {
    let f = Fixture::new();
    let url = f.url();
    let d = Daemon::start_exact(&[
        "--volume-dir",
        f.vol(),
        "--webhook-url",
        &url,
        "--webhook-method=POST",
        "--webhook-status-code=200",
        "--web.listen-address=127.0.0.1:0",
        "--min-reload-interval=0",
        "--retry-backoff-max=200ms",
        "--reload-timeout=1s",
    ]);
    d.wait_ready();
    let hook = format!("http://{}/-/reload", f.sink.addr);
    let m = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("webhook", hook.as_str())];
        labels.extend_from_slice(extra);
        metric(&d.metrics(), &format!("configmap_reload_{name}"), &labels)
    };

    f.rotate("2");
    eventually(
        "the webhook call counted",
        || {
            (
                m("success_reloads_total", &[]),
                m("requests_total", &[("status_code", "200")]),
            )
        },
        |(ok, by_status)| *ok == Some(1.0) && *by_status == Some(1.0),
    );
    assert_eq!(m("last_reload_error", &[]), Some(0.0));
    assert!(m("last_request_duration_seconds", &[]).is_some_and(|s| s > 0.0 && s < 10.0));
    assert_eq!(
        metric(&d.metrics(), "configmap_reload_watcher_errors_total", &[]),
        Some(0.0)
    );
    // Only configmap-reload's flags were used: prometheus-config-reloader's series stay out.
    assert!(!d.metrics().contains("\nreloader_"), "{}", d.metrics());

    // The app answers 500: a client_response error, the status counted.
    f.sink.set(Mode::Status(500));
    f.rotate("3");
    eventually(
        "the failed webhook call counted",
        || {
            (
                m("last_reload_error", &[]),
                m("request_errors_total", &[("reason", "client_response")]),
                m("requests_total", &[("status_code", "500")]),
            )
        },
        |(err, n, by_status)| {
            *err == Some(1.0) && n.is_some_and(|n| n >= 1.0) && by_status.is_some_and(|n| n >= 1.0)
        },
    );
    // The app hangs: no answer within --reload-timeout, a client_request_do error.
    f.sink.set(Mode::Hang);
    eventually(
        "a call without an answer counted",
        || m("request_errors_total", &[("reason", "client_request_do")]),
        |n| n.is_some_and(|n| n >= 1.0),
    );
    // Back: the retried version lands.
    f.sink.set(Mode::Status(200));
    eventually(
        "the retry to land",
        || (m("last_reload_error", &[]), m("success_reloads_total", &[])),
        |(err, ok)| *err == Some(0.0) && *ok == Some(2.0),
    );
}

#[test]
fn compat_series_only_when_asked_for_or_their_flags_used() {
    let f = Fixture::new();
    let url = f.url();
    let plain = Daemon::start(&["--watch", f.vol(), "--reload-url", &url]);
    plain.wait_ready();
    let text = plain.metrics();
    assert!(text.contains("secret_reloader_reloads_total"), "{text}");
    assert!(
        !text.contains("\nreloader_") && !text.contains("configmap_reload_"),
        "{text}"
    );

    let asked = Daemon::start(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &url,
        "--compat-metrics",
        "prometheus-config-reloader,configmap-reload",
    ]);
    asked.wait_ready();
    let text = asked.metrics();
    assert!(
        text.contains("\nreloader_last_reload_successful 1\n"),
        "{text}"
    );
    assert!(
        text.contains("configmap_reload_success_reloads_total{"),
        "{text}"
    );
}

#[test]
fn startupz_passes_once_every_watched_path_is_there_for_the_app() {
    let dir = open_dir();
    let vol = dir.path().join("tls");
    let startup = |d: &Daemon| http_get(d.addr, "/startupz").unwrap();

    // Nothing mounted yet (the volume appears later): 503, saying which path.
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--exec",
        "true",
        "--app-uid",
        "4242",
        "--app-gid",
        "4242",
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();
    let (code, body) = startup(&d);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(vol.to_str().unwrap()), "{body}");

    // Mounted, but the key is 0400 root: the app (4242) cannot read it.
    let writer = AtomicWriter::new(&vol);
    let key = |mode| {
        std::collections::BTreeMap::from([(
            "tls.key".to_string(),
            secret_reloader::demo::atomic_writer::Key {
                data: b"not a real key\n".to_vec(),
                mode,
            },
        )])
    };
    writer.write_keys(&key(0o400)).unwrap();
    let (code, body) = eventually(
        "/startupz to name the unreadable file",
        || startup(&d),
        |(code, body)| *code == 503 && body.contains("the app cannot read"),
    );
    assert!(body.contains("tls.key"), "{code} {body}");

    // defaultMode 0444: readable by the app, the probe passes.
    writer.write_keys(&key(0o444)).unwrap();
    let (_, body) = eventually(
        "/startupz to pass",
        || startup(&d),
        |(code, _)| *code == 200,
    );
    assert!(body.starts_with("started"), "{body}");
    // And it is no latch: the path going away fails it again.
    fs::remove_dir_all(&vol).unwrap();
    eventually(
        "/startupz to fail again",
        || startup(&d),
        |(code, _)| *code == 503,
    );
}
