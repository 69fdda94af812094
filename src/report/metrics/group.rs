//! The series of one watch group: its atomics, what records into them, and its families, each
//! declared once (name, help, type) beside the atomic it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus::proto::Metric;

use super::atomic::AtomicF64;
use crate::lock;
use crate::report::family::{Emit, Family, counter, flag, gauge};
use crate::scan::token::Claim;

/// The series of one watch group.
#[derive(Debug, Default)]
pub(crate) struct GroupMetrics {
    /// The `watch` label.
    pub(in crate::report) name: String,
    /// [`CHANGES`].
    pub(in crate::report) changes: AtomicU64,
    /// [`LAST_CHANGE`].
    pub(in crate::report) last_change: AtomicF64,
    /// [`WATCHED_FILES`].
    pub(in crate::report) watched_files: AtomicI64,
    /// [`POLLING`].
    pub(in crate::report) polling: AtomicBool,
    /// [`CONTENT_BLOCKED`].
    pub(in crate::report) content_blocked: AtomicBool,
    /// [`IDENTITY_DRIFT`].
    pub(in crate::report) identity_drift: AtomicBool,
    /// [`STALLED`]: a filesystem call of the group has not returned within the deadline.
    pub(in crate::report) stalled: AtomicBool,
    /// [`FILE_ACCESS`], [`CERT_EXPIRY`], [`TOKEN_EXPIRY`].
    pub(in crate::report) files: Mutex<FileSeries>,
    /// [`TOKEN_CLAIM_CHANGED`]: by target (its index in the group), the claims in which the
    /// version it holds differs from the one on disk, by file as shown. Written by the
    /// targets' reconcilers (what a target holds is theirs to know), read at a scrape.
    pub(in crate::report) claims_changed: Mutex<BTreeMap<usize, BTreeSet<(String, Claim)>>>,
}

const CHANGES: Family = Family::counter("changes_total", "Distinct content changes seen.");
const LAST_CHANGE: Family = Family::gauge(
    "last_change_timestamp_seconds",
    "Unix time of the last content change.",
);
const WATCHED_FILES: Family = Family::gauge("watched_files", "Files in the current version.");
const POLLING: Family = Family::gauge(
    "polling",
    "1 while the watch group is polled instead of using inotify.",
);
const CONTENT_BLOCKED: Family = Family::gauge(
    "content_blocked",
    "1 while the content on disk is held back: incomplete, inconsistent PEM, or unreadable by the app (block policy).",
);
const STALLED: Family = Family::gauge(
    "filesystem_stalled",
    "1 while a filesystem call of the watch group has not returned within --fs-stall-timeout (the group is held).",
);
const IDENTITY_DRIFT: Family = Family::gauge(
    "identity_drift",
    "1 while --app-uid/--app-gid differ from the target process's uid/gid.",
);
const FILE_ACCESS: Family = Family::gauge(
    "file_access_ok",
    "1 when the app's uid/gids can read the file (owner, group and other bits, parent directories).",
);
const CERT_EXPIRY: Family = Family::gauge(
    "cert_expiry_timestamp_seconds",
    "Unix time the earliest certificate of the file expires.",
);
const TOKEN_EXPIRY: Family = Family::gauge(
    "token_expiry_timestamp_seconds",
    "Unix time the JWT a file holds expires (its exp claim; the signature is not checked).",
);

const TOKEN_CLAIM_CHANGED: Family = Family::gauge(
    "token_claim_changed",
    "1 while the JWT a file holds differs in this claim (aud, iss, sub, scope) between the version a target of the group holds and the one on disk; 0 for the other claims of each token file.",
);

/// Per file of a group, by path as shown.
#[derive(Debug, Default)]
pub(in crate::report) struct FileSeries {
    /// Whether the app can read it.
    pub access: BTreeMap<String, bool>,
    /// Its earliest certificate's expiry, Unix seconds.
    pub cert_expiry: BTreeMap<String, f64>,
    /// The files holding a JWT, with its expiry (Unix seconds) when it has one.
    pub tokens: BTreeMap<String, Option<f64>>,
}

impl GroupMetrics {
    /// A content change seen at `unix` seconds.
    pub(crate) fn changed(&self, unix: f64) {
        self.changes.fetch_add(1, Relaxed);
        self.last_change.set(unix);
    }
    /// Files in the current version.
    pub(crate) fn set_watched_files(&self, n: usize) {
        self.watched_files.store(n as i64, Relaxed);
    }
    /// Polled instead of watched.
    pub(crate) fn set_polling(&self, on: bool) {
        self.polling.store(on, Relaxed);
    }
    /// Content held back.
    pub(crate) fn set_content_blocked(&self, on: bool) {
        self.content_blocked.store(on, Relaxed);
    }
    /// A filesystem call of the group has not returned within the deadline.
    pub(crate) fn set_stalled(&self, on: bool) {
        self.stalled.store(on, Relaxed);
    }
    /// Declared and real identity differ.
    pub(crate) fn set_identity_drift(&self, on: bool) {
        self.identity_drift.store(on, Relaxed);
    }
    /// Replaces the access verdicts (path → readable), certificate expiries (path → unix) and
    /// the files holding tokens (path → its expiry, unix, if any).
    pub(crate) fn set_files(
        &self,
        access: BTreeMap<String, bool>,
        cert_expiry: BTreeMap<String, f64>,
        tokens: BTreeMap<String, Option<f64>>,
    ) {
        *lock(&self.files) = FileSeries {
            access,
            cert_expiry,
            tokens,
        };
    }
    /// The claims (by file, as shown) in which the version the group's target `target` holds
    /// differs from the one on disk.
    pub(crate) fn set_claims_changed(&self, target: usize, changed: BTreeSet<(String, Claim)>) {
        let mut all = lock(&self.claims_changed);
        if changed.is_empty() {
            all.remove(&target);
        } else {
            all.insert(target, changed);
        }
    }
}

/// Every group's families.
pub(in crate::report) fn families(g: &[Arc<GroupMetrics>], out: &mut Emit) {
    let each = |f: &dyn Fn(&GroupMetrics) -> Option<Metric>| {
        g.iter().filter_map(|g| f(g)).collect::<Vec<_>>()
    };
    out.push(CHANGES.of(each(&|g| {
        Some(counter(&[("watch", &g.name)], g.changes.load(Relaxed)))
    })));
    out.push(LAST_CHANGE.of(each(&|g| {
        (g.changes.load(Relaxed) > 0).then(|| gauge(&[("watch", &g.name)], g.last_change.get()))
    })));
    let value = |family: &Family, value: &dyn Fn(&GroupMetrics) -> f64| {
        family.of(each(&|g| Some(gauge(&[("watch", &g.name)], value(g)))))
    };
    out.push(value(&WATCHED_FILES, &|g| {
        g.watched_files.load(Relaxed) as f64
    }));
    out.push(value(&POLLING, &|g| flag(&g.polling)));
    out.push(value(&CONTENT_BLOCKED, &|g| flag(&g.content_blocked)));
    out.push(value(&STALLED, &|g| flag(&g.stalled)));
    out.push(value(&IDENTITY_DRIFT, &|g| flag(&g.identity_drift)));
    let mut access = Vec::new();
    let mut certs = Vec::new();
    let mut tokens = Vec::new();
    let mut claims = Vec::new();
    for g in g {
        let files = lock(&g.files);
        let w = g.name.as_str();
        for (path, ok) in &files.access {
            let v = if *ok { 1.0 } else { 0.0 };
            access.push(gauge(&[("watch", w), ("path", path)], v));
        }
        for (path, t) in &files.cert_expiry {
            certs.push(gauge(&[("watch", w), ("path", path)], *t));
        }
        for (path, t) in &files.tokens {
            if let Some(t) = t {
                tokens.push(gauge(&[("watch", w), ("path", path)], *t));
            }
        }
        // Every claim of every token file, and any file whose token changed from one the
        // targets hold (a file that is no token any more).
        let mut series: BTreeMap<(String, Claim), bool> = files
            .tokens
            .keys()
            .flat_map(|p| Claim::ALL.map(|c| ((p.clone(), c), false)))
            .collect();
        for key in lock(&g.claims_changed).values().flatten() {
            series.insert(key.clone(), true);
        }
        for ((path, c), on) in series {
            let v = if on { 1.0 } else { 0.0 };
            claims.push(gauge(
                &[("watch", w), ("path", &path), ("claim", c.as_str())],
                v,
            ));
        }
    }
    out.push(FILE_ACCESS.of(access));
    out.push(CERT_EXPIRY.of(certs));
    out.push(TOKEN_EXPIRY.of(tokens));
    out.push(TOKEN_CLAIM_CHANGED.of(claims));
}
