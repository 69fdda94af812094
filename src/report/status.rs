//! The status board: the live state of every watch group and target, as `/status` shows it.
//!
//! Each group's task and each target's reconciler holds its own entry (a handle from
//! [`Board::register_group`] / [`Board::register_target`]), writes it behind its own lock, held
//! for a copy and never across an await; the admin server reads a copy of each. Metrics are kept
//! apart in [`super::metrics`]; this is the detail an operator reads when a metric says something
//! is wrong. Nothing here carries secret content or a file's exact size; paths and messages are
//! escaped (see [`crate::text`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};

use crate::assess::access::Verdict;
use crate::assess::{Assessment, Hold};
use crate::config::Config;
use crate::lock;
use crate::process::identity::{AppIdentity, Sidecar};
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};
use crate::scan::{Layout, Problem, Scan};
use crate::text;

/// A group's entry on the board.
pub type GroupEntry = Arc<Mutex<GroupStatus>>;
/// A target's entry on the board.
pub type TargetEntry = Arc<Mutex<TargetStatus>>;

/// Shared state of the daemon.
pub struct Board {
    /// When the daemon started.
    started_at: SystemTime,
    /// The configuration in force; its summary (no secrets in it) is built when asked for.
    config: Arc<Config>,
    /// The sidecar's identity and capabilities.
    sidecar: Value,
    /// Latch: set once every group was scanned and its watches set up; never cleared.
    ready: AtomicBool,
    /// Every group's entry, in registration (configuration) order.
    groups: Mutex<Vec<GroupEntry>>,
    /// Every target's entry, in registration order.
    targets: Mutex<Vec<TargetEntry>>,
}

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
    /// Why the version is incomplete.
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
    /// When the JWT it holds expires (`exp`).
    #[serde(serialize_with = "rfc3339")]
    pub token_expires: Option<SystemTime>,
}

/// Where a target's reconciler stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Holds the content on disk, or nothing to do.
    Idle,
    /// An action is in flight (see `state_since`).
    Acting,
    /// Storm protection: the next action waits for `--min-reload-interval`.
    Coalescing,
    /// Nothing sent: no process yet, or no signal handler yet.
    Waiting,
    /// An action failed; retried after a backoff.
    Retrying,
    /// Retries used up until the next change or resync, or a configuration problem (ambiguous
    /// target, an ignored signal).
    Failed,
    /// The content on disk is held back (incomplete, inconsistent, unreadable): nothing fit to
    /// apply.
    Held,
}

impl TargetState {
    /// Every state, for the `target_state` metric.
    pub const ALL: [TargetState; 7] = [
        TargetState::Idle,
        TargetState::Acting,
        TargetState::Coalescing,
        TargetState::Waiting,
        TargetState::Retrying,
        TargetState::Failed,
        TargetState::Held,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Idle => "idle",
            TargetState::Acting => "acting",
            TargetState::Coalescing => "coalescing",
            TargetState::Waiting => "waiting",
            TargetState::Retrying => "retrying",
            TargetState::Failed => "failed",
            TargetState::Held => "held",
        }
    }
}

/// What a reader of `/status` (the doctor) relies on about a target: written by the daemon as
/// the first fields of its [`TargetStatus`], read back as this same type ([`StatusHead`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetHead {
    /// Target name.
    pub name: String,
    /// Whether the target does not hold the content on disk (held-back content included).
    pub stale: bool,
}

/// What a reader of `/status` relies on: the head of the document [`Board::render`] writes,
/// its targets' heads in the same type the board writes them with.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusHead {
    /// The daemon's version.
    pub version: String,
    /// Whether every group has been scanned and watched.
    pub ready: bool,
    /// Who the daemon runs as; its pid.
    pub sidecar: SidecarHead,
    /// Every target's head.
    pub targets: Vec<TargetHead>,
}

/// The daemon's own pid, as `/status` names it.
#[derive(Debug, Clone, Deserialize)]
pub struct SidecarHead {
    /// Its pid (absent from what is not the daemon).
    pub pid: Option<i64>,
}

/// What `/status` says about a target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Its name and whether it is stale.
    #[serde(flatten)]
    pub head: TargetHead,
    /// Watch group it follows.
    pub group: String,
    /// Its action's kind.
    pub kind: crate::action::Kind,
    /// Where its reconciler stands.
    pub state: TargetState,
    /// Since when.
    #[serde(serialize_with = "rfc3339_required")]
    pub state_since: SystemTime,
    /// Fingerprint the target last applied; `null` when unknown (after a failed attempt).
    /// Kept whole and shortened when shown: nothing is formatted on the way to an action.
    #[serde(serialize_with = "short_fingerprint")]
    pub applied_fingerprint: Option<Fingerprint>,
    /// Fingerprint of the current content; `null` while it is held back.
    #[serde(serialize_with = "short_fingerprint")]
    pub desired_fingerprint: Option<Fingerprint>,
    /// Since when it is stale.
    #[serde(serialize_with = "rfc3339")]
    pub stale_since: Option<SystemTime>,
    /// The scan (its CLOCK_MONOTONIC start) whose outcome the reconciler has fully acted on: it
    /// will do nothing more without a new scan.
    pub settled_scan_monotonic_ns: Option<u64>,
    /// Last attempt.
    pub last_attempt: Option<Attempt>,
    /// Last success.
    #[serde(serialize_with = "rfc3339")]
    pub last_success: Option<SystemTime>,
    /// Last error.
    pub last_error: Option<ErrorRecord>,
    /// Failed attempts for the current version.
    pub failed_attempts: u32,
    /// A lookup of the target's pid file that has not returned within `--fs-stall-timeout`.
    pub stalled: Option<Stalled>,
    /// The certificate the app served at the last look (`--verify-served-cert`), against the
    /// one on disk; absent without that option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_certificate: Option<ServedStatus>,
    /// The app's environment against the files (`--consumed-as env`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentStatus>,
}

/// How an app's environment compares with the watched files, by key name (never a value).
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentStatus {
    /// The process compared.
    pub pid: i32,
    /// When.
    #[serde(serialize_with = "rfc3339_required")]
    pub checked_at: SystemTime,
    /// Keys holding the file's content, holding another value (the app runs on an older
    /// version), and not in its environment.
    #[serde(flatten)]
    pub keys: crate::process::environ::Compared,
    /// Why the environment could not be read.
    pub error: Option<String>,
}

/// The certificate an app served, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServedStatus {
    /// Where it was read (`HOST:PORT` or `postgres://HOST:PORT`).
    pub endpoint: String,
    /// Whether it is the first certificate of one of the watched files.
    pub matches_disk: bool,
    /// Its serial number, hexadecimal.
    pub serial: String,
    /// Its keyed fingerprint (short).
    pub fingerprint: String,
    /// Its expiry.
    #[serde(serialize_with = "rfc3339_required")]
    pub not_after: SystemTime,
    /// The certificates on disk it was compared with: (path, serial).
    pub disk: Vec<ServedDisk>,
    /// When it was read.
    #[serde(serialize_with = "rfc3339_required")]
    pub checked_at: SystemTime,
}

/// A certificate on disk it was compared with.
#[derive(Debug, Clone, Serialize)]
pub struct ServedDisk {
    /// The file.
    pub path: String,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// Keyed fingerprint (short).
    pub fingerprint: String,
}

impl TargetStatus {
    /// Moves to `state` (keeps `state_since` when it does not change).
    pub fn set_state(&mut self, state: TargetState) {
        if self.state != state {
            self.state = state;
            self.state_since = SystemTime::now();
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// The action ran and succeeded.
    Success,
    /// Nothing had to be done (the process started after the content).
    Skipped,
    /// The action failed.
    Failure,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// When it started.
    #[serde(serialize_with = "rfc3339_required")]
    pub at: SystemTime,
    /// How it ended.
    pub result: AttemptResult,
    /// How long it took.
    pub duration_ms: f64,
    /// What was done (`SIGHUP to pid 42`, `POST ... → 200`).
    pub detail: String,
}

/// A filesystem call that has not returned.
#[derive(Debug, Clone, Serialize)]
pub struct Stalled {
    /// The path it was using, when known.
    pub path: Option<String>,
    /// When it started.
    #[serde(serialize_with = "rfc3339_required")]
    pub since: SystemTime,
    /// What it means and what happens.
    pub message: String,
}

impl Stalled {
    /// The status of `stall`.
    pub fn of(stall: &crate::lane::Stall) -> Stalled {
        Stalled {
            path: stall.path.as_deref().map(text::path),
            since: stall.since,
            message: stall.to_string(),
        }
    }
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

impl Board {
    /// An empty board for `config`, run by `sidecar`.
    pub fn new(config: Arc<Config>, sidecar: &Sidecar) -> Board {
        let mut sidecar = serde_json::to_value(sidecar).unwrap_or_default();
        sidecar["pid"] = std::process::id().into();
        Board {
            started_at: SystemTime::now(),
            config,
            sidecar,
            ready: AtomicBool::new(false),
            groups: Mutex::new(Vec::new()),
            targets: Mutex::new(Vec::new()),
        }
    }

    /// A new group's entry.
    pub fn register_group(&self, name: &str) -> GroupEntry {
        let entry = Arc::new(Mutex::new(GroupStatus {
            name: name.to_string(),
            watch_mode: WatchMode::Inotify,
            watch_fallback: None,
            complete: false,
            fingerprint: None,
            paths: Vec::new(),
            files: Vec::new(),
            problems: Vec::new(),
            inconsistent: Vec::new(),
            not_checked: Vec::new(),
            held_back: Vec::new(),
            held_back_since: None,
            app_identity: None,
            identity_drift: None,
            skipped: Vec::new(),
            changes: 0,
            scans: 0,
            last_scan: None,
            stalled: None,
            last_change: None,
            content_time: None,
        }));
        lock(&self.groups).push(entry.clone());
        entry
    }

    /// A new target's entry.
    pub fn register_target(
        &self,
        name: &str,
        group: &str,
        kind: crate::action::Kind,
    ) -> TargetEntry {
        let entry = Arc::new(Mutex::new(TargetStatus {
            head: TargetHead {
                name: text::value(name),
                stale: false,
            },
            group: group.to_string(),
            kind,
            state: TargetState::Idle,
            state_since: SystemTime::now(),
            applied_fingerprint: None,
            desired_fingerprint: None,
            stale_since: None,
            settled_scan_monotonic_ns: None,
            last_attempt: None,
            last_success: None,
            last_error: None,
            failed_attempts: 0,
            stalled: None,
            served_certificate: None,
            environment: None,
        }));
        lock(&self.targets).push(entry.clone());
        entry
    }

    /// Marks the daemon ready (a latch).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether every group was scanned and watched once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why the app must not start yet (`/startupz`, a native sidecar's startup probe): the first
    /// scan not done, a watched path missing or unreadable, PEM material that does not fit, or a
    /// file the app's identity cannot read (when that identity is known: --app-uid/--app-gid, or
    /// a running target process). `None`: the credentials are there for the app.
    pub fn startup_blocker(&self) -> Option<String> {
        if !self.is_ready() {
            return Some("the first scan or the watches are not done".into());
        }
        for g in lock(&self.groups).iter() {
            let g = lock(g);
            let name = &g.name;
            if let Some(p) = g.problems.first() {
                return Some(format!("watch group '{name}': {}", p.message));
            }
            if let Some(h) = g.held_back.first() {
                return Some(format!("watch group '{name}': held back: {}", h.detail));
            }
            let unreadable = g
                .files
                .iter()
                .find_map(|f| f.access.as_ref().filter(|v| !v.readable).map(|v| (f, v)));
            if let Some((f, v)) = unreadable {
                return Some(format!(
                    "watch group '{name}': the app cannot read {}: {}",
                    f.path, v.reason
                ));
            }
        }
        None
    }

    /// How many targets are stale, of how many.
    pub fn stale_targets(&self) -> (usize, usize) {
        let targets = lock(&self.targets);
        let stale = targets.iter().filter(|t| lock(t).head.stale).count();
        (stale, targets.len())
    }

    /// The `/status` document.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.document()).unwrap_or_default()
    }

    /// `/status` as pretty JSON text, written from the board's entries without a JSON tree in
    /// between (a daemon of thousands of groups renders megabytes).
    pub fn render(&self) -> String {
        serde_json::to_string_pretty(&self.document()).unwrap_or_default()
    }

    fn document(&self) -> Document<'_> {
        Document {
            version: env!("CARGO_PKG_VERSION"),
            started_at: text::time(self.started_at),
            ready: self.is_ready(),
            sidecar: &self.sidecar,
            resources: super::resources::status(),
            state_file_error: crate::reload::state_file::state_file_failures().1.map(
                |(at, why)| {
                    json!({
                        "at": text::time(at),
                        "message": text::value(&why),
                    })
                },
            ),
            config: self.config.summary(),
            watches: lock(&self.groups).iter().map(|g| lock(g).clone()).collect(),
            targets: lock(&self.targets)
                .iter()
                .map(|t| lock(t).clone())
                .collect(),
        }
    }
}

/// The `/status` document.
#[derive(Serialize)]
struct Document<'a> {
    version: &'static str,
    started_at: String,
    ready: bool,
    sidecar: &'a Value,
    resources: Value,
    state_file_error: Option<Value>,
    config: Value,
    watches: Vec<GroupStatus>,
    targets: Vec<TargetStatus>,
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
        let verdicts: HashMap<&Path, &Verdict> =
            a.verdicts.iter().map(|(p, v)| (p.as_path(), v)).collect();
        let certs: HashMap<&Path, SystemTime> = scan
            .cert_expiry
            .iter()
            .map(|(p, t)| (p.as_path(), *t))
            .collect();
        let tokens: HashMap<&Path, SystemTime> = scan
            .token_expiry
            .iter()
            .map(|(p, t)| (p.as_path(), *t))
            .collect();
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
                cert_expires: certs.get(f.path.as_path()).copied(),
                token_expires: tokens.get(f.path.as_path()).copied(),
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

fn short_fingerprint<S: Serializer>(f: &Option<Fingerprint>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.serialize_str(&f.short()),
        None => s.serialize_none(),
    }
}

fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339_required(t, s),
        None => s.serialize_none(),
    }
}

fn rfc3339_required<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text::time(*t))
}
