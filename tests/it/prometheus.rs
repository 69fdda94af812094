//! A real Prometheus server (Debian's `prometheus` package) scraping the daemon every second: the
//! target is up, and when a kubelet-style Secret rotates, the reload shows up in what Prometheus
//! stored, read back through its HTTP API. Everything on 127.0.0.1; Prometheus gets its own
//! storage directory and an ephemeral port, and is killed on drop.

use crate::support::prometheus::{Prometheus, START_DEADLINE};
use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, credential, eventually, tempdir};

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
