//! A target's entry: where its reconciler stands, what it applied against what is on disk, its
//! last attempt and error, and what it found of the app (the served certificate, the
//! environment). Its head ([`TargetHead`]) is what a reader of `/status` relies on.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::shared::{Stalled, rfc3339, rfc3339_required, short_fingerprint};
use crate::scan::fingerprint::Fingerprint;

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
    /// Nothing sent: no process yet, no signal handler yet, or a restart awaited (the app's
    /// environment differs: after the daemon's restart signal, or, with `--signal none`, from
    /// someone else). Counts no failure.
    Waiting,
    /// The signal was sent; the app's workers that started before the change are awaited
    /// (`--applied-when workers-replaced`): stale until they exit.
    Draining,
    /// An action failed; retried after a backoff.
    Retrying,
    /// Retries used up until the next change or resync, a configuration problem (ambiguous
    /// target, an ignored signal), or old workers still alive after `--worker-drain-timeout`.
    Failed,
    /// The content on disk is held back (incomplete, inconsistent, unreadable): nothing fit to
    /// apply.
    Held,
}

impl TargetState {
    /// Every state, for the `target_state` metric.
    pub(crate) const ALL: [TargetState; 8] = [
        TargetState::Idle,
        TargetState::Acting,
        TargetState::Coalescing,
        TargetState::Waiting,
        TargetState::Draining,
        TargetState::Retrying,
        TargetState::Failed,
        TargetState::Held,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TargetState::Idle => "idle",
            TargetState::Acting => "acting",
            TargetState::Coalescing => "coalescing",
            TargetState::Waiting => "waiting",
            TargetState::Draining => "draining",
            TargetState::Retrying => "retrying",
            TargetState::Failed => "failed",
            TargetState::Held => "held",
        }
    }
}

/// What a reader of `/status` (the doctor) relies on about a target: written by the daemon as
/// the first fields of its [`TargetStatus`], read back as this same type ([`super::StatusHead`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetHead {
    /// Target name.
    pub name: String,
    /// Whether the target does not hold the content on disk (held-back content included).
    pub stale: bool,
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
    pub served_certificate: Option<Box<ServedStatus>>,
    /// The app's environment against the files (`--consumed-as env`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Box<EnvironmentStatus>>,
    /// The token claims (`aud`, `iss`, `sub`, `scope`) in which the version the target holds
    /// differs from the one on disk; empty when none does or the held version's are unknown.
    pub token_claims_changed: Vec<ClaimChanged>,
    /// The workers of the signalled process against the version on disk (signal targets, once
    /// counted); absent for other kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Box<WorkersStatus>>,
}

/// The workers (live children) of a signal target's process, against the version on disk.
#[derive(Debug, Clone, Serialize)]
pub struct WorkersStatus {
    /// Live workers.
    pub total: usize,
    /// Those that started after the reference time: they hold the version.
    pub current: usize,
    /// Those that did not.
    pub older_than_version: usize,
    /// The oldest of them (at most 64): they hold an older version.
    pub older: Vec<OldWorkerStatus>,
    /// A worker must have started after this to hold the version: the later of the content's
    /// change and the reload signal sent for it.
    #[serde(serialize_with = "rfc3339_required")]
    pub reference: SystemTime,
    /// How long the version the older workers predate had been there when they were counted
    /// (seconds since the reference).
    pub version_age_seconds: f64,
    /// When they were counted.
    #[serde(serialize_with = "rfc3339_required")]
    pub checked_at: SystemTime,
    /// Counts made since the daemon started (this one included).
    pub counts: u64,
    /// Why they could not be counted at the last look (the process is gone, procfs unreadable).
    pub error: Option<String>,
}

/// A worker that started before the reference time.
#[derive(Debug, Clone, Serialize)]
pub struct OldWorkerStatus {
    /// Its pid.
    pub pid: i32,
    /// Its name (escaped).
    pub name: String,
    /// When it started.
    #[serde(serialize_with = "rfc3339_required")]
    pub started: SystemTime,
}

/// A token claim that differs between the version a target holds and the one on disk.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimChanged {
    /// The file.
    pub path: String,
    /// `aud`, `iss`, `sub` or `scope`.
    pub claim: &'static str,
    /// Its value in the version the target holds (bounded, escaped; lists joined by spaces).
    pub held: String,
    /// Its value on disk.
    pub on_disk: String,
}

/// How an app's environment compares with the watched files, by key name (never a value).
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentStatus {
    /// The process compared.
    pub pid: i32,
    /// When.
    #[serde(serialize_with = "rfc3339_required")]
    pub checked_at: SystemTime,
    /// Comparisons made since the daemon started (this one included).
    pub comparisons: u64,
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
    /// Whether the app's workers were told apart at the last check after a reload (which
    /// process accepted each look); when not, `note` says why and one connection was checked.
    pub per_worker: bool,
    /// The workers (processes holding the listening socket) a look reached, in pid order.
    pub workers: Vec<ServedWorker>,
    /// The workers no look reached: not checked, never counted as good.
    pub not_checked: Vec<ServedProcess>,
    /// Why the workers could not be told apart, or what else the looks met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A worker and the certificate it served.
#[derive(Debug, Clone, Serialize)]
pub struct ServedWorker {
    /// Its pid (in the daemon's PID namespace).
    pub pid: i32,
    /// Its name (escaped).
    pub name: String,
    /// The serial it served, hexadecimal.
    pub serial: String,
    /// The keyed fingerprint of that certificate (short).
    pub fingerprint: String,
    /// Whether it is a certificate of the disk.
    pub matches_disk: bool,
}

/// A process, by pid and name.
#[derive(Debug, Clone, Serialize)]
pub struct ServedProcess {
    /// Its pid.
    pub pid: i32,
    /// Its name (escaped).
    pub name: String,
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
    pub(crate) fn set_state(&mut self, state: TargetState) {
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

/// The last error of a target.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    /// When it happened.
    #[serde(serialize_with = "rfc3339_required")]
    pub at: SystemTime,
    /// What went wrong and what to do.
    pub message: String,
}
