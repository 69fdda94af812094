//! Every metric the daemon exports (prefix `secret_reloader_`), kept as plain atomics per watch
//! group and per target, and turned into Prometheus metric families only when `/metrics` is
//! scraped (the `prometheus` crate's data model and text encoder do the rest).
//!
//! Why not a registry of metric vectors: each labelled series there is a heap object with its own
//! copy of names, help and labels, several hundred bytes; a thousand watched volumes would spend
//! megabytes on them. Here a group costs a few atomics, and nothing is global, so tests run several
//! daemons in one process. Label values come from the configuration (group and target names,
//! watched paths) or a small fixed set (`result`, `kind`); never from secret content.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::status::TargetState;
use crate::config::TargetConfig;
use crate::config::compat_flags::CompatMetrics;
use crate::lock;
use crate::scan::fingerprint::Fingerprint;

/// Kinds of `watch_errors_total`, all exported from the start so that `rate()` works at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchErrorKind {
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

impl WatchErrorKind {
    pub(super) const ALL: [WatchErrorKind; 6] = [
        WatchErrorKind::Overflow,
        WatchErrorKind::WatchLimit,
        WatchErrorKind::InotifyInit,
        WatchErrorKind::Watch,
        WatchErrorKind::Event,
        WatchErrorKind::Read,
    ];

    pub(super) fn as_str(self) -> &'static str {
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
pub enum DropReason {
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

impl DropReason {
    pub(super) const ALL: [DropReason; 4] = [
        DropReason::Capacity,
        DropReason::HeaderTimeout,
        DropReason::HeaderTooLarge,
        DropReason::Error,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            DropReason::Capacity => "capacity",
            DropReason::HeaderTimeout => "header_timeout",
            DropReason::HeaderTooLarge => "header_too_large",
            DropReason::Error => "error",
        }
    }
}

/// Upper bounds of `reload_duration_seconds`.
pub(super) const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// An f64 in an atomic.
#[derive(Debug, Default)]
pub(super) struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }
    pub(super) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    fn add(&self, v: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |b| {
            Some((f64::from_bits(b) + v).to_bits())
        });
    }
}

/// Per file of a group (paths as shown): readable by the app; earliest certificate expiry; a
/// JWT's expiry (Unix seconds).
pub(super) type FileSeries = (
    BTreeMap<String, bool>,
    BTreeMap<String, f64>,
    BTreeMap<String, f64>,
);

/// The series of one watch group.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    pub(super) name: String,
    pub(super) changes: AtomicU64,
    pub(super) last_change: AtomicF64,
    pub(super) watched_files: AtomicI64,
    pub(super) polling: AtomicBool,
    pub(super) content_blocked: AtomicBool,
    pub(super) identity_drift: AtomicBool,
    /// A filesystem call of the group has not returned within the deadline.
    pub(super) stalled: AtomicBool,
    /// Per file: whether the app can read it; the earliest certificate expiry; a JWT's expiry.
    pub(super) files: Mutex<FileSeries>,
}

impl GroupMetrics {
    /// A content change seen at `unix` seconds.
    pub fn changed(&self, unix: f64) {
        self.changes.fetch_add(1, Relaxed);
        self.last_change.set(unix);
    }
    /// Files in the current version.
    pub fn set_watched_files(&self, n: usize) {
        self.watched_files.store(n as i64, Relaxed);
    }
    /// Polled instead of watched.
    pub fn set_polling(&self, on: bool) {
        self.polling.store(on, Relaxed);
    }
    /// Content held back.
    pub fn set_content_blocked(&self, on: bool) {
        self.content_blocked.store(on, Relaxed);
    }
    /// A filesystem call of the group has not returned within the deadline.
    pub fn set_stalled(&self, on: bool) {
        self.stalled.store(on, Relaxed);
    }
    /// Declared and real identity differ.
    pub fn set_identity_drift(&self, on: bool) {
        self.identity_drift.store(on, Relaxed);
    }
    /// Replaces the access verdicts (path → readable), certificate expiries and token expiries
    /// (path → unix).
    pub fn set_files(
        &self,
        access: BTreeMap<String, bool>,
        certs: BTreeMap<String, f64>,
        tokens: BTreeMap<String, f64>,
    ) {
        *lock(&self.files) = (access, certs, tokens);
    }
}

/// Why an HTTP reload call failed, as configmap-reload's `request_errors_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// No answer: the connection failed or timed out, or the request could not be made.
    NoAnswer,
    /// An answer with another status than the expected one.
    Status,
    /// The expected status, but the verification after it failed.
    Verification,
}

impl CallFailure {
    pub(super) const ALL: [CallFailure; 3] = [
        CallFailure::NoAnswer,
        CallFailure::Status,
        CallFailure::Verification,
    ];

    /// configmap-reload's `reason` label (`verification` is this daemon's own).
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CallFailure::NoAnswer => "client_request_do",
            CallFailure::Status => "client_response",
            CallFailure::Verification => "verification",
        }
    }
}

/// What the HTTP calls of a target answered, for configmap-reload's series.
#[derive(Debug, Default)]
pub(super) struct CallSeries {
    /// (status, calls answered with it), in the order first seen.
    pub(super) statuses: Mutex<Vec<(u16, u64)>>,
    /// Failures by [`CallFailure`].
    pub(super) failures: [AtomicU64; 3],
}

/// The series of one target.
#[derive(Debug, Default)]
pub struct TargetMetrics {
    pub(super) name: String,
    pub(super) successes: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) last_success: AtomicF64,
    /// Whether the last action failed.
    pub(super) last_failed: AtomicBool,
    /// Duration of the last successful action, seconds.
    pub(super) last_success_duration: AtomicF64,
    /// The version it holds, when known (shown as its short keyed fingerprint at a scrape).
    pub(super) applied: Mutex<Option<Fingerprint>>,
    /// `--consumed-as env`: (compared at least once, the app's environment differs from the
    /// files).
    pub(super) environment: (AtomicBool, AtomicBool),
    /// The answers of an HTTP target's calls.
    pub(super) calls: Option<CallSeries>,
    pub(super) stale: AtomicBool,
    pub(super) ambiguous: AtomicBool,
    /// An https:// call of the target accepts any certificate (`--tls-insecure-skip-verify`).
    pub(super) tls_insecure: AtomicBool,
    /// `--verify-served-cert`: (looked at least once, served = disk, served certificate's expiry).
    pub(super) served: Option<(AtomicBool, AtomicBool, AtomicF64)>,
    /// Index of the current [`TargetState`] in [`TargetState::ALL`].
    pub(super) state: AtomicU64,
    /// Verification results (success, failure), for targets that verify.
    pub(super) verify: Option<(AtomicU64, AtomicU64)>,
    pub(super) buckets: [AtomicU64; BUCKETS.len()],
    pub(super) duration_sum: AtomicF64,
}

impl TargetMetrics {
    /// A reload action that took `took`; `ok` when it succeeded, at `unix` seconds.
    pub fn action(&self, ok: bool, took: Duration, unix: f64) {
        let secs = took.as_secs_f64();
        if ok {
            self.successes.fetch_add(1, Relaxed);
            self.last_success.set(unix);
            self.last_success_duration.set(secs);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
        self.last_failed.store(!ok, Relaxed);
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.duration_sum.add(secs);
    }
    /// Whether the target has not applied the current content.
    pub fn set_stale(&self, on: bool) {
        self.stale.store(on, Relaxed);
    }
    /// The app's environment was compared with the files: `differs` when some key holds another
    /// value.
    pub fn environment(&self, differs: bool) {
        self.environment.1.store(differs, Relaxed);
        self.environment.0.store(true, Relaxed);
    }
    /// The version it holds, when known.
    pub fn set_applied(&self, version: Option<Fingerprint>) {
        *lock(&self.applied) = version;
    }
    /// Whether its selector matches several unrelated processes.
    pub fn set_ambiguous(&self, on: bool) {
        self.ambiguous.store(on, Relaxed);
    }
    /// The app served a certificate that is (`matches`) or is not the one on disk, expiring at
    /// `not_after` (Unix seconds).
    pub fn served(&self, matches: bool, not_after: f64) {
        if let Some((looked, m, exp)) = &self.served {
            m.store(matches, Relaxed);
            exp.set(not_after);
            looked.store(true, Relaxed);
        }
    }
    /// An HTTP call answered `status` (`None`: no answer); `failure`: why the attempt failed, if
    /// it did.
    pub fn call(&self, status: Option<u16>, failure: Option<CallFailure>) {
        let Some(calls) = &self.calls else {
            return;
        };
        if let Some(status) = status {
            let mut seen = lock(&calls.statuses);
            match seen.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => seen.push((status, 1)),
            }
        }
        if let Some(i) = failure.and_then(|f| CallFailure::ALL.iter().position(|c| *c == f)) {
            calls.failures[i].fetch_add(1, Relaxed);
        }
    }
    /// Where its reconciler stands.
    pub fn set_state(&self, state: TargetState) {
        let i = TargetState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.state.store(i as u64, Relaxed);
    }
    /// A verification outcome.
    pub fn verified(&self, ok: bool) {
        if let Some((s, f)) = &self.verify {
            if ok { s } else { f }.fetch_add(1, Relaxed);
        }
    }
}

/// The admin server's own series.
#[derive(Debug, Default)]
pub struct AdminMetrics {
    pub(super) open: AtomicI64,
    pub(super) dropped: [AtomicU64; 4],
}

impl AdminMetrics {
    /// A connection was accepted (`+1`) or ended (`-1`).
    pub fn open_delta(&self, d: i64) {
        self.open.fetch_add(d, Relaxed);
    }
    /// A connection was closed before it was done.
    pub fn dropped(&self, why: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == why) {
            self.dropped[i].fetch_add(1, Relaxed);
        }
    }
}

/// Signals the daemon took without ending on them at once, by name: process-wide, like the
/// signals themselves (`daemon::signals` counts them; every [`Metrics`] shows them).
static SIGNALS_RECEIVED: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// Counts one signal received.
pub fn signal_received(name: &'static str) {
    let mut all = lock(&SIGNALS_RECEIVED);
    match all.iter_mut().find(|(n, _)| *n == name) {
        Some((_, c)) => *c += 1,
        None => all.push((name, 1)),
    }
}

/// Every signal received so far, with its count.
pub(super) fn signals_received() -> Vec<(&'static str, u64)> {
    lock(&SIGNALS_RECEIVED).clone()
}

/// Every metric of the daemon. Components register their series once and keep the handle.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(super) groups: Mutex<Vec<Arc<GroupMetrics>>>,
    pub(super) targets: Mutex<Vec<Arc<TargetMetrics>>>,
    pub(super) watch_errors: [AtomicU64; 6],
    pub(super) inotify_restored: AtomicU64,
    /// inotify events read (prometheus-config-reloader's `watch_events_total`).
    pub(super) watch_events: AtomicU64,
    /// Watched paths, every group's (its `watches`).
    pub(super) watched_paths: AtomicI64,
    /// Other tools' series exported too.
    pub(super) compat: CompatMetrics,
    /// Fingerprints compare across pods (`--fingerprint-key-file`): `applied_version_info`.
    pub(super) shared_versions: AtomicBool,
    /// The admin server's series.
    pub admin: AdminMetrics,
}

impl Metrics {
    /// No series yet, and only the daemon's own.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// No series yet; `compat`: other tools' series exported too.
    pub fn with_compat(compat: CompatMetrics) -> Metrics {
        Metrics {
            compat,
            ..Default::default()
        }
    }

    /// The series of a new watch group that watches `paths` paths.
    pub fn register_group(&self, name: &str, paths: usize) -> Arc<GroupMetrics> {
        let g = Arc::new(GroupMetrics {
            name: name.to_string(),
            ..Default::default()
        });
        self.watched_paths.fetch_add(paths as i64, Relaxed);
        lock(&self.groups).push(g.clone());
        g
    }

    /// The series of a new target.
    pub fn register_target(&self, cfg: &TargetConfig) -> Arc<TargetMetrics> {
        let t = Arc::new(TargetMetrics {
            name: cfg.name.clone(),
            verify: cfg.verify.is_some().then(Default::default),
            served: cfg.served_cert.is_some().then(Default::default),
            calls: (cfg.kind() == crate::action::Kind::Http).then(Default::default),
            tls_insecure: AtomicBool::new(cfg.tls_insecure_skip_verify()),
            ..Default::default()
        });
        lock(&self.targets).push(t.clone());
        t
    }

    /// Counts one watch problem.
    pub fn watch_error(&self, kind: WatchErrorKind) {
        if let Some(i) = WatchErrorKind::ALL.iter().position(|k| *k == kind) {
            self.watch_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// inotify was set up again after a fallback to polling.
    pub fn inotify_restored(&self) {
        self.inotify_restored.fetch_add(1, Relaxed);
    }

    /// Versions are fingerprinted with a key other pods share: export which one each target
    /// holds (`applied_version_info`), so that Prometheus can count replicas per version.
    pub fn share_versions(&self) {
        self.shared_versions.store(true, Relaxed);
    }

    /// `n` inotify events were read.
    pub fn watch_events(&self, n: usize) {
        self.watch_events.fetch_add(n as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::compat_flags::CompatMetrics;

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
        t.call(Some(500), Some(CallFailure::Status));
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
            BTreeMap::from([("/v/token".to_string(), 1.9e9)]),
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
