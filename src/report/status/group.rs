//! A watch group's entry: what its last scan found (paths, files, owners and modes, keyed
//! fingerprints, problems, what was skipped), and whether the app can read it.

use std::time::SystemTime;

use serde::Serialize;

use super::shared::{Stalled, rfc3339, rfc3339_required};
use crate::assess::access::Verdict;
use crate::assess::{Assessment, Hold};
use crate::process::identity::AppIdentity;
use crate::scan::fingerprint::FingerprintKey;
use crate::scan::token::TokenClaims;
use crate::scan::{Layout, Problem, Scan, index_by_path};
use crate::text;

/// How a group notices changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// inotify.
    Inotify,
    /// Polling, as asked (`--poll-interval`).
    Poll,
    /// Polling because inotify could not be used (see `watch_fallback`).
    PollFallback,
}

/// The last scan of a group.
#[derive(Debug, Clone, Serialize)]
pub struct LastScan {
    /// When it started.
    #[serde(serialize_with = "rfc3339_required")]
    pub at: SystemTime,
    /// When it started, in CLOCK_MONOTONIC nanoseconds: comparable with other processes of the
    /// machine (tests use it to know that a scan saw their change).
    pub started_monotonic_ns: u64,
    /// How long it took.
    pub duration_ms: f64,
}

/// What `/status` says about a watch group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// How changes are noticed.
    pub watch_mode: WatchMode,
    /// Why inotify is not used, when it is not.
    pub watch_fallback: Option<String>,
    /// Whether the current version is complete (every path there, every file readable).
    pub complete: bool,
    /// Keyed fingerprint of the current complete version.
    pub fingerprint: Option<String>,
    /// Watched paths and their layout.
    pub paths: Vec<PathStatus>,
    /// Files of the current version.
    pub files: Vec<FileStatus>,
    /// What is wrong with the content on disk: why the version is incomplete, and tokens that
    /// expired or are not valid yet (`token_expired`, `token_not_yet_valid`: said, the version
    /// is not held back for them; looked at again each time `/status` is read).
    pub problems: Vec<Problem>,
    /// Why its PEM material is not usable.
    pub inconsistent: Vec<String>,
    /// PEM material that could not be checked.
    pub not_checked: Vec<String>,
    /// Why the content on disk is not reloaded into the app; empty when it is.
    pub held_back: Vec<Hold>,
    /// Since when it is held back.
    #[serde(serialize_with = "rfc3339")]
    pub held_back_since: Option<SystemTime>,
    /// The app's identity, as the access verdicts use it; `null` when unknown.
    pub app_identity: Option<AppIdentity>,
    /// Declared and actual app identity differ.
    pub identity_drift: Option<String>,
    /// Entries skipped (special files, loops, symlinks leading out).
    pub skipped: Vec<String>,
    /// Distinct content changes seen since start.
    pub changes: u64,
    /// Scans completed since start.
    pub scans: u64,
    /// The last scan.
    pub last_scan: Option<LastScan>,
    /// A filesystem call of the group that has not returned within `--fs-stall-timeout`: the
    /// group is held until it does.
    pub stalled: Option<Stalled>,
    /// Last content change.
    #[serde(serialize_with = "rfc3339")]
    pub last_change: Option<SystemTime>,
    /// When the newest part of the content appeared on disk.
    #[serde(serialize_with = "rfc3339")]
    pub content_time: Option<SystemTime>,
}

/// A watched path and its layout.
#[derive(Debug, Clone, Serialize)]
pub struct PathStatus {
    /// The path as configured.
    pub path: String,
    /// Kubelet volume, plain directory, file, missing.
    pub layout: Layout,
}

/// A file of the current version.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// Path as the app sees it.
    pub path: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Mode in octal, like `0640`.
    pub mode: String,
    /// Whether it is empty (the exact size is never shown).
    pub empty: bool,
    /// Keyed fingerprint of the file.
    pub fingerprint: String,
    /// Whether the app can read it; `null` when the app's identity is unknown.
    pub access: Option<Verdict>,
    /// When its earliest certificate expires.
    #[serde(serialize_with = "rfc3339")]
    pub cert_expires: Option<SystemTime>,
    /// When the JWT it holds expires (`exp`; also in `token`, kept for readers of this field).
    #[serde(serialize_with = "rfc3339")]
    pub token_expires: Option<SystemTime>,
    /// The claims of the JWT it holds (bounded and escaped; never the token or its signature).
    pub token: Option<TokenClaims>,
}

impl GroupStatus {
    /// Records the outcome of a scan and its assessment.
    pub fn update(&mut self, scan: &Scan, a: &Assessment, last: LastScan, key: &FingerprintKey) {
        self.scans += 1;
        self.last_scan = Some(last);
        self.complete = scan.problems.is_empty();
        if let Some(fp) = &scan.fingerprint {
            self.fingerprint = Some(fp.short());
        }
        self.paths = scan
            .layouts
            .iter()
            .map(|(p, layout)| PathStatus {
                path: text::path(p),
                layout: *layout,
            })
            .collect();
        // By path, once: a group may hold thousands of files.
        let verdicts = index_by_path(&a.verdicts);
        let certs = index_by_path(&scan.cert_expiry);
        let tokens = index_by_path(&scan.tokens);
        self.files = scan
            .files
            .iter()
            .map(|f| FileStatus {
                path: text::path(&f.path),
                uid: f.uid,
                gid: f.gid,
                mode: format!("{:04o}", f.mode),
                empty: f.empty,
                // Bound to the file's path: two files of equal content show different values,
                // so a file someone may write cannot be used to test guesses of another's.
                fingerprint: key
                    .digest_parts([(f.path.as_os_str().as_encoded_bytes(), &f.fingerprint)])
                    .short(),
                access: verdicts.get(f.path.as_path()).map(|v| (*v).clone()),
                cert_expires: certs.get(f.path.as_path()).map(|t| **t),
                token_expires: tokens.get(f.path.as_path()).and_then(|t| t.exp),
                token: tokens.get(f.path.as_path()).map(|t| (*t).clone()),
            })
            .collect();
        self.problems = scan.problems.clone();
        self.check_tokens(SystemTime::now());
        self.inconsistent = scan.inconsistent.clone();
        self.not_checked = scan.not_checked.clone();
        if a.held_back.is_empty() {
            self.held_back_since = None;
        } else if self.held_back.is_empty() {
            self.held_back_since = Some(SystemTime::now());
        }
        self.held_back = a.held_back.clone();
        self.app_identity = a.identity.app.clone();
        self.identity_drift = a.identity.drift.clone();
        self.skipped = scan.skipped.clone();
        self.content_time = scan.content_time;
    }
}

impl GroupStatus {
    /// Replaces the token problems with what the files' tokens are at `now`: a token expires
    /// between two scans, and `/status` says so when it is read.
    pub(crate) fn check_tokens(&mut self, now: SystemTime) {
        self.problems.retain(|p| p.kind.incomplete());
        let found = self
            .files
            .iter()
            .filter_map(|f| f.token.as_ref()?.problem(&f.path, now));
        self.problems.extend(found);
    }
}
