//! One task per watch group: decides when to scan (debounced events, kubelet's commit point,
//! the resync timer, polling), scans, keeps the group's watches in line with what the scan found,
//! and publishes each new complete version to the group's targets.
//!
//! Versions travel through a `tokio::sync::watch` channel: the latest value wins, so a burst of
//! changes coalesces and nothing queues up behind a slow target. A version that is not fit to be
//! reloaded (see [`crate::assess`]) is held back: not published, and reported.

mod record;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::assess::{Assessment, Policy, assess, held_back_by_content};
use crate::cli::AccessPolicy;
use crate::config::GroupConfig;
use crate::fingerprint::{Fingerprint, FingerprintKey};
use crate::identity::IdentityResolver;
use crate::metrics::Metrics;
use crate::snapshot::{self, Layout, Scan};
use crate::state::{State, lock};
use crate::watch::{Wake, WatchError, WatchHub};

/// Polling interval when inotify cannot be used and `--poll-interval` was not given.
pub const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A new version is published only when no file data was written within this time after its scan
/// started. The quiet period alone cannot tell a writer that truncated a file a moment ago, whose
/// events the notify thread has not delivered yet, from one that is done; the kernel queues the
/// events before the truncated file can be read, so a short wait lets them through. Groups made
/// only of kubelet volumes skip it at their swaps: swapped-in versions never change.
const CONFIRM: Duration = Duration::from_millis(20);

/// Scans that took less than this run on the runtime thread; longer ones on the blocking pool.
const INLINE_SCAN_LIMIT: Duration = Duration::from_millis(2);

/// A complete version of a group's content, as its targets see it.
#[derive(Debug, Clone)]
pub struct Version {
    /// Keyed fingerprint of the whole version.
    pub fingerprint: Fingerprint,
    /// When its newest part appeared on disk.
    pub content_time: Option<SystemTime>,
    /// The scan that found it (files, owners, modes).
    pub scan: Arc<Scan>,
    /// Bumped by every resync, so that a version whose retries were used up is tried again.
    pub resync_round: u64,
    /// Found by the first scan after start (the app may already hold it).
    pub at_start: bool,
    /// When the scan that found it started (latency accounting in logs).
    pub seen_at: Instant,
}

/// Receiving end of a group's versions: `None` until the first complete scan.
pub type VersionRx = watch::Receiver<Option<Arc<Version>>>;

/// The scanner of one watch group.
pub struct GroupScanner {
    /// Index of the group (in `State::groups` and the watch hub).
    pub index: usize,
    /// The group's configuration.
    pub group: Arc<GroupConfig>,
    /// Fingerprint key.
    pub key: FingerprintKey,
    /// Wakeups from the notify thread.
    pub wake: Arc<Wake>,
    /// The shared inotify watcher.
    pub hub: Arc<WatchHub>,
    /// Where new versions go.
    pub tx: watch::Sender<Option<Arc<Version>>>,
    /// Status registry.
    pub state: Arc<State>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Safety-net rescan interval.
    pub resync: Option<Duration>,
    /// Polling interval (forced or fallback).
    pub poll_interval: Duration,
    /// Polling was asked for (`--poll-interval`): not a problem to warn about.
    pub forced_poll: bool,
    /// Told once the first scan is done and the watches are set up.
    pub ready: Option<oneshot::Sender<()>>,
    /// Finds the app's identity for the access verdicts.
    pub identity: IdentityResolver,
}

/// What the scanner remembers between scans.
struct Memory {
    published: Option<Fingerprint>,
    resync_round: u64,
    polling: bool,
    scanned_once: bool,
    /// What was last reported, so that each change is logged once.
    journal: record::Journal,
    /// Since when scans found the content still changing (see [`CONFIRM`]).
    unconfirmed_since: Option<Instant>,
    /// Duration of the last scan: decides whether the next one runs inline (the first one does:
    /// at start-up there is nothing else to do, and a thousand groups must not start a thousand
    /// threads).
    last_scan_took: Duration,
}

impl GroupScanner {
    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut mem = Memory {
            published: None,
            resync_round: 0,
            polling: false,
            scanned_once: false,
            journal: record::Journal::default(),
            unconfirmed_since: None,
            last_scan_took: Duration::ZERO,
        };
        let mut next_resync = self.resync.map(|d| Instant::now() + d);
        let mut last_scan = Instant::now();
        Box::pin(self.scan(&mut mem, false, false)).await;
        loop {
            let due = lock(&self.wake.debounce).due();
            let poll_due = mem.polling.then(|| last_scan + self.poll_interval);
            // A hold that lasts past the timeout is reported when it does, not at the next event.
            let escalation = mem.journal.escalation_due(self.group.consistency_timeout);
            let due = [due, escalation].into_iter().flatten().min();
            let next = [due, next_resync, poll_due].into_iter().flatten().min();
            // A deadline already passed (kubelet's commit point) is acted on now: tokio's timer
            // would add up to a millisecond.
            if next.is_none_or(|t| t > Instant::now()) {
                let sleep = async {
                    match next {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = self.wake.notify.notified() => continue,
                    _ = sleep => {}
                    _ = crate::shutdown::stopped(&mut stop) => return,
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
                next_resync = self.resync.map(|d| now + d);
            }
            let commit = {
                let mut d = lock(&self.wake.debounce);
                let commit = d.is_commit();
                d.fire();
                commit
            };
            last_scan = now;
            // Boxed, like the reconciler's attempts: idle groups keep only their loop state.
            Box::pin(self.scan(&mut mem, resync_now, commit)).await;
        }
    }

    /// Whether file data was written since the scan started (after a short wait for events still
    /// on their way): the content is still being written, and what was read may be half of it.
    async fn still_changing(&self) -> bool {
        tokio::time::sleep(CONFIRM).await;
        if lock(&self.wake.debounce).wrote() {
            tracing::debug!(watch = %self.group.name, "content still changing: reading it again after the quiet period");
            return true;
        }
        false
    }

    /// One scan: read the content, reconcile the watches, assess, publish, record.
    /// `commit`: the scan follows kubelet's swap. Unless every watched path is in a kubelet
    /// volume (whose versions are immutable once swapped in), a new version is confirmed by
    /// [`CONFIRM`] without events before it is published (see there): a plain file of the same
    /// group may be half-written at that moment.
    async fn scan(&mut self, mem: &mut Memory, resync: bool, commit: bool) {
        let started = Instant::now();
        let (paths, key, hub, index) = (
            self.group.paths.clone(),
            self.key.clone(),
            self.hub.clone(),
            self.index,
        );
        // Secrets are small: a scan that took little time last time runs right here, saving two
        // thread handoffs on the reload path. Large content goes to the blocking pool so that it
        // never stalls the admin server or other groups.
        let (scan, watched) = if mem.last_scan_took < INLINE_SCAN_LIMIT {
            scan_and_watch(&paths, &key, &hub, index)
        } else {
            match tokio::task::spawn_blocking(move || scan_and_watch(&paths, &key, &hub, index))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(watch = %self.group.name, error = %e, "scan failed unexpectedly; retrying at the next event");
                    return;
                }
            }
        };
        mem.last_scan_took = started.elapsed();
        let scan = Arc::new(scan);
        let first = !mem.scanned_once;
        mem.scanned_once = true;
        // Access verdicts are needed before publishing only when they can hold a version back;
        // otherwise they wait until the targets have acted.
        let policy = Policy {
            access: self.group.access_policy,
            consistency: self.group.consistency_check,
        };
        let blocking = policy.access == AccessPolicy::Block;
        let before = if blocking {
            assess(&scan, &mut self.identity, policy)
        } else {
            Assessment {
                held_back: held_back_by_content(&scan, policy),
                ..Assessment::default()
            }
        };
        // A writer that never stops gets its content published anyway, --debounce-max after the
        // first time it was still changing.
        let immutable = commit
            && scan
                .layouts
                .iter()
                .all(|(_, l)| matches!(l, Layout::KubeletVolume | Layout::KubeletFile));
        // The first scan is what the app started with: nothing to confirm.
        let changing = !immutable
            && !first
            && before.held_back.is_empty()
            && mem.published != scan.fingerprint
            && self.still_changing().await
            && mem.unconfirmed_since.get_or_insert(started).elapsed() < self.group.debounce_max;
        if !changing {
            mem.unconfirmed_since = None;
        }
        let changed = match scan.fingerprint {
            Some(fp)
                if !changing
                    && before.held_back.is_empty()
                    && (mem.published != Some(fp) || resync) =>
            {
                let changed = mem.published != Some(fp);
                mem.published = Some(fp);
                self.tx.send_replace(Some(Arc::new(Version {
                    fingerprint: fp,
                    content_time: scan.content_time,
                    scan: scan.clone(),
                    resync_round: mem.resync_round,
                    at_start: first,
                    seen_at: started,
                })));
                tokio::task::yield_now().await;
                changed && !first
            }
            _ => false,
        };
        let assessment = if blocking {
            before
        } else {
            assess(&scan, &mut self.identity, policy)
        };
        self.record_watch_mode(mem, watched);
        self.record(&mut mem.journal, &scan, &assessment, changed);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }
}

/// Scans, then reconciles the watches with what the scan found. When new directories had to be
/// watched, scans once more: a change landing between the first read and the new watch would
/// otherwise go unseen.
fn scan_and_watch(
    paths: &[PathBuf],
    key: &FingerprintKey,
    hub: &WatchHub,
    index: usize,
) -> (Scan, Result<(), WatchError>) {
    let scan = snapshot::scan(paths, key);
    let before: BTreeSet<PathBuf> = scan.watch_dirs.clone();
    match hub.reconcile(index, &before) {
        Ok(true) => {
            let again = snapshot::scan(paths, key);
            let res = hub.reconcile(index, &again.watch_dirs).map(|_| ());
            (again, res)
        }
        Ok(false) => (scan, Ok(())),
        Err(e) => (scan, Err(e)),
    }
}
