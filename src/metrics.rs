//! The Prometheus registry and every metric the daemon exports (prefix `secret_reloader_`).
//!
//! Built once per daemon and shared by reference: no global registry, so tests can run several
//! daemons in one process. Label values come from the configuration (group and target names,
//! watched paths) or a small fixed set (`result`, `kind`); never from secret content.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Kinds of `watch_errors_total`, all exported from the start so that `rate()` works at once.
pub const WATCH_ERROR_KINDS: &[&str] = &[
    "overflow",
    "watch_limit",
    "inotify_init",
    "watch",
    "event",
    "read",
];

/// Every metric of the daemon.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    registry: Registry,
    /// Reload actions by target and result (success / failure).
    pub reloads_total: IntCounterVec,
    /// Duration of reload actions by target.
    pub reload_duration_seconds: HistogramVec,
    /// Unix time of the last successful reload by target.
    pub last_reload_success_timestamp_seconds: GaugeVec,
    /// Distinct content changes seen, by watch group.
    pub changes_total: IntCounterVec,
    /// Unix time of the last content change, by watch group.
    pub last_change_timestamp_seconds: GaugeVec,
    /// 1 while a target has not applied the current content.
    pub stale: IntGaugeVec,
    /// Files in the current version, by watch group.
    pub watched_files: IntGaugeVec,
    /// Watch problems by kind (overflow, watch limit, ...).
    pub watch_errors_total: IntCounterVec,
    /// 1 while a watch group is polled instead of watched with inotify.
    pub polling: IntGaugeVec,
    /// 1 when the app's uid/gids can read the file.
    pub file_access_ok: IntGaugeVec,
    /// Unix time the earliest certificate of a file expires.
    pub cert_expiry_timestamp_seconds: GaugeVec,
    /// Verification probes after reloads, by target and result.
    pub verify_total: IntCounterVec,
    /// 1 while the content on disk is held back (incomplete, inconsistent, unreadable by the app).
    pub content_blocked: IntGaugeVec,
    /// 1 while the declared app identity differs from the process's.
    pub identity_drift: IntGaugeVec,
    /// Always 1, labelled with the version.
    pub build_info: IntGaugeVec,
}

fn name(n: &str) -> String {
    format!("secret_reloader_{n}")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |n: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name(n), help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let reloads_total = counter(
            "reloads_total",
            "Reload actions by target and result.",
            &["target", "result"],
        );
        let changes_total = counter(
            "changes_total",
            "Distinct content changes seen.",
            &["watch"],
        );
        let verify_total = counter(
            "verify_total",
            "Verification probes after reloads, by target and result.",
            &["target", "result"],
        );
        let watch_errors_total = counter(
            "watch_errors_total",
            "Watch problems: queue overflow, watch limit, unreadable files.",
            &["kind"],
        );
        let gauge = |n: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name(n), help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let last_reload_success_timestamp_seconds = gauge(
            "last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload.",
            &["target"],
        );
        let last_change_timestamp_seconds = gauge(
            "last_change_timestamp_seconds",
            "Unix time of the last content change.",
            &["watch"],
        );
        let int_gauge = |n: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name(n), help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let stale = int_gauge(
            "stale",
            "1 while the target has not applied the current content.",
            &["target"],
        );
        let watched_files = int_gauge("watched_files", "Files in the current version.", &["watch"]);
        let polling = int_gauge(
            "polling",
            "1 while the watch group is polled instead of using inotify.",
            &["watch"],
        );
        let build_info = int_gauge(
            "build_info",
            "Always 1; the version is a label.",
            &["version"],
        );
        let file_access_ok = int_gauge(
            "file_access_ok",
            "1 when the app's uid/gids can read the file (owner, group and other bits, parent directories).",
            &["watch", "path"],
        );
        let content_blocked = int_gauge(
            "content_blocked",
            "1 while the content on disk is held back: incomplete, inconsistent PEM, or unreadable by the app (block policy).",
            &["watch"],
        );
        let identity_drift = int_gauge(
            "identity_drift",
            "1 while --app-uid/--app-gid differ from the target process's uid/gid.",
            &["watch"],
        );
        let cert_expiry_timestamp_seconds = gauge(
            "cert_expiry_timestamp_seconds",
            "Unix time the earliest certificate of the file expires.",
            &["watch", "path"],
        );
        let reload_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                name("reload_duration_seconds"),
                "Duration of reload actions.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["target"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(reload_duration_seconds.clone()))
            .expect("unique metric");

        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for kind in WATCH_ERROR_KINDS {
            watch_errors_total.with_label_values(&[kind]);
        }
        Metrics {
            registry,
            reloads_total,
            reload_duration_seconds,
            last_reload_success_timestamp_seconds,
            changes_total,
            last_change_timestamp_seconds,
            stale,
            watched_files,
            watch_errors_total,
            polling,
            file_access_ok,
            cert_expiry_timestamp_seconds,
            verify_total,
            content_blocked,
            identity_drift,
            build_info,
        }
    }

    /// Exports a watch group's series at zero before anything happens.
    pub fn init_group(&self, group: &str) {
        self.changes_total.with_label_values(&[group]);
        self.watched_files.with_label_values(&[group]);
        self.polling.with_label_values(&[group]);
        self.content_blocked.with_label_values(&[group]);
        self.identity_drift.with_label_values(&[group]);
    }

    /// Exports a target's series at zero before anything happens.
    pub fn init_target(&self, target: &str) {
        for result in ["success", "failure"] {
            self.reloads_total.with_label_values(&[target, result]);
        }
        self.stale.with_label_values(&[target]);
    }

    /// Exports verification series of a target that verifies.
    pub fn init_verify(&self, target: &str) {
        for result in ["success", "failure"] {
            self.verify_total.with_label_values(&[target, result]);
        }
    }

    /// Counts one watch problem.
    pub fn watch_error(&self, kind: &str) {
        self.watch_errors_total.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
