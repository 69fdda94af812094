//! The claims of the tokens a target holds, against those on disk: a projected token whose
//! audience, issuer, subject or scope changed looks like any other content change, but an app
//! that still holds the old token gets 401/403 from a service that wants the new one. So the
//! reconciler keeps the claims of the version its target holds (the group publishes each
//! version's claims beside it, an `Arc` shared by the group's targets: nothing is copied), and
//! says which claims the version on disk changes: `token_claim_changed{watch,path,claim}` while
//! they differ, and one log line per claim when a new version is published ("audience changed
//! from A to B; the app holds the version with A").
//!
//! What is held is the last version the target is known to hold: a failed reload leaves the
//! target's version unknown to the decisions (`progress`), but the app most likely still holds
//! the one before, and its claims are the ones to compare. At start, the target holds the first
//! version when the decisions assume so; a version it held before the sidecar's restart (the
//! state file keeps fingerprints, never claims) has unknown claims: nothing is compared until it
//! holds one seen by this run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::group::Version;
use crate::scan::fingerprint::Fingerprint;
use crate::scan::token::{Claim, TokenClaims};
use crate::text;

/// The claims of a version's tokens, by file.
type Tokens = Arc<[(PathBuf, TokenClaims)]>;

/// What a reconciler keeps of its target's tokens.
#[derive(Debug, Default)]
pub(crate) struct HeldClaims {
    /// The version the target is known to hold, and its tokens' claims.
    held: Option<(Fingerprint, Tokens)>,
    /// The version whose changes were logged (each once).
    said: Option<Fingerprint>,
}

/// One claim that differs between the token a target holds and the one on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimChange {
    /// The file, as the app sees it.
    pub path: PathBuf,
    /// Which claim.
    pub claim: Claim,
    /// Its value in the version the target holds, as shown.
    pub held: String,
    /// Its value on disk, as shown.
    pub on_disk: String,
}

impl HeldClaims {
    /// Follows what the target holds (`applied`, as the decisions know it) while `v` is on disk;
    /// the claims that differ between the two.
    pub(crate) fn follow(&mut self, v: &Version, applied: Option<Fingerprint>) -> Vec<ClaimChange> {
        match applied {
            Some(fp) if fp == v.fingerprint => self.held = Some((fp, v.tokens.clone())),
            // A version seen before this run (the state file): its claims are unknown.
            Some(fp) if self.held.as_ref().is_none_or(|(h, _)| *h != fp) => self.held = None,
            // Unknown after a failure: the app most likely holds the last version it took.
            _ => {}
        }
        self.changes(v)
    }

    /// The claims that differ between the held version and `v`.
    pub(crate) fn changes(&self, v: &Version) -> Vec<ClaimChange> {
        match &self.held {
            Some((fp, held)) if *fp != v.fingerprint => changes(held, &v.tokens),
            _ => Vec::new(),
        }
    }

    /// The changes of `v` to log: once per version.
    pub(crate) fn unsaid(&mut self, v: &Version) -> Vec<ClaimChange> {
        if self.said == Some(v.fingerprint) {
            return Vec::new();
        }
        self.said = Some(v.fingerprint);
        self.changes(v)
    }
}

/// Logs each change of `v` (once per version; see [`HeldClaims::unsaid`]).
pub(crate) fn say(changes: &[ClaimChange], v: &Version) {
    for c in changes {
        tracing::warn!(version = %v.fingerprint, path = %text::path(&c.path), claim = c.claim.as_str(),
            "{} changed from {} to {}; the app holds the version with {}",
            c.claim.noun(), c.held, c.on_disk, c.held);
    }
}

/// The metric's view of `changes`: (file as shown, claim).
pub(crate) fn series(changes: &[ClaimChange]) -> BTreeSet<(String, Claim)> {
    changes
        .iter()
        .map(|c| (text::path(&c.path), c.claim))
        .collect()
}

/// The claims that differ between the tokens of two versions, for each file that holds a token
/// in both (a token that appears or goes is a change of files, not of claims).
fn changes(held: &[(PathBuf, TokenClaims)], disk: &[(PathBuf, TokenClaims)]) -> Vec<ClaimChange> {
    let mut out = Vec::new();
    for (path, now) in disk {
        let Some((_, before)) = held.iter().find(|(p, _)| p == path) else {
            continue;
        };
        for claim in Claim::ALL {
            if before.differs(now, claim) {
                out.push(ClaimChange {
                    path: path.clone(),
                    claim,
                    held: before.shown(claim),
                    on_disk: now.shown(claim),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::scan::fingerprint::FingerprintKey;

    fn version(name: &str, aud: &str, scope: &str) -> Version {
        let claims = TokenClaims {
            aud: vec![aud.into()],
            scope: scope.split(' ').map(String::from).collect(),
            sub: Some("s".into()),
            ..TokenClaims::default()
        };
        Version {
            fingerprint: FingerprintKey::new(b"k".to_vec()).digest(name.as_bytes()),
            content_time: None,
            resync_round: 0,
            at_start: false,
            seen_at: Instant::now(),
            certs: Vec::new().into(),
            keys: Vec::new().into(),
            tokens: vec![(PathBuf::from("/t/token"), claims)].into(),
            announced: Default::default(),
        }
    }

    #[test]
    fn held_against_disk() {
        let a = version("a", "api", "read");
        let b = version("b", "other", "read write");
        let mut h = HeldClaims::default();
        assert!(h.follow(&a, None).is_empty(), "nothing held yet");
        assert!(h.follow(&a, Some(a.fingerprint)).is_empty());
        let changed = h.follow(&b, Some(a.fingerprint));
        let claims: Vec<_> = changed
            .iter()
            .map(|c| (c.claim, c.held.as_str(), c.on_disk.as_str()))
            .collect();
        assert_eq!(
            claims,
            [
                (Claim::Audience, "api", "other"),
                (Claim::Scope, "read", "read write")
            ]
        );
        assert_eq!(h.unsaid(&b).len(), 2, "said once");
        assert!(h.unsaid(&b).is_empty());
        // A failed reload of b: the app still holds a.
        assert_eq!(h.follow(&b, None).len(), 2);
        // b applied: nothing differs.
        assert!(h.follow(&b, Some(b.fingerprint)).is_empty());
        // A version held before this run: its claims are unknown.
        let c = version("c", "third", "read");
        assert!(h.follow(&b, Some(c.fingerprint)).is_empty());
        assert_eq!(
            series(&changed),
            BTreeSet::from([
                ("/t/token".to_string(), Claim::Audience),
                ("/t/token".to_string(), Claim::Scope)
            ])
        );
    }
}
