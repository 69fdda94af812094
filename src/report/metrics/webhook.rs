//! The series of `secret-reloader-inject webhook` (a process of its own, apart from the daemon's
//! [`Metrics`](super::Metrics)): its reviews by result and their duration, its certificate's
//! reloads and expiry, its connections, each family declared once beside the atomic it reads.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use super::DropReason;
use super::atomic::{AtomicF64, Counters, Durations, Label};
use crate::report::family::{Emit, Family, counter, gauge};

/// How a review was answered, for `webhook_reviews_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReviewResult {
    /// A Pod CREATE answered with a patch that injects the sidecar.
    Injected,
    /// A Pod CREATE not to be injected (not annotated, or already injected): allowed as it is.
    Unchanged,
    /// A review of something else than a Pod CREATE (the webhook's rules ask for more than
    /// they should): allowed as it is, with a warning.
    NotPod,
    /// A review that is not `admission.k8s.io/v1` or lacks its object: allowed, with a warning.
    Unsupported,
    /// The pod could not be injected (`inject` refused it): allowed as it is, with a warning.
    Error,
    /// A body that is not JSON, or whose `request.uid` cannot be read: 400.
    Malformed,
    /// A body over the size limit: 413, the connection closed.
    TooLarge,
    /// A body that did not arrive in time: 408, the connection closed.
    Timeout,
    /// No room to buffer one more body (every review's body counts against one budget): 503.
    Busy,
}

impl Label for ReviewResult {
    const ALL: &'static [ReviewResult] = &[
        ReviewResult::Injected,
        ReviewResult::Unchanged,
        ReviewResult::NotPod,
        ReviewResult::Unsupported,
        ReviewResult::Error,
        ReviewResult::Malformed,
        ReviewResult::TooLarge,
        ReviewResult::Timeout,
        ReviewResult::Busy,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ReviewResult::Injected => "injected",
            ReviewResult::Unchanged => "unchanged",
            ReviewResult::NotPod => "not_pod",
            ReviewResult::Unsupported => "unsupported",
            ReviewResult::Error => "error",
            ReviewResult::Malformed => "malformed",
            ReviewResult::TooLarge => "too_large",
            ReviewResult::Timeout => "timeout",
            ReviewResult::Busy => "busy",
        }
    }
}

/// Whether a changed certificate and key could be loaded, for
/// `webhook_certificate_reloads_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadResult {
    /// The new pair is served from the next handshake on.
    Success,
    /// The new pair does not parse or its key is not the certificate's: the previous pair is
    /// still served.
    Failure,
}

impl Label for ReloadResult {
    const ALL: &'static [ReloadResult] = &[ReloadResult::Success, ReloadResult::Failure];

    fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// Every series of the webhook.
#[derive(Debug, Default)]
pub(crate) struct WebhookMetrics {
    /// [`REVIEWS`].
    reviews: Counters<ReviewResult>,
    /// [`DURATION`].
    durations: Durations,
    /// [`RELOADS`].
    reloads: Counters<ReloadResult>,
    /// [`EXPIRY`], Unix seconds.
    expiry: AtomicF64,
    /// A certificate is loaded: [`EXPIRY`] is written.
    loaded: AtomicBool,
    /// [`OPEN`].
    open: AtomicI64,
    /// [`DROPPED`].
    dropped: Counters<DropReason>,
}

const BUILD_INFO: Family = Family::gauge("build_info", "Always 1; the version is a label.");
const REVIEWS: Family = Family::counter(
    "webhook_reviews_total",
    "AdmissionReviews answered, by result (every one but malformed, too_large, timeout and busy \
     is allowed with a 200).",
);
const DURATION: Family = Family::histogram(
    "webhook_review_duration_seconds",
    "Time from a review's request head to its answer, body read included.",
);
const RELOADS: Family = Family::counter(
    "webhook_certificate_reloads_total",
    "Changes of the serving certificate or key seen, by result (a failure keeps the previous pair).",
);
const EXPIRY: Family = Family::gauge(
    "webhook_certificate_expiry_timestamp_seconds",
    "notAfter of the certificate served, Unix time.",
);
const OPEN: Family = Family::gauge(
    "webhook_connections_open",
    "Connections open on the webhook's listeners.",
);
const DROPPED: Family = Family::counter(
    "webhook_connections_dropped_total",
    "Connections closed before they were done, by reason (capacity, header_timeout: a request \
     head or a TLS handshake not in time, or idle past the keep-alive; header_too_large; error).",
);

impl WebhookMetrics {
    /// A review answered with `result`, `took` after its head arrived.
    pub(crate) fn review(&self, result: ReviewResult, took: Duration) {
        self.reviews.add(result);
        self.durations.observe(took);
    }

    /// A changed pair was (`Success`) or was not loaded.
    pub(crate) fn reload(&self, result: ReloadResult) {
        self.reloads.add(result);
    }

    /// The certificate served now expires at `not_after` (Unix seconds).
    pub(crate) fn serving(&self, not_after: f64) {
        self.expiry.set(not_after);
        self.loaded.store(true, Relaxed);
    }

    /// A connection was accepted (`+1`) or ended (`-1`).
    pub(crate) fn open_delta(&self, d: i64) {
        self.open.fetch_add(d, Relaxed);
    }

    /// A connection was closed before it was done.
    pub(crate) fn dropped(&self, why: DropReason) {
        self.dropped.add(why);
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = Emit { buf: Vec::new() };
        out.push(BUILD_INFO.of(vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)]));
        out.push(
            REVIEWS.of(self
                .reviews
                .counts()
                .map(|(r, n)| counter(&[("result", r.as_str())], n))
                .collect()),
        );
        out.push(DURATION.of(vec![self.durations.sample(&[])]));
        out.push(
            RELOADS.of(self
                .reloads
                .counts()
                .map(|(r, n)| counter(&[("result", r.as_str())], n))
                .collect()),
        );
        if self.loaded.load(Relaxed) {
            out.push(EXPIRY.of(vec![gauge(&[], self.expiry.get())]));
        }
        out.push(OPEN.of(vec![gauge(&[], self.open.load(Relaxed) as f64)]));
        out.push(
            DROPPED.of(self
                .dropped
                .counts()
                .map(|(r, n)| counter(&[("reason", r.as_str())], n))
                .collect()),
        );
        String::from_utf8(out.buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_written_from_the_start() {
        let m = WebhookMetrics::default();
        let text = m.encode();
        for line in [
            "secret_reloader_build_info{version=",
            "secret_reloader_webhook_reviews_total{result=\"injected\"} 0",
            "secret_reloader_webhook_reviews_total{result=\"too_large\"} 0",
            "secret_reloader_webhook_review_duration_seconds_count 0",
            "secret_reloader_webhook_certificate_reloads_total{result=\"failure\"} 0",
            "secret_reloader_webhook_connections_dropped_total{reason=\"capacity\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("expiry_timestamp"), "nothing loaded yet");
        m.serving(1.9e9);
        m.review(ReviewResult::Unchanged, Duration::from_millis(2));
        let text = m.encode();
        assert!(
            text.contains(
                "secret_reloader_webhook_certificate_expiry_timestamp_seconds 1900000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("secret_reloader_webhook_reviews_total{result=\"unchanged\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "secret_reloader_webhook_review_duration_seconds_bucket{le=\"0.0025\"} 1"
            ),
            "{text}"
        );
    }
}
