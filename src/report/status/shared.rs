//! What both kinds of entries use: a stalled filesystem call as shown, and how times and
//! fingerprints are written (RFC 3339; short keyed fingerprints).

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::scan::fingerprint::Fingerprint;
use crate::text;

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
    pub(crate) fn of(stall: &crate::lane::Stall) -> Stalled {
        Stalled {
            path: stall.path.as_deref().map(text::path),
            since: stall.since,
            message: stall.to_string(),
        }
    }
}

pub(super) fn short_fingerprint<S: Serializer>(
    f: &Option<Fingerprint>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.serialize_str(&f.short()),
        None => s.serialize_none(),
    }
}

pub(super) fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339_required(t, s),
        None => s.serialize_none(),
    }
}

pub(super) fn rfc3339_required<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text::time(*t))
}
