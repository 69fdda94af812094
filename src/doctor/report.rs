//! The doctor's report as data: what `gather` and `targets` fill in, what `render` writes as
//! text, and what `--output json` prints.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::assess::access::Verdict;
use crate::process::identity::{AppIdentity, Sidecar};
use crate::scan::Layout;

/// The whole report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// When it was made.
    pub time: String,
    /// secret-reloader's version.
    pub version: &'static str,
    /// The sidecar's identity and capabilities.
    pub sidecar: Sidecar,
    /// The daemon on the listen address, if one answers.
    pub daemon: DaemonView,
    /// One entry per watch group.
    pub groups: Vec<GroupReport>,
    /// Everything found wrong (exit code 1 when not empty).
    pub problems: Vec<String>,
    /// Worth knowing, not wrong.
    pub warnings: Vec<String>,
}

/// What the running daemon says.
#[derive(Debug, Serialize)]
pub(crate) struct DaemonView {
    /// Where it was asked.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// What it said, in short.
    pub detail: String,
    /// Whether each target (by name) is stale, as the daemon sees it.
    #[serde(skip)]
    pub(crate) stale: HashMap<String, bool>,
    /// The token claims in which what each target holds differs from the disk, as the daemon
    /// says them (bounded and escaped by it, escaped again here).
    #[serde(skip)]
    pub(crate) claims_changed: HashMap<String, Vec<crate::report::status::ClaimSaid>>,
    /// The time each signal target's workers must have started after, as the daemon counts
    /// them (it knows when it sent the reload).
    #[serde(skip)]
    pub(crate) workers_reference: HashMap<String, std::time::SystemTime>,
    /// The daemon's pid, when its `/status` named one that runs this same program: never a
    /// candidate for the app.
    #[serde(skip)]
    pub(crate) pid: Option<i32>,
}

/// A watch group.
#[derive(Debug, Serialize)]
pub(crate) struct GroupReport {
    /// Group name.
    pub name: String,
    /// The app's identity as access is checked against; `null` when unknown.
    pub app_identity: Option<AppIdentity>,
    /// Declared and actual identity differ.
    pub identity_drift: Option<String>,
    /// Watched paths.
    pub paths: Vec<PathReport>,
    /// Files of the current content.
    pub files: Vec<FileReport>,
    /// Why the content is incomplete.
    pub incomplete: Vec<String>,
    /// Why its PEM material is not usable.
    pub inconsistent: Vec<String>,
    /// Mounts in the app's mount table that kubelet never updates.
    pub app_frozen_mounts: Vec<String>,
    /// Targets.
    pub targets: Vec<TargetReport>,
}

/// A watched path.
#[derive(Debug, Serialize)]
pub(crate) struct PathReport {
    /// The path.
    pub path: String,
    /// Kubelet volume, plain directory or file, missing.
    pub layout: Layout,
    /// Owner uid, gid and mode of the path itself (following symlinks), when it exists.
    pub owner: Option<(u32, u32, String)>,
    /// A single-file mount (`subPath`): kubelet never updates it.
    pub single_file_mount: bool,
    /// When its content last changed.
    pub content_changed: Option<String>,
    /// How long ago, in seconds.
    pub content_age_seconds: Option<u64>,
}

/// A file of the content.
#[derive(Debug, Serialize)]
pub(crate) struct FileReport {
    /// Path as the app sees it.
    pub path: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Mode, octal.
    pub mode: String,
    /// Whether it is empty (the exact size is never shown).
    pub empty: bool,
    /// Whether the app can read it.
    pub access: Option<Verdict>,
    /// When its earliest certificate expires.
    pub cert_expires: Option<String>,
    /// The claims of the JWT it holds (bounded and escaped; never the token or its signature).
    pub token: Option<crate::scan::token::TokenClaims>,
}

/// A target and its checks.
#[derive(Debug, Serialize)]
pub(crate) struct TargetReport {
    /// Target name.
    pub name: String,
    /// Its action's kind.
    pub kind: crate::action::Kind,
    /// Checks in the order they matter.
    pub checks: Vec<Check>,
}

/// One check of a target.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    /// What is checked.
    pub what: CheckName,
    /// Whether it passed.
    pub ok: bool,
    /// What was found and, when it failed, what to do.
    pub detail: String,
}

/// What a check of a target looks at, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum CheckName {
    /// The target's process is found.
    #[serde(rename = "process")]
    Process,
    /// The process handles the signal.
    #[serde(rename = "signal")]
    Signal,
    /// The sidecar may signal it.
    #[serde(rename = "permission")]
    Permission,
    /// It holds the content on disk, by its start time or the daemon's word.
    #[serde(rename = "freshness")]
    Freshness,
    /// Its workers started after the content on disk.
    #[serde(rename = "workers")]
    Workers,
    /// The token it holds has the claims of the one on disk (the daemon's word).
    #[serde(rename = "token claims")]
    TokenClaims,
    /// The reload endpoint accepts connections.
    #[serde(rename = "endpoint")]
    Endpoint,
    /// The verify URL answers as a reload's verification wants (one GET).
    #[serde(rename = "verify endpoint")]
    VerifyEndpoint,
    /// The bearer token file is readable.
    #[serde(rename = "bearer token")]
    BearerToken,
    /// A header file is readable.
    #[serde(rename = "header file")]
    HeaderFile,
    /// The command's program is there.
    #[serde(rename = "command")]
    Command,
    /// The app's environment holds the content on disk (`--consumed-as env`).
    #[serde(rename = "environment")]
    Environment,
    /// The app serves the certificate on disk (`--verify-served-cert`).
    #[serde(rename = "served cert")]
    ServedCert,
}

impl CheckName {
    /// The name as the report writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckName::Process => "process",
            CheckName::Signal => "signal",
            CheckName::Permission => "permission",
            CheckName::Freshness => "freshness",
            CheckName::Workers => "workers",
            CheckName::TokenClaims => "token claims",
            CheckName::Endpoint => "endpoint",
            CheckName::VerifyEndpoint => "verify endpoint",
            CheckName::BearerToken => "bearer token",
            CheckName::HeaderFile => "header file",
            CheckName::Command => "command",
            CheckName::Environment => "environment",
            CheckName::ServedCert => "served cert",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Padded as asked: the text report aligns the names.
        f.pad(self.as_str())
    }
}

impl Check {
    /// A check of `what`, passed or not, with what was found.
    pub(crate) fn new(what: CheckName, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            what,
            ok,
            detail: detail.into(),
        }
    }

    /// A TCP connection to the endpoint: whether something listens, without calling it.
    pub(crate) async fn reachable(what: CheckName, e: &crate::config::Endpoint) -> Check {
        let addr = format!("{}:{}", e.host, e.port);
        let connect = tokio::net::TcpStream::connect((e.host.as_str(), e.port));
        match tokio::time::timeout(std::time::Duration::from_secs(2), connect).await {
            Ok(Ok(_)) => Check::new(what, true, format!("{addr} accepts connections")),
            Ok(Err(err)) => Check::new(what, false, format!("cannot connect to {addr}: {err}")),
            Err(_) => Check::new(what, false, format!("no answer from {addr} within 2s")),
        }
    }
}

/// A time as the report shows it.
pub(crate) fn ts(t: SystemTime) -> String {
    crate::text::time_seconds(t)
}
