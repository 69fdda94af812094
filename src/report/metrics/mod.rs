//! Every metric the daemon exports (prefix `secret_reloader_`), kept as plain atomics per watch
//! group (`group`) and per target (`target`), and turned into Prometheus metric families only
//! when `/metrics` is scraped (the `prometheus` crate's data model and text encoder do the
//! rest). Each family is declared once (`Family`: name, help, type), beside the atomic it
//! reads; labels with a fixed set of values are enums (`Label`).
//!
//! Why not a registry of metric vectors: each labelled series there is a heap object with its own
//! copy of names, help and labels, several hundred bytes; a thousand watched volumes would spend
//! megabytes on them. Here a group costs a few atomics, and nothing is global, so tests run several
//! daemons in one process. Label values come from the configuration (group and target names,
//! watched paths) or a small fixed set (`result`, `kind`); never from secret content.

mod atomic;
mod group;
mod target;
mod webhook;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub(crate) use group::GroupMetrics;
pub(in crate::report) use group::families as group_families;
pub(crate) use target::TargetMetrics;
pub(in crate::report) use target::families as target_families;
pub(crate) use webhook::{ReloadResult, ReviewResult, WebhookMetrics};

use super::family::Family;
use crate::config::TargetConfig;
use crate::config::compat_flags::CompatMetrics;
use crate::lock;
pub(crate) use atomic::{Counters, Label};

/// Kinds of `watch_errors_total`, all exported from the start so that `rate()` works at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchErrorKind {
    /// The inotify queue overflowed: every group was rescanned.
    Overflow,
    /// `fs.inotify.max_user_watches` reached.
    WatchLimit,
    /// No inotify instance could be created.
    InotifyInit,
    /// A directory could not be watched (permission denied and the like).
    Watch,
    /// inotify events could not be read.
    Event,
    /// A watched file could not be read by the sidecar.
    Read,
}

impl Label for WatchErrorKind {
    const ALL: &'static [WatchErrorKind] = &[
        WatchErrorKind::Overflow,
        WatchErrorKind::WatchLimit,
        WatchErrorKind::InotifyInit,
        WatchErrorKind::Watch,
        WatchErrorKind::Event,
        WatchErrorKind::Read,
    ];

    fn as_str(self) -> &'static str {
        match self {
            WatchErrorKind::Overflow => "overflow",
            WatchErrorKind::WatchLimit => "watch_limit",
            WatchErrorKind::InotifyInit => "inotify_init",
            WatchErrorKind::Watch => "watch",
            WatchErrorKind::Event => "event",
            WatchErrorKind::Read => "read",
        }
    }
}

/// Why the admin server closed a connection before it was done, for
/// `admin_connections_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The connection cap was reached: the longest idle connection made room for a new one (or,
    /// every slot answering a request, the new one was closed).
    Capacity,
    /// The request head did not arrive in time (also: idle keep-alive).
    HeaderTimeout,
    /// The request head was too large.
    HeaderTooLarge,
    /// Anything else (malformed request, reset).
    Error,
}

impl Label for DropReason {
    const ALL: &'static [DropReason] = &[
        DropReason::Capacity,
        DropReason::HeaderTimeout,
        DropReason::HeaderTooLarge,
        DropReason::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::Capacity => "capacity",
            DropReason::HeaderTimeout => "header_timeout",
            DropReason::HeaderTooLarge => "header_too_large",
            DropReason::Error => "error",
        }
    }
}

/// The admin server's own series.
#[derive(Debug, Default)]
pub struct AdminMetrics {
    /// [`ADMIN_OPEN`].
    pub(in crate::report) open: AtomicI64,
    /// [`ADMIN_DROPPED`].
    pub(in crate::report) dropped: Counters<DropReason>,
}

impl AdminMetrics {
    /// A connection was accepted (`+1`) or ended (`-1`).
    pub(crate) fn open_delta(&self, d: i64) {
        self.open.fetch_add(d, Relaxed);
    }
    /// A connection was closed before it was done.
    pub(crate) fn dropped(&self, why: DropReason) {
        self.dropped.add(why);
    }
}

/// Signals the daemon took without ending on them at once, by name: process-wide, like the
/// signals themselves (`daemon::signals` counts them; every [`Metrics`] shows them).
static SIGNALS_RECEIVED: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// Counts one signal received.
pub(crate) fn signal_received(name: &'static str) {
    let mut all = lock(&SIGNALS_RECEIVED);
    match all.iter_mut().find(|(n, _)| *n == name) {
        Some((_, c)) => *c += 1,
        None => all.push((name, 1)),
    }
}

/// Every signal received so far, with its count.
pub(in crate::report) fn signals_received() -> Vec<(&'static str, u64)> {
    lock(&SIGNALS_RECEIVED).clone()
}

/// Every metric of the daemon. Components register their series once and keep the handle.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Every group's series, in the order registered.
    pub(in crate::report) groups: Mutex<Vec<Arc<GroupMetrics>>>,
    /// Every target's series, in the order registered.
    pub(in crate::report) targets: Mutex<Vec<Arc<TargetMetrics>>>,
    /// [`WATCH_ERRORS`].
    pub(in crate::report) watch_errors: Counters<WatchErrorKind>,
    /// [`INOTIFY_RESTORED`].
    pub(in crate::report) inotify_restored: AtomicU64,
    /// inotify events read (prometheus-config-reloader's `watch_events_total`).
    pub(in crate::report) watch_events: AtomicU64,
    /// Watched paths, every group's (its `watches`).
    pub(in crate::report) watched_paths: AtomicI64,
    /// Other tools' series exported too.
    pub(in crate::report) compat: CompatMetrics,
    /// Fingerprints compare across pods (`--fingerprint-key-file`): `applied_version_info`.
    pub(in crate::report) shared_versions: AtomicBool,
    /// The admin server's series.
    pub admin: AdminMetrics,
}

pub(in crate::report) const WATCH_ERRORS: Family = Family::counter(
    "watch_errors_total",
    "Watch problems: queue overflow, watch limit, unreadable files.",
);
pub(in crate::report) const INOTIFY_RESTORED: Family = Family::counter(
    "inotify_restored_total",
    "Times inotify was set up again after a fallback to polling.",
);
pub(in crate::report) const ADMIN_OPEN: Family = Family::gauge(
    "admin_connections_open",
    "Connections open on the admin server.",
);
pub(in crate::report) const ADMIN_DROPPED: Family = Family::counter(
    "admin_connections_dropped_total",
    "Admin connections closed before they were done, by reason.",
);
pub(in crate::report) const SIGNALS_RECEIVED_TOTAL: Family = Family::counter(
    "signals_received_total",
    "Signals the daemon received, by name (only SIGTERM and SIGINT end it; SIGHUP rescans).",
);

impl Metrics {
    /// No series yet, and only the daemon's own.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// No series yet; `compat`: other tools' series exported too.
    pub(crate) fn with_compat(compat: CompatMetrics) -> Metrics {
        Metrics {
            compat,
            ..Default::default()
        }
    }

    /// The series of a new watch group that watches `paths` paths.
    pub(crate) fn register_group(&self, name: &str, paths: usize) -> Arc<GroupMetrics> {
        let g = Arc::new(GroupMetrics {
            name: name.to_string(),
            ..Default::default()
        });
        self.watched_paths.fetch_add(paths as i64, Relaxed);
        lock(&self.groups).push(g.clone());
        g
    }

    /// The series of a new target.
    pub(crate) fn register_target(&self, cfg: &TargetConfig) -> Arc<TargetMetrics> {
        let t = Arc::new(TargetMetrics::new(
            cfg.name.clone(),
            cfg.verify.is_some(),
            cfg.served_cert.is_some(),
            cfg.action.makes_calls(),
            cfg.tls_insecure_skip_verify(),
        ));
        lock(&self.targets).push(t.clone());
        t
    }

    /// Counts one watch problem.
    pub(crate) fn watch_error(&self, kind: WatchErrorKind) {
        self.watch_errors.add(kind);
    }

    /// inotify was set up again after a fallback to polling.
    pub(crate) fn inotify_restored(&self) {
        self.inotify_restored.fetch_add(1, Relaxed);
    }

    /// Versions are fingerprinted with a key other pods share: export which one each target
    /// holds (`applied_version_info`), so that Prometheus can count replicas per version.
    pub(crate) fn share_versions(&self) {
        self.shared_versions.store(true, Relaxed);
    }

    /// `n` inotify events were read.
    pub(crate) fn watch_events(&self, n: usize) {
        self.watch_events.fetch_add(n as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::compat_flags::CompatMetrics;
    use crate::report::status::TargetState;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// An HTTP target that verifies, as the command line makes it.
    fn target() -> TargetConfig {
        let c = Config::from_argv([
            "secret-reloader",
            "--watch",
            "/nonexistent",
            "--reload-url",
            "http://127.0.0.1:1/",
            "--verify-url",
            "http://127.0.0.1:1/ok",
        ])
        .unwrap();
        c.groups[0].targets[0].clone()
    }

    #[test]
    fn other_tools_series_follow_the_targets() {
        let m = Metrics::with_compat(CompatMetrics {
            prometheus_config_reloader: true,
            configmap_reload: true,
        });
        m.register_group("default", 2);
        let t = m.register_target(&target());
        let text = m.encode();
        // Before any action: nothing failed, no success yet.
        assert!(
            text.contains("\nreloader_last_reload_successful 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nreloader_last_reload_success_timestamp_seconds 0\n"),
            "{text}"
        );
        assert!(text.contains("\nreloader_watches 2\n"), "{text}");
        assert!(
            !text.contains("configmap_reload_last_reload_error{"),
            "{text}"
        );

        t.action(false, Duration::from_millis(2), 1.7e9);
        t.call(
            Some(500),
            Some(crate::action::http::metrics::CallFailure::Status),
        );
        let text = m.encode();
        assert!(
            text.contains("\nreloader_last_reload_successful 0\n"),
            "{text}"
        );
        assert!(text.contains("\nreloader_reloads_total 1\n"), "{text}");
        assert!(
            text.contains("\nreloader_reloads_failed_total 1\n"),
            "{text}"
        );
        let hook = "webhook=\"http://127.0.0.1:1/\"";
        for line in [
            format!("configmap_reload_last_reload_error{{{hook}}} 1"),
            format!("configmap_reload_request_errors_total{{reason=\"client_response\",{hook}}} 1"),
            format!("configmap_reload_requests_total{{status_code=\"500\",{hook}}} 1"),
        ] {
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }

        t.action(true, Duration::from_millis(4), 1.8e9);
        t.call(Some(200), None);
        let text = m.encode();
        assert!(
            text.contains("\nreloader_last_reload_successful 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nreloader_last_reload_success_timestamp_seconds 1800000000\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("configmap_reload_last_reload_error{{{hook}}} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "configmap_reload_success_reloads_total{{{hook}}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "configmap_reload_last_request_duration_seconds{{{hook}}} 0.004"
            )),
            "{text}"
        );

        // Not asked for: not exported.
        let plain = Metrics::new();
        plain.register_target(&target());
        let text = plain.encode();
        assert!(
            !text.contains("\nreloader_") && !text.contains("configmap_reload_"),
            "{text}"
        );
    }

    #[test]
    fn exposition_has_every_family_and_valid_histograms() {
        let m = Metrics::new();
        let g = m.register_group("default", 1);
        let t = m.register_target(&target());
        t.action(true, Duration::from_millis(3), 1.7e9);
        t.action(false, Duration::from_secs(60), 1.7e9);
        t.set_state(TargetState::Retrying);
        g.set_files(
            BTreeMap::from([("/v/a".to_string(), true)]),
            BTreeMap::new(),
            BTreeMap::from([("/v/token".to_string(), Some(1.9e9))]),
        );
        g.set_claims_changed(
            0,
            [("/v/token".to_string(), crate::scan::token::Claim::Audience)].into(),
        );
        let text = m.encode();
        for name in [
            "build_info",
            "reloads_total",
            "reload_duration_seconds_bucket",
            "stale",
            "verify_total",
            "changes_total",
            "watched_files",
            "polling",
            "content_blocked",
            "identity_drift",
            "file_access_ok",
            "token_expiry_timestamp_seconds",
            "token_claim_changed",
            "watch_errors_total",
            "last_reload_success_timestamp_seconds",
            "target_state",
            "admin_connections_open",
            "admin_connections_dropped_total",
        ] {
            assert!(
                text.contains(&format!("secret_reloader_{name}")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains(
                "secret_reloader_reload_duration_seconds_count{target=\"http://127.0.0.1:1/\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        for (claim, v) in [("aud", 1), ("iss", 0), ("scope", 0), ("sub", 0)] {
            let line = format!(
                "secret_reloader_token_claim_changed{{claim=\"{claim}\",path=\"/v/token\",watch=\"default\"}} {v}\n"
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        assert!(
            !text.contains("last_change_timestamp_seconds{"),
            "no change yet: {text}"
        );
        assert!(
            text.contains(
                "secret_reloader_target_state{state=\"retrying\",target=\"http://127.0.0.1:1/\"} 1"
            ),
            "{text}"
        );
    }
}
