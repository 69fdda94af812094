//! What a group's scan publishes to its targets: a version to hold, or "held back", stamped with
//! the scan it comes from.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::scan::fingerprint::Fingerprint;

/// A complete version of a group's content, as its targets see it.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    /// Keyed fingerprint of the whole version.
    pub fingerprint: Fingerprint,
    /// When its newest part appeared on disk.
    pub content_time: Option<SystemTime>,
    /// Bumped by every resync, so that a version whose retries were used up is tried again.
    pub resync_round: u64,
    /// Found by the first scan after start (the app may already hold it).
    pub at_start: bool,
    /// When the scan that found it started (latency accounting in logs).
    pub seen_at: Instant,
    /// The first certificate of each file (compared with what the app serves).
    pub certs: Arc<[crate::scan::CertOnDisk]>,
    /// The claims of each file holding a JWT: a target keeps those of the version it holds, to
    /// say which claims the version on disk changes (see `reload::claims`).
    pub tokens: Arc<[(std::path::PathBuf, crate::scan::token::TokenClaims)]>,
    /// For a group consumed as environment variables: each key (a file directly in a watched
    /// directory, or a watched file) by name, with the keyed fingerprint of its content.
    pub keys: Arc<[(String, Fingerprint)]>,
    /// Set once the group has logged the change (its targets log their reload after it).
    pub announced: Arc<Announced>,
}

/// A flag set once, that tasks can wait for: the change of a version has been logged.
#[derive(Debug, Default)]
pub(crate) struct Announced {
    done: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Announced {
    /// A flag, already set when `done`.
    pub(crate) fn new(done: bool) -> Self {
        Announced {
            done: done.into(),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Sets it.
    pub(crate) fn set(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Waits until it is set, at most `limit` (the group may be slow; a log line is not worth
    /// holding a reconciler up).
    pub(crate) async fn wait(&self, limit: Duration) {
        let notified = self.notify.notified();
        if self.done.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}

/// What the targets of a group must hold, after one scan.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// This version.
    Version(Arc<Version>),
    /// Nothing fit to apply: the content on disk is held back.
    Held,
}

/// The outcome of a scan, published to the group's targets.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    /// What to hold.
    pub content: Content,
    /// The scan's start, in CLOCK_MONOTONIC nanoseconds.
    pub scan_ns: u64,
}

/// Receiving end of a group's outcomes: `None` until the first scan.
pub(crate) type DesiredRx = watch::Receiver<Option<Desired>>;
