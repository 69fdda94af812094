//! Is a scanned version fit to be reloaded into the app?
//!
//! Brings together what a scan found (completeness, PEM consistency) and who the app is (its
//! identity, and which files it can read), and says what holds the version back, if anything:
//! - an incomplete version (a watched path missing, a file unreadable by the sidecar) always;
//! - an inconsistent one (PEM that does not parse, a key matching no certificate) unless the
//!   consistency check is off;
//! - one the app cannot read, with `--access-policy block`.

use std::path::PathBuf;

use crate::access::{Checker, Verdict};
use crate::cli::AccessPolicy;
use crate::identity::{IdentityResolver, Resolved};
use crate::snapshot::Scan;

/// What an assessment found.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    /// The app's identity (and drift), when known.
    pub identity: Resolved,
    /// Access verdict of each file of the scan, in its order; empty when the identity is unknown.
    pub verdicts: Vec<(PathBuf, Verdict)>,
    /// Why the version must not be reloaded; empty when it may.
    pub held_back: Vec<String>,
}

/// Settings of a group's assessment.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// What to do with files the app cannot read.
    pub access: AccessPolicy,
    /// Hold back inconsistent PEM material.
    pub consistency: bool,
}

/// What holds `scan` back whoever the app is: incompleteness, inconsistent PEM material.
pub fn held_back_by_content(scan: &Scan, policy: Policy) -> Vec<String> {
    let mut held_back = scan.problems.clone();
    if policy.consistency {
        held_back.extend(scan.inconsistent.iter().cloned());
    }
    held_back
}

/// Assesses `scan` for the app that `resolver` finds.
pub fn assess(scan: &Scan, resolver: &mut IdentityResolver, policy: Policy) -> Assessment {
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
            held_back.push(format!(
                "the app cannot read {}: {}",
                path.display(),
                v.reason
            ));
        }
    }
    Assessment {
        identity,
        verdicts,
        held_back,
    }
}
