//! The Prometheus text exposition of [`Metrics`]: the atomics of every group, target and the admin
//! server turned into metric families when `/metrics` is scraped (the `prometheus` crate's data
//! model and text encoder do the rest), one family at a time. The families of groups and
//! targets are declared and written beside their atomics (`metrics::group`,
//! `metrics::target`); the process's own here. Label pairs are written in name order, as
//! registries do.

use std::sync::atomic::Ordering::Relaxed;

use prometheus::proto::MetricType;

use super::family::{Emit, Family, counter, gauge, named};
use super::metrics::{
    ADMIN_DROPPED, ADMIN_OPEN, INOTIFY_RESTORED, Label, Metrics, SIGNALS_RECEIVED_TOTAL,
    WATCH_ERRORS,
};
use crate::lock;

const BUILD_INFO: Family = Family::gauge("build_info", "Always 1; the version is a label.");
const STATE_FILE_FAILURES: Family = Family::counter(
    "state_file_write_failures_total",
    "Writes of --state-file that failed (a restarted sidecar may then repeat or miss a reload; see /status).",
);
const SIGNAL_DELIVERY: Family = Family::gauge(
    "signal_delivery_info",
    "Always 1: how signals reach the app (pidfd, or kill where pidfds are refused: a pid \
     recycled between the check and the send could be hit).",
);

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
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
        out.push(BUILD_INFO.of(vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)]));
        super::metrics::target_families(&t, self.shared_versions.load(Relaxed), &mut out);
        super::metrics::group_families(&g, &mut out);
        out.push(
            WATCH_ERRORS.of(self
                .watch_errors
                .counts()
                .map(|(kind, n)| counter(&[("kind", kind.as_str())], n))
                .collect()),
        );
        out.push(STATE_FILE_FAILURES.of(vec![counter(
            &[],
            crate::reload::state_file::state_file_failures().0,
        )]));
        out.push(
            super::resources::EXHAUSTED.of(super::resources::counts()
                .into_iter()
                .map(|(r, n)| counter(&[("resource", r)], n))
                .collect()),
        );
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
        out.push(INOTIFY_RESTORED.of(vec![counter(&[], self.inotify_restored.load(Relaxed))]));
        out.push(ADMIN_OPEN.of(vec![gauge(&[], self.admin.open.load(Relaxed) as f64)]));
        out.push(SIGNAL_DELIVERY.of(vec![gauge(
            &[("method", crate::process::handle::delivery().method())],
            1.0,
        )]));
        out.push(
            SIGNALS_RECEIVED_TOTAL.of(super::metrics::signals_received()
                .into_iter()
                .map(|(name, n)| counter(&[("signal", name)], n))
                .collect()),
        );
        out.push(
            ADMIN_DROPPED.of(self
                .admin
                .dropped
                .counts()
                .map(|(r, n)| counter(&[("reason", r.as_str())], n))
                .collect()),
        );
        out.extend(super::compat_series::families(self, &t));
        out
    }
}

/// The length of the last exposition.
static LAST_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
