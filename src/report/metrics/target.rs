//! The series of one target: its atomics, what records into them, and its families, each
//! declared once (name, help, type) beside the atomic it reads.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::Metric;

use super::atomic::{AtomicF64, Durations};
use crate::lock;
use crate::report::family::{Emit, Family, counter, flag, gauge};
use crate::report::status::TargetState;
use crate::scan::fingerprint::Fingerprint;

/// The series of one target.
#[derive(Debug)]
pub(crate) struct TargetMetrics {
    /// The `target` label.
    pub(in crate::report) name: String,
    /// Successful actions: [`RELOADS`] `result="success"`.
    pub(in crate::report) successes: AtomicU64,
    /// Failed actions: [`RELOADS`] `result="failure"`.
    pub(in crate::report) failures: AtomicU64,
    /// [`LAST_SUCCESS`].
    pub(in crate::report) last_success: AtomicF64,
    /// Whether the last action failed (other tools' series).
    pub(in crate::report) last_failed: AtomicBool,
    /// Duration of the last successful action, seconds (configmap-reload's series).
    pub(in crate::report) last_success_duration: AtomicF64,
    /// [`APPLIED_VERSION`]: the version it holds, when known (shown as its short keyed
    /// fingerprint at a scrape).
    pub(in crate::report) applied: Mutex<Option<Fingerprint>>,
    /// The environment restart's series (`--consumed-as env`).
    pub(in crate::report) environment: crate::action::restart::metrics::EnvironmentSeries,
    /// A signal target's workers.
    pub(crate) workers: crate::reload::workers::WorkerSeries,
    /// The answers of an HTTP target's calls (configmap-reload's series).
    pub(in crate::report) calls: Option<crate::action::http::metrics::CallSeries>,
    /// [`STALE`].
    pub(in crate::report) stale: AtomicBool,
    /// [`AMBIGUOUS`].
    pub(in crate::report) ambiguous: AtomicBool,
    /// [`TLS_INSECURE`].
    pub(in crate::report) tls_insecure: AtomicBool,
    /// [`SERVED_MATCH`], [`SERVED_EXPIRY`] (`--verify-served-cert`).
    pub(in crate::report) served: Option<Served>,
    /// [`STATE`]: the current [`TargetState`], as its discriminant.
    pub(in crate::report) state: AtomicU8,
    /// [`VERIFY`], for targets that verify.
    pub(in crate::report) verify: Option<Verified>,
    /// [`DURATION`].
    pub(in crate::report) durations: Durations,
}

const RELOADS: Family = Family::counter("reloads_total", "Reload actions by target and result.");
const DURATION: Family =
    Family::histogram("reload_duration_seconds", "Duration of reload actions.");
const LAST_SUCCESS: Family = Family::gauge(
    "last_reload_success_timestamp_seconds",
    "Unix time of the last successful reload.",
);
const STALE: Family = Family::gauge(
    "stale",
    "1 while the target does not hold the content on disk (held-back content included).",
);
const APPLIED_VERSION: Family = Family::gauge(
    "applied_version_info",
    "1 per target, labelled with the version it holds as a short keyed fingerprint; only with --fingerprint-key-file, so that replicas sharing the key compare.",
);
const STATE: Family = Family::gauge(
    "target_state",
    "1 for the state the target's reconciler is in (idle, acting, coalescing, waiting, draining, retrying, failed, held).",
);
const AMBIGUOUS: Family = Family::gauge(
    "signal_target_ambiguous",
    "1 while several unrelated processes match a signal target's selector (nothing is signalled).",
);
const SERVED_MATCH: Family = Family::gauge(
    "served_certificate_match",
    "1 when the certificate the app serves is the one on disk (--verify-served-cert), 0 when it differs.",
);
const SERVED_EXPIRY: Family = Family::gauge(
    "served_certificate_expiry_timestamp_seconds",
    "Expiry of the certificate the app serves (--verify-served-cert), Unix seconds.",
);
const TLS_INSECURE: Family = Family::gauge(
    "tls_insecure_skip_verify",
    "1 when an https:// call of the target accepts any certificate (--tls-insecure-skip-verify).",
);
const VERIFY: Family = Family::counter(
    "verify_total",
    "Verification probes after reloads, by target and result.",
);

/// `--verify-served-cert`: what the last look at the served certificate found.
#[derive(Debug, Default)]
pub(in crate::report) struct Served {
    /// Looked at least once.
    pub looked: AtomicBool,
    /// The served certificate is the one on disk.
    pub matches: AtomicBool,
    /// The served certificate's expiry, Unix seconds.
    pub expiry: AtomicF64,
}

/// Verification results.
#[derive(Debug, Default)]
pub(in crate::report) struct Verified {
    /// Probes that passed.
    pub successes: AtomicU64,
    /// Probes that failed.
    pub failures: AtomicU64,
}

impl TargetMetrics {
    /// The series of the target `name`; `verify`, `served`, `calls`: whether it verifies, looks
    /// at the served certificate, makes HTTP calls; `tls_insecure`: whether a call of it accepts
    /// any certificate.
    pub(in crate::report) fn new(
        name: String,
        verify: bool,
        served: bool,
        calls: bool,
        tls_insecure: bool,
    ) -> TargetMetrics {
        TargetMetrics {
            name,
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_success: AtomicF64::default(),
            last_failed: AtomicBool::new(false),
            last_success_duration: AtomicF64::default(),
            applied: Mutex::new(None),
            environment: Default::default(),
            workers: Default::default(),
            calls: calls.then(Default::default),
            stale: AtomicBool::new(false),
            ambiguous: AtomicBool::new(false),
            tls_insecure: AtomicBool::new(tls_insecure),
            served: served.then(Served::default),
            state: AtomicU8::new(TargetState::Idle as u8),
            verify: verify.then(Verified::default),
            durations: Durations::default(),
        }
    }

    /// A reload action that took `took`; `ok` when it succeeded, at `unix` seconds.
    pub(crate) fn action(&self, ok: bool, took: Duration, unix: f64) {
        let secs = took.as_secs_f64();
        if ok {
            self.successes.fetch_add(1, Relaxed);
            self.last_success.set(unix);
            self.last_success_duration.set(secs);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
        self.last_failed.store(!ok, Relaxed);
        self.durations.observe(took);
    }

    /// Whether the target has not applied the current content.
    pub(crate) fn set_stale(&self, on: bool) {
        self.stale.store(on, Relaxed);
    }

    /// The app's environment was compared with the files: `differs` when some key holds another
    /// value.
    pub(crate) fn environment(&self, differs: bool) {
        self.environment.compared(differs);
    }

    /// The version it holds, when known.
    pub(crate) fn set_applied(&self, version: Option<Fingerprint>) {
        *lock(&self.applied) = version;
    }

    /// Whether its selector matches several unrelated processes.
    pub(crate) fn set_ambiguous(&self, on: bool) {
        self.ambiguous.store(on, Relaxed);
    }

    /// The app served a certificate that is (`matches`) or is not the one on disk, expiring at
    /// `not_after` (Unix seconds).
    pub(crate) fn served(&self, matches: bool, not_after: f64) {
        if let Some(s) = &self.served {
            s.matches.store(matches, Relaxed);
            s.expiry.set(not_after);
            s.looked.store(true, Relaxed);
        }
    }

    /// An HTTP call answered `status` (`None`: no answer); `failure`: why the attempt failed, if
    /// it did.
    pub(crate) fn call(
        &self,
        status: Option<u16>,
        failure: Option<crate::action::http::metrics::CallFailure>,
    ) {
        if let Some(calls) = &self.calls {
            calls.record(status, failure);
        }
    }

    /// Where its reconciler stands.
    pub(crate) fn set_state(&self, state: TargetState) {
        self.state.store(state as u8, Relaxed);
    }

    /// A verification outcome.
    pub(crate) fn verified(&self, ok: bool) {
        if let Some(v) = &self.verify {
            if ok { &v.successes } else { &v.failures }.fetch_add(1, Relaxed);
        }
    }
}

/// Every target's families; `shared_versions`: whether versions compare across pods (only then
/// is [`APPLIED_VERSION`] written).
pub(in crate::report) fn families(t: &[Arc<TargetMetrics>], shared_versions: bool, out: &mut Emit) {
    let each = |f: &dyn Fn(&TargetMetrics) -> Option<Metric>| {
        t.iter().filter_map(|t| f(t)).collect::<Vec<_>>()
    };
    let by_result = |t: &TargetMetrics, ok: &AtomicU64, failed: &AtomicU64| {
        [
            counter(
                &[("target", &t.name), ("result", "success")],
                ok.load(Relaxed),
            ),
            counter(
                &[("target", &t.name), ("result", "failure")],
                failed.load(Relaxed),
            ),
        ]
    };
    out.push(
        RELOADS.of(t
            .iter()
            .flat_map(|t| by_result(t, &t.successes, &t.failures))
            .collect()),
    );
    out.push(DURATION.of(each(&|t| Some(t.durations.sample(&[("target", &t.name)])))));
    out.push(LAST_SUCCESS.of(each(&|t| {
        (t.successes.load(Relaxed) > 0).then(|| gauge(&[("target", &t.name)], t.last_success.get()))
    })));
    out.push(STALE.of(each(&|t| {
        Some(gauge(&[("target", &t.name)], flag(&t.stale)))
    })));
    out.push(APPLIED_VERSION.of(if shared_versions {
        each(&|t| {
            let v = (*lock(&t.applied))?.short();
            Some(gauge(&[("target", &t.name), ("version", &v)], 1.0))
        })
    } else {
        Vec::new()
    }));
    out.push(
        STATE.of(t
            .iter()
            .flat_map(|t| {
                let current = t.state.load(Relaxed);
                TargetState::ALL.iter().map(move |s| {
                    let on = *s as u8 == current;
                    gauge(
                        &[("target", &t.name), ("state", s.as_str())],
                        if on { 1.0 } else { 0.0 },
                    )
                })
            })
            .collect()),
    );
    out.push(
        crate::action::restart::metrics::ENVIRONMENT_STALE
            .of(each(&|t| t.environment.sample(&t.name))),
    );
    let workers: Vec<_> = t
        .iter()
        .filter_map(|t| t.workers.samples(&t.name))
        .collect();
    let (total, older) = workers.into_iter().unzip();
    out.push(crate::reload::workers::WORKERS.of(total));
    out.push(crate::reload::workers::WORKERS_OLDER.of(older));
    out.push(AMBIGUOUS.of(each(&|t| {
        Some(gauge(&[("target", &t.name)], flag(&t.ambiguous)))
    })));
    fn looked(t: &TargetMetrics) -> Option<&Served> {
        t.served.as_ref().filter(|s| flag(&s.looked) > 0.0)
    }
    out.push(SERVED_MATCH.of(each(&|t| {
        looked(t).map(|s| gauge(&[("target", &t.name)], flag(&s.matches)))
    })));
    out.push(SERVED_EXPIRY.of(each(&|t| {
        looked(t).map(|s| gauge(&[("target", &t.name)], s.expiry.get()))
    })));
    out.push(TLS_INSECURE.of(each(&|t| {
        Some(gauge(&[("target", &t.name)], flag(&t.tls_insecure)))
    })));
    out.push(
        VERIFY.of(t
            .iter()
            .filter_map(|t| t.verify.as_ref().map(|v| (t, v)))
            .flat_map(|(t, v)| by_result(t, &v.successes, &v.failures))
            .collect()),
    );
}
