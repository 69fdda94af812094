//! What a reconciler shows of itself after each step: its entry on the status board and its
//! metrics (the state it is in, desired against applied, stale, what the app served and how its
//! environment compared).

use std::time::SystemTime;

use super::progress::Progress;
use super::reconciler::Reconciler;
use super::served::Served;
use super::served_workers::Workers;
use crate::group::Version;
use crate::lock;
use crate::report::status::{ServedDisk, ServedProcess, ServedStatus, ServedWorker, TargetState};

impl Reconciler {
    /// Records how the app's environment compared with the files (`--consumed-as env`).
    pub(super) fn saw_environment(&self) {
        if let Some(e) = self.action.environment() {
            self.metrics.environment(!e.keys.differing.is_empty());
            lock(&self.status).environment = Some(Box::new(e.clone()));
        }
    }

    /// Records what the app served; with `workers`, what the check across the app's workers
    /// found so far (without: a single look, at start or a resync, that keeps what the last
    /// check found of the workers).
    pub(super) fn saw_served(&self, v: &Version, s: &Served, workers: Option<&Workers>) {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        // Told apart, the workers decide: each one seen serves the disk's certificate (a look
        // that met an old worker on its way out, no longer holding the port, is not the app's
        // answer). Otherwise the look does.
        let matches = match workers {
            Some(w) if w.per_worker && !w.seen.is_empty() => {
                w.seen.iter().all(|w| w.served.matches)
            }
            _ => s.matches,
        };
        self.metrics.served(matches, unix(s.not_after));
        if let Some(w) = workers {
            self.metrics
                .served_workers(w.per_worker.then(|| w.counts()));
        }
        let endpoint = self
            .cfg()
            .served_cert
            .as_ref()
            .map(|sc| sc.label())
            .unwrap_or_default();
        let mut t = lock(&self.status);
        let before = t.served_certificate.take();
        let (per_worker, workers, not_checked, note) = match (workers, before) {
            (Some(w), _) => shown_workers(w),
            (None, Some(b)) => (b.per_worker, b.workers, b.not_checked, b.note),
            (None, None) => (
                false,
                Vec::new(),
                Vec::new(),
                Some(
                    "one connection checked: at start and at a resync the daemon looks once; \
                      after a reload, at every worker"
                        .to_string(),
                ),
            ),
        };
        t.served_certificate = Some(Box::new(ServedStatus {
            endpoint,
            matches_disk: matches,
            serial: s.serial.clone(),
            fingerprint: s.fingerprint.short(),
            not_after: s.not_after,
            disk: v
                .certs
                .iter()
                .map(|c| ServedDisk {
                    path: crate::text::path(&c.path),
                    serial: c.serial.clone(),
                    fingerprint: c.fingerprint.short(),
                })
                .collect(),
            checked_at: SystemTime::now(),
            per_worker,
            workers,
            not_checked,
            note,
        }));
    }

    pub(super) fn set_state(&self, state: TargetState) {
        lock(&self.status).set_state(state);
        self.metrics.set_state(state);
    }

    /// Nothing more to do for the scan `scan_ns`: idle, draining (old workers awaited), or
    /// failed until the next change.
    pub(super) fn settle(&self, p: &Progress, v: &Version, scan_ns: u64) {
        let state = match p.draining_for(v) {
            _ if p.applied == Some(v.fingerprint) => TargetState::Idle,
            Some(d) if !d.expired => TargetState::Draining,
            _ => TargetState::Failed,
        };
        self.set_state(state);
        lock(&self.status).settled_scan_monotonic_ns = Some(scan_ns);
    }

    /// The content on disk is held back: the target does not hold it, and nothing is done.
    pub(super) fn show_held(&self, scan_ns: u64) {
        self.metrics.set_stale(true);
        self.metrics.set_state(TargetState::Held);
        let mut t = lock(&self.status);
        t.set_state(TargetState::Held);
        t.desired_fingerprint = None;
        if !t.head.stale {
            t.stale_since = Some(SystemTime::now());
        }
        t.head.stale = true;
        t.settled_scan_monotonic_ns = Some(scan_ns);
    }

    /// Publishes desired/applied and the stale flag.
    pub(super) fn show_desired(&self, v: &Version, p: &Progress) {
        let stale = p.applied != Some(v.fingerprint);
        self.metrics.set_stale(stale);
        self.metrics.set_applied(p.applied);
        let mut t = lock(&self.status);
        t.desired_fingerprint = Some(v.fingerprint);
        t.applied_fingerprint = p.applied;
        match (stale, t.head.stale) {
            (true, false) => t.stale_since = Some(SystemTime::now()),
            (false, _) => t.stale_since = None,
            _ => {}
        }
        t.head.stale = stale;
    }
}

/// The workers as `/status` shows them.
fn shown_workers(w: &Workers) -> (bool, Vec<ServedWorker>, Vec<ServedProcess>, Option<String>) {
    let seen = w
        .seen
        .iter()
        .map(|s| ServedWorker {
            pid: s.info.pid,
            name: crate::text::value(&s.info.comm),
            serial: s.served.serial.clone(),
            fingerprint: s.served.fingerprint.short(),
            matches_disk: s.served.matches,
        })
        .collect();
    let not_checked = w
        .not_checked
        .iter()
        .map(|p| ServedProcess {
            pid: p.pid,
            name: crate::text::value(&p.comm),
        })
        .collect();
    (w.per_worker, seen, not_checked, w.note.clone())
}
