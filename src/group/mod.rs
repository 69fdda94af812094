//! One task per watch group: decides when to scan (debounced events, kubelet's commit point, the
//! resync timer, polling), scans, keeps the group's watches in line with what the scan found, and
//! publishes what its targets must hold.
//!
//! What the targets must hold travels through a `tokio::sync::watch` channel: the latest value
//! wins, so a burst of changes coalesces and nothing queues up behind a slow target. Every scan
//! that is not waiting for a writer publishes, either a version or "held back" (see
//! [`crate::assess`]): the targets then know which scan they have acted on.
//!
//! Where the group's files live decides where its filesystem calls run ([`crate::lane`]): on a
//! memory filesystem (every Secret volume), the scan runs on the runtime thread within a small
//! [`Budget`](crate::scan::Budget) (secrets are small: no thread handoff on the reload path),
//! and one that exceeds it runs again on the group's lane. Anywhere else every call of the group
//! (the scan, its watches, the access checks) runs on the lane, where a call that never returns
//! holds this group only: it is reported, the group is held (its targets stale) and read again
//! once the call returns.
//!
//! The task and its loop (when to scan) are here; the scan itself is in files of its own, which
//! import this one (it imports neither):
//!
//! - `look`: where a scan runs (inline within the budget, or on the lane) and what comes back;
//! - `one_scan`: one scan, from the look to the record (publish, watches, assessment);
//! - `publish`: the publish decision, pure;
//! - `version`: what a scan publishes (`Desired`, `Version`);
//! - `bookkeeping`: status, metrics and log lines of each scan, each change logged once.

mod bookkeeping;
mod look;
mod one_scan;
pub(crate) mod publish;
mod version;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::assess::Policy;
use crate::config::GroupConfig;
use crate::lane::{Lane, Place};
use crate::lock;
use crate::process::identity::IdentityResolver;
use crate::report::metrics::{GroupMetrics, Metrics};
use crate::report::status::GroupEntry;
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};
use crate::watch::Wake;
use crate::watch::inotify::{GroupId, WatchHub};
pub(crate) use version::{Announced, Content, Desired, DesiredRx, Version};

/// Polling interval when inotify cannot be used and `--poll-interval` was not given.
pub(crate) const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// After a scan that ran out of a resource (descriptors, threads), the next one comes this soon.
const RESOURCE_RETRY: Duration = Duration::from_secs(1);

/// Timers of a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Safety-net rescan interval.
    pub resync: Option<Duration>,
    /// Polling interval (forced or fallback).
    pub poll_interval: Duration,
    /// Polling was asked for (`--poll-interval`): not a problem to warn about.
    pub forced_poll: bool,
}

/// The task of one watch group.
pub(crate) struct GroupTask {
    /// The group's configuration.
    pub cfg: Arc<GroupConfig>,
    /// Fingerprint key.
    pub key: FingerprintKey,
    /// The shared inotify watcher, and this group's id in it.
    pub hub: Arc<WatchHub>,
    /// This group's id in the hub.
    pub id: GroupId,
    /// Wakeups from the event reader.
    pub wake: Arc<Wake>,
    /// Where outcomes go.
    pub tx: watch::Sender<Option<Desired>>,
    /// The group's entry on the status board.
    pub status: GroupEntry,
    /// The group's series.
    pub metrics: Arc<GroupMetrics>,
    /// The daemon's metrics (watch errors).
    pub daemon_metrics: Arc<Metrics>,
    /// Timers.
    pub timing: Timing,
    /// Told once the first scan is done and the watches are set up.
    pub ready: Option<oneshot::Sender<()>>,
    /// Finds the app's identity for the access verdicts (taken out while a job on the lane
    /// uses it; `None` for good only if such a job was lost).
    pub identity: Option<IdentityResolver>,
    /// Where the group's filesystem calls run when they may stall.
    pub lane: Lane,
}

/// What the task remembers between scans.
struct Memory {
    published: Option<Fingerprint>,
    resync_round: u64,
    polling: bool,
    scanned_once: bool,
    /// Whether each watched path was a directory when first seen, by path.
    was_dir: std::collections::HashMap<std::path::PathBuf, bool>,
    /// The last scan exceeded the inline budget: the next one goes to the lane at once.
    large: bool,
    /// Where the group's files live, and the mount table's generation when that was found.
    place: (Place, Option<u64>),
    /// A scan could not be made or ran out of a resource: the next one is due then.
    retry_at: Option<Instant>,
    /// What was last reported, so that each change is logged once.
    books: bookkeeping::Books,
    /// New directories were watched after the last scan: a change may have landed before the
    /// watch, so scan again at once.
    rescan: bool,
    /// Since when scans found the content still changing.
    unconfirmed_since: Option<Instant>,
    /// What a version without certificates, environment keys or tokens shares (an `Arc` of an empty
    /// slice still allocates).
    no_certs: Arc<[crate::scan::CertOnDisk]>,
    no_keys: Arc<[(String, Fingerprint)]>,
    no_tokens: Arc<[(std::path::PathBuf, crate::scan::token::TokenClaims)]>,
}

impl GroupTask {
    /// Runs until `stop` turns true.
    // An async block: an `async fn` would keep `self` twice in the task's state (ARCHITECTURE.md,
    // "A task's state is sized for its idle life").
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        async move {
            let mut mem = Memory {
                published: None,
                resync_round: 0,
                polling: false,
                scanned_once: false,
                was_dir: std::collections::HashMap::new(),
                large: false,
                place: (Place::Other, None),
                retry_at: None,
                books: bookkeeping::Books::default(),
                unconfirmed_since: None,
                rescan: false,
                no_certs: Arc::new([]),
                no_keys: Arc::new([]),
                no_tokens: Arc::new([]),
            };
            let mut next_resync = self.timing.resync.map(|d| Instant::now() + d);
            let mut last_scan = Instant::now();
            // One timer for the loop, moved only when its deadline changes: an event that ends a wait
            // leaves the timer wheel alone on its way to the scan.
            let timer = tokio::time::sleep_until(tokio::time::Instant::now());
            tokio::pin!(timer);
            let mut timer_at = None;
            if !Box::pin(self.scan(&mut mem, false, &mut stop)).await {
                return;
            }
            loop {
                if std::mem::take(&mut mem.rescan) {
                    if !Box::pin(self.scan(&mut mem, false, &mut stop)).await {
                        return;
                    }
                    continue;
                }
                let events_due = lock(&self.wake.debounce).due();
                let poll_due = mem.polling.then(|| last_scan + self.timing.poll_interval);
                // A hold that lasts past the timeout is reported when it does, not at the next event.
                let escalation = mem.books.escalation_due(self.cfg.consistency_timeout);
                let due = [events_due, escalation, mem.retry_at]
                    .into_iter()
                    .flatten()
                    .min();
                let next = [due, next_resync, poll_due].into_iter().flatten().min();
                // A deadline already passed (kubelet's commit point) is acted on now: tokio's timer
                // would add up to a millisecond.
                if next.is_none_or(|t| t > Instant::now()) {
                    if let Some(t) = next
                        && timer_at != Some(t)
                    {
                        timer.as_mut().reset(t.into());
                        timer_at = Some(t);
                    }
                    tokio::select! {
                        _ = self.wake.notify.notified() => continue,
                        _ = &mut timer, if next.is_some() => {}
                        _ = crate::stop::stopped(&mut stop) => return,
                    }
                }
                let now = Instant::now();
                let resync_now = next_resync.is_some_and(|t| t <= now);
                let due_now = due.is_some_and(|t| t <= now) || poll_due.is_some_and(|t| t <= now);
                if !resync_now && !due_now {
                    continue;
                }
                if resync_now {
                    mem.resync_round += 1;
                    next_resync = self.timing.resync.map(|d| now + d);
                    if mem.polling && !self.timing.forced_poll {
                        self.hub.try_restore();
                    }
                    // Events are pending (a writer may be half-way): their own scan, when their quiet
                    // period ends, serves as the resync (it carries the new round).
                    if !due_now && events_due.is_some() {
                        continue;
                    }
                }
                let commit = {
                    let mut d = lock(&self.wake.debounce);
                    let commit = d.is_commit();
                    d.fire();
                    commit
                };
                last_scan = now;
                // Boxed: idle groups keep only their loop state.
                if !Box::pin(self.scan(&mut mem, commit, &mut stop)).await {
                    return;
                }
            }
        }
    }

    /// What may hold a version back, as the group is configured.
    fn policy(&self) -> Policy {
        Policy {
            access: self.cfg.access_policy,
            consistency: self.cfg.consistency_check,
        }
    }
}

/// The keys an app consuming the group as environment variables was given: the files directly in
/// a watched directory (a Secret volume's keys) and watched files, by file name; `None` for a
/// group consumed as files.
pub(crate) fn env_keys(
    cfg: &GroupConfig,
    scan: &crate::scan::Scan,
) -> Option<Arc<[(String, Fingerprint)]>> {
    if cfg.consumed_as != crate::config::ConsumedAs::Env {
        return None;
    }
    let keys = scan
        .files
        .iter()
        .filter(|f| {
            cfg.paths.contains(&f.path)
                || f.path
                    .parent()
                    .is_some_and(|p| cfg.paths.iter().any(|w| w == p))
        })
        .filter_map(|f| Some((f.path.file_name()?.to_str()?.to_string(), f.fingerprint)))
        // What envFrom can make a variable of: a name of letters, digits, '-', '.', '_'. A file
        // named otherwise is no variable of the app (and its name is never shown as one).
        .filter(|(name, _)| {
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        })
        .collect();
    Some(keys)
}
