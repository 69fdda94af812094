//! What a group does with a scan: the publish decision, as pure functions of what was scanned
//! and what was published before (tested without a filesystem or a clock).

use std::time::{Duration, Instant};

use crate::scan::fingerprint::Fingerprint;

/// What one scan found, as far as the decision goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanned {
    /// The version's fingerprint (`None`: incomplete).
    pub fingerprint: Option<Fingerprint>,
    /// Something holds it back (incomplete, inconsistent, unreadable with the block policy).
    pub held: bool,
    /// The first scan since start: what the app started with, nothing to confirm.
    pub first: bool,
    /// The scan followed kubelet's swap and every path is in a kubelet volume: swapped-in
    /// versions never change, nothing to confirm.
    pub immutable: bool,
}

/// What to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing fit to apply: tell the targets the content is held back.
    Held,
    /// The same version as before (republished so that the targets see the scan).
    Same(Fingerprint),
    /// A new version.
    Changed(Fingerprint),
}

/// Whether the scan's version must first be confirmed: no file data written within the
/// confirmation wait after the scan started (a writer that truncated a file a moment ago, whose
/// events have not been delivered yet, would otherwise be read as done).
pub(crate) fn needs_confirmation(s: &Scanned, published: Option<Fingerprint>) -> bool {
    !s.immutable && !s.first && !s.held && s.fingerprint.is_some() && s.fingerprint != published
}

/// Whether a version still being written is waited for once more: not past `cap` since the
/// first time it was found still changing (a writer that never stops is published anyway).
pub(crate) fn keep_waiting(unconfirmed_since: Instant, now: Instant, cap: Duration) -> bool {
    now.saturating_duration_since(unconfirmed_since) < cap
}

/// The decision for a scan that is not (or no longer) waited for.
pub(crate) fn decide(s: &Scanned, published: Option<Fingerprint>) -> Decision {
    match s.fingerprint {
        Some(fp) if !s.held => {
            if published == Some(fp) {
                Decision::Same(fp)
            } else {
                Decision::Changed(fp)
            }
        }
        _ => Decision::Held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::fingerprint::FingerprintKey;

    fn fp(s: &str) -> Fingerprint {
        FingerprintKey::new(b"k".to_vec()).digest(s.as_bytes())
    }

    fn scanned(v: Option<&str>, held: bool, first: bool, immutable: bool) -> Scanned {
        Scanned {
            fingerprint: v.map(fp),
            held,
            first,
            immutable,
        }
    }

    /// Table: scan, what was published → (confirmation needed, decision).
    #[test]
    fn decisions() {
        let (a, b) = (Some(fp("a")), Some(fp("b")));
        let cases = [
            // First scan: published at once, as the version the app started with.
            (
                scanned(Some("a"), false, true, false),
                None,
                false,
                Decision::Changed(fp("a")),
            ),
            // A new plain-file version is confirmed first.
            (
                scanned(Some("b"), false, false, false),
                a,
                true,
                Decision::Changed(fp("b")),
            ),
            // A kubelet swap into a volume-only group is not.
            (
                scanned(Some("b"), false, false, true),
                a,
                false,
                Decision::Changed(fp("b")),
            ),
            // The same version: nothing to confirm, republished.
            (
                scanned(Some("a"), false, false, false),
                a,
                false,
                Decision::Same(fp("a")),
            ),
            // Incomplete or held back: held, never confirmed.
            (scanned(None, true, false, false), a, false, Decision::Held),
            (
                scanned(Some("b"), true, false, false),
                a,
                false,
                Decision::Held,
            ),
            (
                scanned(Some("b"), true, true, false),
                b,
                false,
                Decision::Held,
            ),
        ];
        for (s, published, confirm, decision) in cases {
            assert_eq!(needs_confirmation(&s, published), confirm, "{s:?}");
            assert_eq!(decide(&s, published), decision, "{s:?}");
        }
    }

    #[test]
    fn a_writer_that_never_stops_is_published_after_the_cap() {
        let t0 = Instant::now();
        let cap = Duration::from_secs(2);
        assert!(keep_waiting(t0, t0 + Duration::from_millis(1999), cap));
        assert!(!keep_waiting(t0, t0 + cap, cap));
        assert!(
            keep_waiting(t0 + Duration::from_secs(1), t0, cap),
            "a clock step back"
        );
    }
}
