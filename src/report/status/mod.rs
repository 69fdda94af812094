//! The status board: the live state of every watch group and target, as `/status` shows it.
//!
//! Each group's task and each target's reconciler holds its own entry (a handle from
//! [`Board::register_group`] / [`Board::register_target`]), writes it behind its own lock, held
//! for a copy and never across an await; the admin server reads a copy of each. Metrics are kept
//! apart in [`super::metrics`]; this is the detail an operator reads when a metric says something
//! is wrong. Nothing here carries secret content or a file's exact size; paths and messages are
//! escaped (see `crate::text`).

mod group;
mod shared;
mod target;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use group::{FileStatus, GroupStatus, LastScan, PathStatus, WatchMode};
use serde_json::{Value, json};
pub(crate) use shared::Stalled;
pub(crate) use target::{
    Attempt, AttemptResult, ClaimChanged, EnvironmentStatus, ErrorRecord, OldWorkerStatus,
    ServedDisk, ServedStatus, TargetHead, TargetState, TargetStatus, WorkersStatus,
};
pub(crate) use target::{ServedProcess, ServedWorker};

use crate::config::Config;
use crate::lock;
use crate::process::identity::Sidecar;
use crate::text;

/// A group's entry on the board.
pub(crate) type GroupEntry = Arc<Mutex<GroupStatus>>;
/// A target's entry on the board.
pub(crate) type TargetEntry = Arc<Mutex<TargetStatus>>;

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

/// What a reader of `/status` relies on: the head of the document [`Board::render`] writes,
/// its targets' heads in the same type the board writes them with.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StatusHead {
    /// The daemon's version.
    pub version: String,
    /// Whether every group has been scanned and watched.
    pub ready: bool,
    /// Who the daemon runs as; its pid.
    pub sidecar: SidecarHead,
    /// Every target's head, and what the doctor reads beside it.
    pub targets: Vec<TargetRead>,
}

/// A target as the doctor reads it back: its head, and the token claims it holds otherwise
/// than the disk.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TargetRead {
    /// Name and stale flag.
    #[serde(flatten)]
    pub head: TargetHead,
    /// The claims that differ (absent from an older daemon's answer).
    #[serde(default)]
    pub token_claims_changed: Vec<ClaimSaid>,
    /// Its workers' count, of which the doctor uses the reference time (a signal target's).
    #[serde(default)]
    pub workers: Option<WorkersRead>,
}

/// A token claim the daemon says differs between what a target holds and the disk.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClaimSaid {
    /// The file.
    pub path: String,
    /// `aud`, `iss`, `sub` or `scope`.
    pub claim: String,
    /// Its value in the version the target holds.
    pub held: String,
    /// Its value on disk.
    pub on_disk: String,
}

/// What the doctor reads of a target's workers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WorkersRead {
    /// The time a worker must have started after to hold the version (RFC 3339).
    pub reference: String,
}

/// The daemon's own pid, as `/status` names it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SidecarHead {
    /// Its pid (absent from what is not the daemon).
    pub pid: Option<i64>,
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
            token_claims_changed: Vec::new(),
            workers: None,
        }));
        lock(&self.targets).push(entry.clone());
        entry
    }

    /// Marks the daemon ready (a latch).
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether every group was scanned and watched once.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why the app must not start yet (`/startupz`, a native sidecar's startup probe): the first
    /// scan not done, a watched path missing or unreadable, PEM material that does not fit, or a
    /// file the app's identity cannot read (when that identity is known: --app-uid/--app-gid, or
    /// a running target process). `None`: the credentials are there for the app.
    pub(crate) fn startup_blocker(&self) -> Option<String> {
        if !self.is_ready() {
            return Some("the first scan or the watches are not done".into());
        }
        for g in lock(&self.groups).iter() {
            let g = lock(g);
            let name = &g.name;
            // A token that expired is said, not a reason to keep the app from starting.
            if let Some(p) = g.problems.iter().find(|p| p.kind.incomplete()) {
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

    /// `/status` as pretty JSON text, written from the board's entries without a JSON tree in
    /// between (a daemon of thousands of groups renders megabytes).
    pub(crate) fn render(&self) -> String {
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
            watches: lock(&self.groups)
                .iter()
                .map(|g| {
                    let mut g = lock(g).clone();
                    g.check_tokens(SystemTime::now());
                    g
                })
                .collect(),
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
