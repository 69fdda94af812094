//! Is a scanned version fit to be reloaded into the app?
//!
//! Brings together what a scan found (completeness, PEM consistency) and who the app is (its
//! identity, and which files it can read), and says what holds the version back, if anything:
//! - an incomplete version (a watched path missing, a file unreadable by the sidecar) always;
//! - an inconsistent one (PEM that does not parse, a key matching no certificate) unless the
//!   consistency check is off;
//! - one the app cannot read, with `--access-policy block`.
//!
//! `access` decides whether the app can read a file.

pub(crate) mod access;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::AccessPolicy;
use crate::process::identity::{IdentityResolver, Resolved};
use crate::scan::{ProblemKind, Scan};
use access::{Checker, Verdict};

/// Why a version is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// A watched path missing, a file the sidecar cannot read, too many files.
    Incomplete,
    /// PEM material that does not parse or a key matching no certificate.
    Inconsistent,
    /// A file the app cannot read (`--access-policy block`).
    UnreadableByApp,
}

/// One reason a version is held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// The kind of reason.
    pub reason: HoldReason,
    /// What exactly, naming the path.
    pub detail: String,
}

/// What an assessment found.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    /// The app's identity (and drift), when known.
    pub identity: Resolved,
    /// Access verdict of each file of the scan, in its order; empty when the identity is unknown.
    pub verdicts: Vec<(PathBuf, Verdict)>,
    /// Why the version must not be reloaded; empty when it may.
    pub held_back: Vec<Hold>,
}

/// Settings of a group's assessment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// What to do with files the app cannot read.
    pub access: AccessPolicy,
    /// Hold back inconsistent PEM material.
    pub consistency: bool,
}

/// What holds `scan` back whoever the app is: incompleteness, inconsistent PEM material.
pub(crate) fn held_back_by_content(scan: &Scan, policy: Policy) -> Vec<Hold> {
    let mut held = Vec::new();
    for p in &scan.problems {
        held.push(Hold {
            reason: HoldReason::Incomplete,
            detail: p.message.clone(),
        });
    }
    if policy.consistency {
        for i in &scan.inconsistent {
            held.push(Hold {
                reason: HoldReason::Inconsistent,
                detail: i.clone(),
            });
        }
    }
    held
}

/// Whether the sidecar itself cannot read part of the content (a `read` watch error).
pub(crate) fn unreadable_by_sidecar(scan: &Scan) -> bool {
    scan.problems
        .iter()
        .any(|p| p.kind == ProblemKind::Unreadable)
}

/// Assesses `scan` for the app that `resolver` finds.
pub(crate) fn assess(scan: &Scan, resolver: &mut IdentityResolver, policy: Policy) -> Assessment {
    let identity = resolver.resolve();
    let verdicts: Vec<(PathBuf, Verdict)> = match &identity.app {
        Some(app) => {
            let mut checker = Checker::new(&app.identity);
            scan.files
                .iter()
                .map(|f| (f.path.clone(), checker.file(f)))
                .collect()
        }
        None => Vec::new(),
    };
    let mut held_back = held_back_by_content(scan, policy);
    if policy.access == AccessPolicy::Block {
        for (path, v) in verdicts.iter().filter(|(_, v)| !v.readable) {
            held_back.push(Hold {
                reason: HoldReason::UnreadableByApp,
                detail: format!(
                    "the app cannot read {}: {}",
                    crate::text::path(path),
                    v.reason
                ),
            });
        }
    }
    Assessment {
        identity,
        verdicts,
        held_back,
    }
}
