//! What a reconciler shows of itself after each step: its entry on the status board and its
//! metrics (the state it is in, desired against applied, stale, what the app served and how its
//! environment compared).

use std::time::SystemTime;

use super::progress::Progress;
use super::reconciler::Reconciler;
use super::served::Served;
use crate::group::Version;
use crate::lock;
use crate::report::status::{ServedDisk, ServedStatus, TargetState};

impl Reconciler {
    /// Records how the app's environment compared with the files (`--consumed-as env`).
    pub(super) fn saw_environment(&self) {
        if let Some(e) = self.action.environment() {
            self.metrics.environment(!e.keys.differing.is_empty());
            lock(&self.status).environment = Some(e.clone());
        }
    }

    /// Records what the app served.
    pub(super) fn saw_served(&self, v: &Version, s: &Served) {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        self.metrics.served(s.matches, unix(s.not_after));
        let endpoint = self
            .cfg()
            .served_cert
            .as_ref()
            .map(|sc| sc.label())
            .unwrap_or_default();
        lock(&self.status).served_certificate = Some(ServedStatus {
            endpoint,
            matches_disk: s.matches,
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
        });
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
