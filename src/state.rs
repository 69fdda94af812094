//! The live state of every watch group and target, as `/status` shows it.
//!
//! Scanners and reconcilers write their part (each behind its own lock, held for a copy, never
//! across an await); the server reads a consistent copy of each part. Metrics are kept apart in
//! [`crate::metrics`]; this is the detail an operator reads when a metric says something is wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::access::Verdict;
use crate::assess::Assessment;
use crate::config::Config;
use crate::identity::{AppIdentity, Sidecar};
use crate::snapshot::{Layout, Scan};

/// Shared state of the daemon.
pub struct State {
    /// When the daemon started.
    started_at: SystemTime,
    /// The configuration in force; its summary (no secrets in it) is built when asked for.
    config: Arc<Config>,
    /// The sidecar's identity and capabilities.
    sidecar: Value,
    /// Latch: set once every group was scanned and its watches set up; never cleared.
    ready: AtomicBool,
    /// One entry per watch group, in configuration order.
    pub groups: Vec<Mutex<GroupStatus>>,
    /// One entry per target, in configuration order.
    pub targets: Vec<Mutex<TargetStatus>>,
}

/// What `/status` says about a watch group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// How changes are noticed: `inotify`, `poll` or `poll (fallback)`.
    pub watch_mode: String,
    /// Whether the current version is complete (every path there, every file readable).
    pub complete: bool,
    /// Keyed fingerprint of the current complete version.
    pub fingerprint: Option<String>,
    /// Watched paths and their layout.
    pub paths: Vec<PathStatus>,
    /// Files of the current version.
    pub files: Vec<FileStatus>,
    /// Why the version is incomplete.
    pub problems: Vec<String>,
    /// Why its PEM material is not usable.
    pub inconsistent: Vec<String>,
    /// PEM material that could not be checked.
    pub not_checked: Vec<String>,
    /// Why the content on disk is not reloaded into the app; empty when it is.
    pub held_back: Vec<String>,
    /// Since when it is held back.
    #[serde(serialize_with = "rfc3339")]
    pub held_back_since: Option<SystemTime>,
    /// The app's identity, as the access verdicts use it; `null` when unknown.
    pub app_identity: Option<AppIdentity>,
    /// Declared and actual app identity differ.
    pub identity_drift: Option<String>,
    /// Entries skipped (special files, loops).
    pub skipped: Vec<String>,
    /// Distinct content changes seen since start.
    pub changes: u64,
    /// Last scan.
    #[serde(serialize_with = "rfc3339")]
    pub last_scan: Option<SystemTime>,
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
    /// Size in bytes.
    pub size: u64,
    /// Keyed fingerprint of the file.
    pub fingerprint: String,
    /// Whether the app can read it; `null` when the app's identity is unknown.
    pub access: Option<Verdict>,
    /// When its earliest certificate expires.
    #[serde(serialize_with = "rfc3339")]
    pub cert_expires: Option<SystemTime>,
}

/// What `/status` says about a target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Target name.
    pub name: String,
    /// Watch group it follows.
    pub group: String,
    /// `http`, `signal` or `exec`.
    pub kind: &'static str,
    /// `idle`, `waiting` (for the process or its handler), `retrying` or `failed` (retries used up).
    pub state: &'static str,
    /// Fingerprint the target last applied; `null` when unknown (after a failed attempt).
    pub applied_fingerprint: Option<String>,
    /// Fingerprint of the current content.
    pub desired_fingerprint: Option<String>,
    /// Whether the target has not applied the current content.
    pub stale: bool,
    /// Since when it is stale.
    #[serde(serialize_with = "rfc3339")]
    pub stale_since: Option<SystemTime>,
    /// Last attempt.
    pub last_attempt: Option<Attempt>,
    /// Last success.
    #[serde(serialize_with = "rfc3339")]
    pub last_success: Option<SystemTime>,
    /// Last error.
    pub last_error: Option<ErrorRecord>,
    /// Failed attempts for the current version.
    pub failed_attempts: u32,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// When it started.
    #[serde(serialize_with = "rfc3339_required")]
    pub at: SystemTime,
    /// `success`, `skipped` or `failure`.
    pub result: &'static str,
    /// How long it took.
    pub duration_ms: f64,
    /// What was done (`SIGHUP to pid 42`, `POST ... → 200`).
    pub detail: String,
}

/// The last error of a target.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    /// When it happened.
    #[serde(serialize_with = "rfc3339_required")]
    pub at: SystemTime,
    /// What went wrong and what to do.
    pub message: String,
}

impl State {
    /// State for the given groups and targets (`(name, group, kind)`).
    pub fn new(
        config: Arc<Config>,
        sidecar: &Sidecar,
        groups: &[String],
        targets: &[(String, String, &'static str)],
    ) -> State {
        let mut sidecar = serde_json::to_value(sidecar).unwrap_or_default();
        sidecar["pid"] = std::process::id().into();
        State {
            started_at: SystemTime::now(),
            config,
            sidecar,
            ready: AtomicBool::new(false),
            groups: groups
                .iter()
                .map(|name| {
                    Mutex::new(GroupStatus {
                        name: name.clone(),
                        watch_mode: "inotify".into(),
                        complete: false,
                        fingerprint: None,
                        paths: Vec::new(),
                        files: Vec::new(),
                        problems: vec!["not scanned yet".into()],
                        inconsistent: Vec::new(),
                        not_checked: Vec::new(),
                        held_back: Vec::new(),
                        held_back_since: None,
                        app_identity: None,
                        identity_drift: None,
                        skipped: Vec::new(),
                        changes: 0,
                        last_scan: None,
                        last_change: None,
                        content_time: None,
                    })
                })
                .collect(),
            targets: targets
                .iter()
                .map(|(name, group, kind)| {
                    Mutex::new(TargetStatus {
                        name: name.clone(),
                        group: group.clone(),
                        kind,
                        state: "idle",
                        applied_fingerprint: None,
                        desired_fingerprint: None,
                        stale: false,
                        stale_since: None,
                        last_attempt: None,
                        last_success: None,
                        last_error: None,
                        failed_attempts: 0,
                    })
                })
                .collect(),
        }
    }

    /// Marks the daemon ready (a latch).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether every group was scanned and watched once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The `/status` document.
    pub fn to_json(&self) -> Value {
        let groups: Vec<GroupStatus> = self.groups.iter().map(|g| lock(g).clone()).collect();
        let targets: Vec<TargetStatus> = self.targets.iter().map(|t| lock(t).clone()).collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": humantime::format_rfc3339_millis(self.started_at).to_string(),
            "ready": self.is_ready(),
            "sidecar": self.sidecar,
            "config": self.config.summary(),
            "watches": groups,
            "targets": targets,
        })
    }
}

impl GroupStatus {
    /// Records the outcome of a scan and its assessment.
    pub fn record_scan(&mut self, scan: &Scan, a: &Assessment) {
        self.last_scan = Some(SystemTime::now());
        self.complete = scan.problems.is_empty();
        if let Some(fp) = &scan.fingerprint {
            self.fingerprint = Some(fp.short());
        }
        self.paths = scan
            .layouts
            .iter()
            .map(|(p, layout)| PathStatus {
                path: p.display().to_string(),
                layout: *layout,
            })
            .collect();
        self.files = scan
            .files
            .iter()
            .map(|f| FileStatus {
                path: f.path.display().to_string(),
                uid: f.uid,
                gid: f.gid,
                mode: format!("{:04o}", f.mode),
                size: f.size,
                fingerprint: f.fingerprint.short(),
                access: a
                    .verdicts
                    .iter()
                    .find(|(p, _)| *p == f.path)
                    .map(|(_, v)| v.clone()),
                cert_expires: scan
                    .cert_expiry
                    .iter()
                    .find(|(p, _)| *p == f.path)
                    .map(|(_, t)| *t),
            })
            .collect();
        self.problems = scan.problems.clone();
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

/// Locks a status entry; a panic elsewhere must not take `/status` down with it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
        None => s.serialize_none(),
    }
}

fn rfc3339_required<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
}
