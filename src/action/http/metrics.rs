//! The HTTP kind's own series: what its calls were answered with, by status, and why failed
//! ones failed. The target's series hold them (`report::metrics`); configmap-reload's
//! `requests_total` and `request_errors_total` are computed from them
//! (`report::compat_series`).

use std::sync::Mutex;

use crate::lock;
use crate::report::metrics::{Counters, Label};

/// Why an HTTP reload call failed, as configmap-reload's `request_errors_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallFailure {
    /// No answer: the connection failed or timed out, or the request could not be made.
    NoAnswer,
    /// An answer with another status than the expected one.
    Status,
    /// The expected status, but the verification after it failed.
    Verification,
}

impl Label for CallFailure {
    const ALL: &'static [CallFailure] = &[
        CallFailure::NoAnswer,
        CallFailure::Status,
        CallFailure::Verification,
    ];

    /// configmap-reload's `reason` label (`verification` is this daemon's own).
    fn as_str(self) -> &'static str {
        match self {
            CallFailure::NoAnswer => "client_request_do",
            CallFailure::Status => "client_response",
            CallFailure::Verification => "verification",
        }
    }
}

/// What the HTTP calls of a target answered, for configmap-reload's series.
#[derive(Debug, Default)]
pub(crate) struct CallSeries {
    /// (status, calls answered with it), in the order first seen.
    pub(crate) statuses: Mutex<Vec<(u16, u64)>>,
    /// Failures by why.
    pub(crate) failures: Counters<CallFailure>,
}

impl CallSeries {
    /// A call answered `status` (`None`: no answer); `failure`: why the attempt failed, if it
    /// did.
    pub(crate) fn record(&self, status: Option<u16>, failure: Option<CallFailure>) {
        if let Some(status) = status {
            let mut seen = lock(&self.statuses);
            match seen.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => seen.push((status, 1)),
            }
        }
        if let Some(f) = failure {
            self.failures.add(f);
        }
    }
}
