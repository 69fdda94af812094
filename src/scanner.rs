//! One task per watch group: decides when to scan (debounced events, kubelet's commit point,
//! the resync timer, polling), scans, keeps the group's watches in line with what the scan found,
//! and publishes each new complete version to the group's targets.
//!
//! Versions travel through a `tokio::sync::watch` channel: the latest value wins, so a burst of
//! changes coalesces and nothing queues up behind a slow target.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::config::GroupConfig;
use crate::fingerprint::{Fingerprint, FingerprintKey};
use crate::metrics::Metrics;
use crate::snapshot::{self, Scan};
use crate::state::{State, lock};
use crate::watch::{Wake, WatchError, WatchHub};

/// Polling interval when inotify cannot be used and `--poll-interval` was not given.
pub const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(2);

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
}

/// What the scanner remembers between scans.
struct Memory {
    published: Option<Fingerprint>,
    resync_round: u64,
    polling: bool,
    problems: Vec<String>,
    scanned_once: bool,
    /// Duration of the last scan: decides whether the next one runs inline.
    last_scan_took: Duration,
}

impl GroupScanner {
    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut mem = Memory {
            published: None,
            resync_round: 0,
            polling: false,
            problems: Vec::new(),
            scanned_once: false,
            last_scan_took: INLINE_SCAN_LIMIT,
        };
        let mut next_resync = self.resync.map(|d| Instant::now() + d);
        let mut last_scan = Instant::now();
        self.scan(&mut mem, false).await;
        loop {
            let due = lock(&self.wake.debounce).due();
            let poll_due = mem.polling.then(|| last_scan + self.poll_interval);
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
            lock(&self.wake.debounce).fire();
            last_scan = now;
            self.scan(&mut mem, resync_now).await;
        }
    }

    /// One scan: read the content, reconcile the watches, record, publish.
    async fn scan(&mut self, mem: &mut Memory, resync: bool) {
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
        // Publish first and let the targets act; the bookkeeping below can wait that long.
        let changed = match scan.fingerprint {
            Some(fp) if mem.published != Some(fp) || resync => {
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
        self.record(mem, &scan, watched, changed);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }

    /// Status, metrics and logs of one scan.
    fn record(
        &self,
        mem: &mut Memory,
        scan: &Scan,
        watched: Result<(), WatchError>,
        changed: bool,
    ) {
        let name = self.group.name.as_str();
        self.record_watch_mode(mem, watched);
        let mut g = lock(&self.state.groups[self.index]);
        g.record_scan(scan);
        if changed {
            let now = SystemTime::now();
            g.changes += 1;
            g.last_change = Some(now);
            drop(g);
            self.metrics.changes_total.with_label_values(&[name]).inc();
            let unix = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.metrics
                .last_change_timestamp_seconds
                .with_label_values(&[name])
                .set(unix);
            let fp = scan.fingerprint.map(|f| f.short()).unwrap_or_default();
            tracing::info!(watch = name, fingerprint = %fp, files = scan.files.len(), "content changed");
        } else {
            drop(g);
        }
        self.metrics
            .watched_files
            .with_label_values(&[name])
            .set(scan.files.len() as i64);
        if scan.problems != mem.problems {
            if scan.problems.is_empty() {
                tracing::info!(watch = name, "content complete again");
            } else {
                if scan.problems.iter().any(|p| p.starts_with("cannot read")) {
                    self.metrics.watch_error("read");
                }
                tracing::warn!(watch = name, problems = ?scan.problems, "content incomplete: nothing is reloaded until it is complete");
            }
            mem.problems = scan.problems.clone();
        }
        for s in &scan.skipped {
            tracing::debug!(watch = name, "{s}");
        }
    }

    fn record_watch_mode(&self, mem: &mut Memory, watched: Result<(), WatchError>) {
        let name = self.group.name.as_str();
        let mode = match &watched {
            Ok(()) => {
                if mem.polling {
                    tracing::info!(
                        watch = name,
                        "inotify watches set up again: polling stopped"
                    );
                }
                mem.polling = false;
                "inotify".to_string()
            }
            Err(_) if self.forced_poll => {
                mem.polling = true;
                "poll".to_string()
            }
            Err(e) => {
                if !mem.polling {
                    tracing::warn!(watch = name, interval = ?self.poll_interval, "{e}: polling instead");
                }
                mem.polling = true;
                format!("poll (fallback: {e})")
            }
        };
        self.metrics
            .polling
            .with_label_values(&[name])
            .set(i64::from(mem.polling));
        lock(&self.state.groups[self.index]).watch_mode = mode;
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
