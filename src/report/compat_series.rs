//! Other tools' metric series, computed from the daemon's own atomics when `--compat-metrics`
//! asks for them, so that dashboards and alerts written for those tools keep working:
//!
//! - prometheus-config-reloader's `reloader_*` (no labels: one daemon, one set of series), which
//!   the kube-prometheus alert `ConfigReloaderSidecarErrors` reads
//!   (`max_over_time(reloader_last_reload_successful[5m]) == 0`);
//! - configmap-reload's `configmap_reload_*`, labelled `webhook` with the target's name, for
//!   HTTP targets (the only kind configmap-reload has).
//!
//! What each series means here is written next to it; where the daemon's model differs (several
//! targets, retries), the series says what the original's users read it as.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus::proto::{MetricFamily, MetricType};

use super::family::{counter, gauge, named};
use super::metrics::{Label, Metrics, TargetMetrics};
use crate::lock;

/// The families `--compat-metrics` asks for.
pub(super) fn families(m: &Metrics, targets: &[Arc<TargetMetrics>]) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let watch_errors: u64 = m.watch_errors.total();
    if m.compat.prometheus_config_reloader {
        out.extend(prometheus_config_reloader(m, targets, watch_errors));
    }
    if m.compat.configmap_reload {
        out.extend(configmap_reload(targets, watch_errors));
    }
    out
}

fn prometheus_config_reloader(
    m: &Metrics,
    targets: &[Arc<TargetMetrics>],
    watch_errors: u64,
) -> Vec<MetricFamily> {
    let successes: u64 = targets.iter().map(|t| t.successes.load(Relaxed)).sum();
    let failures: u64 = targets.iter().map(|t| t.failures.load(Relaxed)).sum();
    let failing = targets.iter().any(|t| t.last_failed.load(Relaxed));
    let last_success = targets
        .iter()
        .filter(|t| t.successes.load(Relaxed) > 0)
        .map(|t| t.last_success.get())
        .fold(0.0, f64::max);
    let one = |name: &str, help: &str, kind, value: f64| {
        let metric = match kind {
            MetricType::COUNTER => counter(&[], value as u64),
            _ => gauge(&[], value),
        };
        named(format!("reloader_{name}"), help, kind, vec![metric])
    };
    vec![
        one(
            "reloads_total",
            "Reload actions, every target's (prometheus-config-reloader's series).",
            MetricType::COUNTER,
            (successes + failures) as f64,
        ),
        one(
            "reloads_failed_total",
            "Reload actions that failed, every target's (prometheus-config-reloader's series).",
            MetricType::COUNTER,
            failures as f64,
        ),
        one(
            "last_reload_successful",
            "0 while the last action of some target failed, 1 otherwise (prometheus-config-reloader's series).",
            MetricType::GAUGE,
            if failing { 0.0 } else { 1.0 },
        ),
        one(
            "last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload of any target, 0 before one (prometheus-config-reloader's series).",
            MetricType::GAUGE,
            last_success,
        ),
        one(
            "watches",
            "Paths watched (prometheus-config-reloader's series).",
            MetricType::GAUGE,
            m.watched_paths.load(Relaxed) as f64,
        ),
        one(
            "watch_events_total",
            "inotify events read (prometheus-config-reloader's series).",
            MetricType::COUNTER,
            m.watch_events.load(Relaxed) as f64,
        ),
        one(
            "watch_errors_total",
            "Watch problems of every kind (prometheus-config-reloader's series).",
            MetricType::COUNTER,
            watch_errors as f64,
        ),
    ]
}

fn webhook(t: &TargetMetrics) -> [(&str, &str); 1] {
    [("webhook", t.name.as_str())]
}

fn configmap_reload(targets: &[Arc<TargetMetrics>], watch_errors: u64) -> Vec<MetricFamily> {
    let calls: Vec<_> = targets
        .iter()
        .filter_map(|t| t.calls.as_ref().map(|c| (t, c)))
        .collect();
    let acted = |t: &TargetMetrics| t.successes.load(Relaxed) + t.failures.load(Relaxed) > 0;
    let family = |name: &str, help: &str, kind, metrics| {
        named(format!("configmap_reload_{name}"), help, kind, metrics)
    };
    vec![
        family(
            "last_reload_error",
            "1 when the last reload call failed, 0 when it succeeded (configmap-reload's series).",
            MetricType::GAUGE,
            calls
                .iter()
                .filter(|(t, _)| acted(t))
                .map(|(t, _)| {
                    gauge(
                        &webhook(t),
                        if t.last_failed.load(Relaxed) {
                            1.0
                        } else {
                            0.0
                        },
                    )
                })
                .collect(),
        ),
        family(
            "last_request_duration_seconds",
            "Duration of the last successful reload call (configmap-reload's series).",
            MetricType::GAUGE,
            calls
                .iter()
                .filter(|(t, _)| t.successes.load(Relaxed) > 0)
                .map(|(t, _)| gauge(&webhook(t), t.last_success_duration.get()))
                .collect(),
        ),
        family(
            "success_reloads_total",
            "Successful reload calls (configmap-reload's series).",
            MetricType::COUNTER,
            calls
                .iter()
                .map(|(t, _)| counter(&webhook(t), t.successes.load(Relaxed)))
                .collect(),
        ),
        family(
            "request_errors_total",
            "Failed reload calls by reason: client_request_do (no answer), client_response (another status), verification (configmap-reload's series; verification is this daemon's).",
            MetricType::COUNTER,
            calls
                .iter()
                .flat_map(|(t, c)| {
                    c.failures.counts().map(|(why, n)| {
                        counter(&[("webhook", t.name.as_str()), ("reason", why.as_str())], n)
                    })
                })
                .collect(),
        ),
        family(
            "requests_total",
            "Reload calls answered, by status code (configmap-reload's series).",
            MetricType::COUNTER,
            calls
                .iter()
                .flat_map(|(t, c)| {
                    lock(&c.statuses)
                        .iter()
                        .map(|(status, n)| {
                            counter(
                                &[
                                    ("webhook", t.name.as_str()),
                                    ("status_code", &status.to_string()),
                                ],
                                *n,
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
        family(
            "watcher_errors_total",
            "Watch problems of every kind (configmap-reload's series).",
            MetricType::COUNTER,
            vec![counter(&[], watch_errors)],
        ),
    ]
}
