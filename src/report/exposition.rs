//! The Prometheus text exposition of [`Metrics`]: the atomics of every group, target and the admin
//! server turned into metric families when `/metrics` is scraped (the `prometheus` crate's data
//! model and text encoder do the rest). Label pairs are written in name order, as registries do.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use super::metrics::{BUCKETS, DropReason, GroupMetrics, Metrics, TargetMetrics, WatchErrorKind};
use super::samples::{counter, gauge, labelled, named};
use super::status::TargetState;
use crate::lock;

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let text = self.families().buf;
        LAST_LEN.store(text.len(), Relaxed);
        String::from_utf8(text).unwrap_or_default()
    }

    /// Every family, each encoded as soon as it is made: a scrape of thousands of groups holds
    /// one family's data model at a time, not all of them.
    fn families(&self) -> Emit {
        // Sized as the last one was: no copy of a buffer of megabytes at each doubling.
        let last = LAST_LEN.load(Relaxed);
        let mut out = Emit {
            buf: Vec::with_capacity(last + last / 8),
        };
        let g = lock(&self.groups).clone();
        let t = lock(&self.targets).clone();
        out.push(family(
            "build_info",
            "Always 1; the version is a label.",
            MetricType::GAUGE,
            vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ));
        out.push(family(
            "reloads_total",
            "Reload actions by target and result.",
            MetricType::COUNTER,
            t.iter()
                .flat_map(|t| {
                    [
                        counter(
                            &[("target", &t.name), ("result", "success")],
                            t.successes.load(Relaxed),
                        ),
                        counter(
                            &[("target", &t.name), ("result", "failure")],
                            t.failures.load(Relaxed),
                        ),
                    ]
                })
                .collect(),
        ));
        out.push(family(
            "reload_duration_seconds",
            "Duration of reload actions.",
            MetricType::HISTOGRAM,
            t.iter().map(|t| histogram(t)).collect(),
        ));
        out.push(family(
            "last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload.",
            MetricType::GAUGE,
            t.iter()
                .filter(|t| t.successes.load(Relaxed) > 0)
                .map(|t| gauge(&[("target", &t.name)], t.last_success.get()))
                .collect(),
        ));
        out.push(family(
            "stale",
            "1 while the target does not hold the content on disk (held-back content included).",
            MetricType::GAUGE,
            t.iter()
                .map(|t| gauge(&[("target", &t.name)], flag(&t.stale)))
                .collect(),
        ));
        let versions: Vec<Metric> = if self.shared_versions.load(Relaxed) {
            t.iter()
                .filter_map(|t| {
                    let v = (*lock(&t.applied))?.short();
                    Some(gauge(&[("target", &t.name), ("version", &v)], 1.0))
                })
                .collect()
        } else {
            Vec::new()
        };
        out.push(family(
            "applied_version_info",
            "1 per target, labelled with the version it holds as a short keyed fingerprint; only with --fingerprint-key-file, so that replicas sharing the key compare.",
            MetricType::GAUGE,
            versions,
        ));
        out.push(family(
            "target_state",
            "1 for the state the target's reconciler is in (idle, acting, coalescing, waiting, retrying, failed, held).",
            MetricType::GAUGE,
            t.iter()
                .flat_map(|t| {
                    let current = t.state.load(Relaxed) as usize;
                    TargetState::ALL.iter().enumerate().map(move |(i, s)| {
                        gauge(
                            &[("target", &t.name), ("state", s.as_str())],
                            if i == current { 1.0 } else { 0.0 },
                        )
                    })
                })
                .collect(),
        ));
        out.push(family(
            "environment_stale",
            "1 while the app's environment holds another value of a key than the file (--consumed-as env): only a restart applies it.",
            MetricType::GAUGE,
            t.iter()
                .filter(|t| flag(&t.environment.0) > 0.0)
                .map(|t| gauge(&[("target", &t.name)], flag(&t.environment.1)))
                .collect(),
        ));
        out.push(family(
            "signal_target_ambiguous",
            "1 while several unrelated processes match a signal target's selector (nothing is signalled).",
            MetricType::GAUGE,
            t.iter()
                .map(|t| gauge(&[("target", &t.name)], flag(&t.ambiguous)))
                .collect(),
        ));
        let looked = |t: &&std::sync::Arc<TargetMetrics>| {
            t.served.as_ref().is_some_and(|s| flag(&s.0) > 0.0)
        };
        out.push(family(
            "served_certificate_match",
            "1 when the certificate the app serves is the one on disk (--verify-served-cert), 0 when it differs.",
            MetricType::GAUGE,
            t.iter()
                .filter(looked)
                .filter_map(|t| t.served.as_ref().map(|s| gauge(&[("target", &t.name)], flag(&s.1))))
                .collect(),
        ));
        out.push(family(
            "served_certificate_expiry_timestamp_seconds",
            "Expiry of the certificate the app serves (--verify-served-cert), Unix seconds.",
            MetricType::GAUGE,
            t.iter()
                .filter(looked)
                .filter_map(|t| {
                    t.served
                        .as_ref()
                        .map(|s| gauge(&[("target", &t.name)], s.2.get()))
                })
                .collect(),
        ));
        out.push(family(
            "tls_insecure_skip_verify",
            "1 when an https:// call of the target accepts any certificate (--tls-insecure-skip-verify).",
            MetricType::GAUGE,
            t.iter()
                .map(|t| gauge(&[("target", &t.name)], flag(&t.tls_insecure)))
                .collect(),
        ));
        out.push(family(
            "verify_total",
            "Verification probes after reloads, by target and result.",
            MetricType::COUNTER,
            t.iter()
                .filter_map(|t| t.verify.as_ref().map(|v| (t, v)))
                .flat_map(|(t, (s, f))| {
                    [
                        counter(
                            &[("target", &t.name), ("result", "success")],
                            s.load(Relaxed),
                        ),
                        counter(
                            &[("target", &t.name), ("result", "failure")],
                            f.load(Relaxed),
                        ),
                    ]
                })
                .collect(),
        ));
        out.push(family(
            "changes_total",
            "Distinct content changes seen.",
            MetricType::COUNTER,
            g.iter()
                .map(|g| counter(&[("watch", &g.name)], g.changes.load(Relaxed)))
                .collect(),
        ));
        out.push(family(
            "last_change_timestamp_seconds",
            "Unix time of the last content change.",
            MetricType::GAUGE,
            g.iter()
                .filter(|g| g.changes.load(Relaxed) > 0)
                .map(|g| gauge(&[("watch", &g.name)], g.last_change.get()))
                .collect(),
        ));
        let group_gauge = |name: &str, help: &str, value: &dyn Fn(&GroupMetrics) -> f64| {
            family(
                name,
                help,
                MetricType::GAUGE,
                g.iter()
                    .map(|g| gauge(&[("watch", &g.name)], value(g)))
                    .collect(),
            )
        };
        out.push(group_gauge(
            "watched_files",
            "Files in the current version.",
            &|g| g.watched_files.load(Relaxed) as f64,
        ));
        out.push(group_gauge(
            "polling",
            "1 while the watch group is polled instead of using inotify.",
            &|g| flag(&g.polling),
        ));
        out.push(group_gauge(
            "content_blocked",
            "1 while the content on disk is held back: incomplete, inconsistent PEM, or unreadable by the app (block policy).",
            &|g| flag(&g.content_blocked),
        ));
        out.push(group_gauge(
            "filesystem_stalled",
            "1 while a filesystem call of the watch group has not returned within --fs-stall-timeout (the group is held).",
            &|g| flag(&g.stalled),
        ));
        out.push(group_gauge(
            "identity_drift",
            "1 while --app-uid/--app-gid differ from the target process's uid/gid.",
            &|g| flag(&g.identity_drift),
        ));
        let mut access = Vec::new();
        let mut expiry = Vec::new();
        let mut tokens = Vec::new();
        for g in &g {
            let files = lock(&g.files);
            for (path, ok) in &files.0 {
                access.push(gauge(
                    &[("watch", &g.name), ("path", path)],
                    if *ok { 1.0 } else { 0.0 },
                ));
            }
            for (path, t) in &files.1 {
                expiry.push(gauge(&[("watch", &g.name), ("path", path)], *t));
            }
            for (path, t) in &files.2 {
                tokens.push(gauge(&[("watch", &g.name), ("path", path)], *t));
            }
        }
        out.push(family(
            "file_access_ok",
            "1 when the app's uid/gids can read the file (owner, group and other bits, parent directories).",
            MetricType::GAUGE,
            access,
        ));
        out.push(family(
            "cert_expiry_timestamp_seconds",
            "Unix time the earliest certificate of the file expires.",
            MetricType::GAUGE,
            expiry,
        ));
        out.push(family(
            "token_expiry_timestamp_seconds",
            "Unix time the JWT a file holds expires (its exp claim; the signature is not checked).",
            MetricType::GAUGE,
            tokens,
        ));
        out.push(family(
            "watch_errors_total",
            "Watch problems: queue overflow, watch limit, unreadable files.",
            MetricType::COUNTER,
            WatchErrorKind::ALL
                .iter()
                .zip(&self.watch_errors)
                .map(|(kind, n)| counter(&[("kind", kind.as_str())], n.load(Relaxed)))
                .collect(),
        ));
        out.push(family(
            "state_file_write_failures_total",
            "Writes of --state-file that failed (a restarted sidecar may then repeat or miss a reload; see /status).",
            MetricType::COUNTER,
            vec![counter(&[], crate::reload::state_file::state_file_failures().0)],
        ));
        out.push(family(
            "resource_exhausted_total",
            "Failures for want of a resource (file_descriptors, threads, memory); see /status resources.",
            MetricType::COUNTER,
            super::resources::counts()
                .into_iter()
                .map(|(r, n)| counter(&[("resource", r)], n))
                .collect(),
        ));
        if let (Some(open), Some(limit)) = (
            super::resources::open_files(),
            super::resources::open_files_limit(),
        ) {
            out.push(named(
                "process_open_fds".into(),
                "Number of open file descriptors.",
                MetricType::GAUGE,
                vec![gauge(&[], open as f64)],
            ));
            out.push(named(
                "process_max_fds".into(),
                "Maximum number of open file descriptors.",
                MetricType::GAUGE,
                vec![gauge(&[], limit as f64)],
            ));
        }
        out.push(family(
            "inotify_restored_total",
            "Times inotify was set up again after a fallback to polling.",
            MetricType::COUNTER,
            vec![counter(&[], self.inotify_restored.load(Relaxed))],
        ));
        out.push(family(
            "admin_connections_open",
            "Connections open on the admin server.",
            MetricType::GAUGE,
            vec![gauge(&[], self.admin.open.load(Relaxed) as f64)],
        ));
        out.push(family(
            "signal_delivery_info",
            "Always 1: how signals reach the app (pidfd, or kill where pidfds are refused: a pid \
             recycled between the check and the send could be hit).",
            MetricType::GAUGE,
            vec![gauge(
                &[("method", crate::process::handle::delivery().method())],
                1.0,
            )],
        ));
        out.push(family(
            "signals_received_total",
            "Signals the daemon received, by name (only SIGTERM and SIGINT end it; SIGHUP rescans).",
            MetricType::COUNTER,
            super::metrics::signals_received()
                .into_iter()
                .map(|(name, n)| counter(&[("signal", name)], n))
                .collect(),
        ));
        out.push(family(
            "admin_connections_dropped_total",
            "Admin connections closed before they were done, by reason.",
            MetricType::COUNTER,
            DropReason::ALL
                .iter()
                .zip(&self.admin.dropped)
                .map(|(r, n)| counter(&[("reason", r.as_str())], n.load(Relaxed)))
                .collect(),
        ));
        out.extend(super::compat_series::families(self, &t));
        out
    }
}

/// The length of the last exposition.
static LAST_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The exposition being written, one family at a time.
struct Emit {
    buf: Vec<u8>,
}

impl Emit {
    /// Encodes `f` (a family without samples is left out).
    fn push(&mut self, f: MetricFamily) {
        if f.get_metric().is_empty() {
            return;
        }
        if let Err(e) = TextEncoder::new().encode(std::slice::from_ref(&f), &mut self.buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
    }

    fn extend(&mut self, families: Vec<MetricFamily>) {
        for f in families {
            self.push(f);
        }
    }
}

fn flag(b: &AtomicBool) -> f64 {
    if b.load(Relaxed) { 1.0 } else { 0.0 }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    named(format!("secret_reloader_{name}"), help, kind, metrics)
}

fn histogram(t: &TargetMetrics) -> Metric {
    let mut m = labelled(&[("target", &t.name)]);
    let mut h = Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(BUCKETS.len());
    for (bound, n) in BUCKETS.iter().zip(&t.buckets) {
        cumulative += n.load(Relaxed);
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    h.set_bucket(buckets);
    h.set_sample_count(t.successes.load(Relaxed) + t.failures.load(Relaxed));
    h.set_sample_sum(t.duration_sum.get());
    m.set_histogram(h);
    m
}
