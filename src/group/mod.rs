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
//! [`Budget`] (secrets are small: no thread handoff on the reload path), and one that exceeds it
//! runs again on the group's lane. Anywhere else every call of the group (the scan, its watches,
//! the access checks) runs on the lane, where a call that never returns holds this group only:
//! it is reported, the group is held (its targets stale) and read again once the call returns.
//!
//! - [`publish`]: the publish decision, pure;
//! - `version`: what a scan publishes ([`Desired`], [`Version`]);
//! - `bookkeeping`: status, metrics and log lines of each scan, each change logged once.

mod bookkeeping;
pub mod publish;
mod version;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::assess::{Assessment, Policy, assess, held_back_by_content};
use crate::config::{AccessPolicy, GroupConfig};
use crate::lane::{Heard, Lane, Place, Ran};
use crate::lock;
use crate::process::identity::IdentityResolver;
use crate::report::metrics::{GroupMetrics, Metrics};
use crate::report::status::{GroupEntry, LastScan};
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};
use crate::scan::{self, Budget, Scan};
use crate::watch::Wake;
use crate::watch::inotify::{GroupId, WatchHub};
use publish::{Decision, Scanned};
pub use version::{Announced, Content, Desired, DesiredRx, Version};

/// Polling interval when inotify cannot be used and `--poll-interval` was not given.
pub const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A new version is published only when no file data was written within this time after its scan
/// started (see [`publish::needs_confirmation`]); the kernel queues a truncate's events before the
/// truncated file can be read, so a short wait lets them through.
const CONFIRM: Duration = Duration::from_millis(20);

/// What a scan on the runtime thread may do; more is done on the blocking pool.
const INLINE_BUDGET: Budget = Budget {
    bytes: 256 * 1024,
    entries: 256,
};

/// After a scan that ran out of a resource (descriptors, threads), the next one comes this soon.
const RESOURCE_RETRY: Duration = Duration::from_secs(1);

/// Timers of a group.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Safety-net rescan interval.
    pub resync: Option<Duration>,
    /// Polling interval (forced or fallback).
    pub poll_interval: Duration,
    /// Polling was asked for (`--poll-interval`): not a problem to warn about.
    pub forced_poll: bool,
}

/// The task of one watch group.
pub struct GroupTask {
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
    /// Whether each watched path was a directory when first seen.
    kinds: Vec<Option<bool>>,
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
    /// What a version without certificates or environment keys shares (an `Arc` of an empty
    /// slice still allocates).
    no_certs: Arc<[crate::scan::CertOnDisk]>,
    no_keys: Arc<[(String, Fingerprint)]>,
}

impl GroupTask {
    /// The assessment of a scan made on this thread (the group's files are in memory; finding
    /// the app never waits on its pid file, see [`IdentityResolver`]).
    fn assess_inline(&mut self, scan: &Scan, policy: Policy) -> Assessment {
        match self.identity.as_mut() {
            Some(identity) => assess(scan, identity, policy),
            None => Assessment {
                held_back: held_back_by_content(scan, policy),
                ..Assessment::default()
            },
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut mem = Memory {
            published: None,
            resync_round: 0,
            polling: false,
            scanned_once: false,
            kinds: vec![None; self.cfg.paths.len()],
            large: false,
            place: (Place::Other, None),
            retry_at: None,
            books: bookkeeping::Books::default(),
            unconfirmed_since: None,
            rescan: false,
            no_certs: Arc::new([]),
            no_keys: Arc::new([]),
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

    /// Whether file data was written since the scan started (after a short wait for events still
    /// on their way): the content is still being written, and what was read may be half of it.
    async fn still_changing(&self) -> bool {
        tokio::time::sleep(CONFIRM).await;
        if lock(&self.wake.debounce).wrote() {
            tracing::debug!("content still changing: reading it again after the quiet period");
            return true;
        }
        false
    }

    /// Looks at the content: on this thread within the budget when the group's files live in
    /// memory, else on the group's lane, where the watches are reconciled and the access
    /// checked too. `None` when there is nothing to act on (stopped, no thread, a call that
    /// ran out of a resource: reported, and read again soon).
    async fn look(&mut self, mem: &mut Memory, stop: &mut watch::Receiver<bool>) -> Option<Look> {
        let (mounts, generation) = self.hub.mounts();
        if mem.place == (Place::Memory, Some(generation)) && !mem.large {
            if let Some(scan) = read_settled(&self.cfg, &self.key, &mem.kinds, Some(INLINE_BUDGET))
            {
                return Some(Look {
                    scan,
                    off_thread: None,
                });
            }
            mem.large = true;
        }
        let worker = match self.lane.turn().await {
            Ok(w) => w,
            Err(why) => {
                tracing::warn!(
                    "cannot read the watched files: {why}; trying again in {RESOURCE_RETRY:?}"
                );
                mem.retry_at = Some(Instant::now() + RESOURCE_RETRY);
                return None;
            }
        };
        let mut identity = self.identity.take();
        let (cfg, key, kinds, hub, id) = (
            self.cfg.clone(),
            self.key.clone(),
            mem.kinds.clone(),
            self.hub.clone(),
            self.id,
        );
        let policy = self.policy();
        let mounts = (mem.place.1 != Some(generation)).then_some(mounts);
        let job = move || {
            let scan = read_settled(&cfg, &key, &kinds, None).expect("no budget");
            // Found again only when the mount table changed since it was last found.
            let place =
                mounts.map(|m| crate::lane::classify(&cfg.paths, cfg.follow_external_symlinks, &m));
            let watched = hub.reconcile(id, &scan.watch);
            let assessment = match identity.as_mut() {
                Some(identity) => assess(&scan, identity, policy),
                None => Assessment {
                    held_back: held_back_by_content(&scan, policy),
                    ..Assessment::default()
                },
            };
            (
                scan,
                OffThread {
                    place,
                    watched,
                    assessment,
                },
                identity,
            )
        };
        let lane = self.lane;
        let ran = lane
            .run(worker, job, stop, |heard| match heard {
                Heard::Stalled(stall) => self.stalled(stall),
                Heard::Resumed { after } => self.resumed(after),
            })
            .await;
        match ran {
            Ran::Done((scan, off, identity)) => {
                self.identity = identity;
                if lock(&self.status).stalled.take().is_some() {
                    // What returned was read long ago: read again at once.
                    mem.rescan = true;
                }
                if let Some(place) = off.place {
                    mem.place = (place, Some(generation));
                }
                Some(Look {
                    scan,
                    off_thread: Some(off),
                })
            }
            Ran::Stopped | Ran::Lost => None,
        }
    }

    /// A call on the lane has not returned: reported, and the group held (its targets do not
    /// hold what is on disk, whatever it is now).
    fn stalled(&self, stall: &crate::lane::Stall) {
        tracing::warn!("{stall}");
        lock(&self.status).stalled = Some(crate::report::status::Stalled::of(stall));
        self.metrics.set_stalled(true);
        self.tx.send_replace(Some(Desired {
            content: Content::Held,
            scan_ns: crate::monotonic_ns(),
        }));
    }

    /// The call reported stalled returned.
    fn resumed(&self, after: Duration) {
        tracing::info!(after = ?after, "the stalled filesystem call returned: reading again");
        self.metrics.set_stalled(false);
    }

    fn policy(&self) -> Policy {
        Policy {
            access: self.cfg.access_policy,
            consistency: self.cfg.consistency_check,
        }
    }

    /// One scan: read the content, reconcile the watches, assess, publish, record. `commit`: the
    /// scan follows kubelet's swap. Returns `false` when stopped.
    async fn scan(
        &mut self,
        mem: &mut Memory,
        commit: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let scan_ns = crate::monotonic_ns();
        let failures = crate::report::resources::failures();
        let Some(Look {
            mut scan,
            mut off_thread,
        }) = self.look(mem, stop).await
        else {
            return !*stop.borrow();
        };
        if scan.torn {
            tracing::info!(
                reads = TORN_RETRIES + 1,
                "a kubelet volume kept swapping while it was read: going by the last read"
            );
        }
        // Ran out of descriptors or threads while reading: what was read may lack what could
        // not be opened. Reported as it is, and read again soon.
        mem.retry_at = (crate::report::resources::failures() != failures)
            .then(|| Instant::now() + RESOURCE_RETRY);
        // Back on the runtime thread once the content is small again.
        mem.large =
            scan.work.bytes > INLINE_BUDGET.bytes || scan.work.entries > INLINE_BUDGET.entries;
        for (kind, (_, layout)) in mem.kinds.iter_mut().zip(&scan.layouts) {
            if kind.is_none() {
                *kind = layout.is_dir();
            }
        }
        let first = !mem.scanned_once;
        mem.scanned_once = true;
        // Access verdicts are needed before publishing only when they can hold a version back;
        // otherwise they wait until the targets have acted. Off the thread, the job made them.
        let policy = self.policy();
        let blocking = policy.access == AccessPolicy::Block;
        let mut assessed = off_thread
            .as_mut()
            .map(|o| std::mem::take(&mut o.assessment));
        let before = match (&assessed, blocking) {
            (Some(a), _) => Assessment {
                held_back: a.held_back.clone(),
                ..Assessment::default()
            },
            (None, true) => {
                let a = self.assess_inline(&scan, policy);
                let held_back = a.held_back.clone();
                assessed = Some(a);
                Assessment {
                    held_back,
                    ..Assessment::default()
                }
            }
            (None, false) => Assessment {
                held_back: held_back_by_content(&scan, policy),
                ..Assessment::default()
            },
        };
        let scanned = Scanned {
            fingerprint: scan.fingerprint,
            held: !before.held_back.is_empty(),
            first,
            immutable: commit && scan.all_kubelet(),
        };
        let changing = publish::needs_confirmation(&scanned, mem.published)
            && self.still_changing().await
            && publish::keep_waiting(
                *mem.unconfirmed_since.get_or_insert(started),
                Instant::now(),
                self.cfg.debounce_max,
            );
        let mut changed = false;
        let mut announced = None;
        if !changing {
            mem.unconfirmed_since = None;
            let decision = publish::decide(&scanned, mem.published);
            let content = match decision {
                Decision::Held => Content::Held,
                Decision::Same(fp) | Decision::Changed(fp) => {
                    changed = matches!(decision, Decision::Changed(_)) && !first;
                    mem.published = Some(fp);
                    let flag = Arc::new(Announced::new(!changed));
                    announced = Some(flag.clone());
                    Content::Version(Arc::new(Version {
                        fingerprint: fp,
                        content_time: scan.content_time,
                        resync_round: mem.resync_round,
                        at_start: first,
                        seen_at: started,
                        certs: if scan.certs.is_empty() {
                            mem.no_certs.clone()
                        } else {
                            scan.certs.clone().into()
                        },
                        keys: env_keys(&self.cfg, &scan).unwrap_or_else(|| mem.no_keys.clone()),
                        announced: flag,
                    }))
                }
            };
            self.tx.send_replace(Some(Desired { content, scan_ns }));
            // The targets act now, before the bookkeeping below: nothing but the scan stands
            // between the event and the action. Their log lines wait for this one (see
            // `Announced`), so the log still reads in causal order.
            tokio::task::yield_now().await;
            drop(std::mem::take(&mut scan.closing));
            if changed {
                self.note_change(&scan);
            }
            if let Some(flag) = announced {
                flag.set();
            }
        }
        // The watches follow what the scan found; a directory watched only now may have changed
        // before its watch: scan again. (Off the thread, the job reconciled them.)
        let watched = match off_thread.map(|o| o.watched) {
            Some(w) => w,
            None => self.hub.reconcile(self.id, &scan.watch),
        };
        if matches!(watched, Ok(true)) {
            mem.rescan = true;
        }
        let watched = watched.map(|_| ());
        let assessment = match assessed {
            Some(a) => a,
            None => self.assess_inline(&scan, policy),
        };
        self.report_watch_mode(mem, watched);
        let last = LastScan {
            at: started_wall,
            started_monotonic_ns: scan_ns,
            duration_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        };
        self.report(&mut mem.books, &scan, &assessment, last);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        true
    }
}

/// Scans read again when a kubelet volume swapped under them.
const TORN_RETRIES: usize = 10;

/// What one look at the content found.
struct Look {
    scan: Scan,
    /// Made on the lane with the scan (files not in memory).
    off_thread: Option<OffThread>,
}

/// What a job on the lane did besides the scan.
struct OffThread {
    /// Where the files live, when found again (the mount table changed since the last time).
    place: Option<Place>,
    /// The watches reconciled with the scan's.
    watched: Result<bool, crate::watch::WatchError>,
    /// The assessment.
    assessment: Assessment,
}

/// Reads the content (within `budget`: `None` when it ran out), again while a kubelet volume
/// swaps under the read: the newer version instead of one kubelet has already removed. Bounded:
/// a volume swapping faster than it can be read is reported as it was found (still `torn`).
fn read_settled(
    cfg: &GroupConfig,
    key: &FingerprintKey,
    kinds: &[Option<bool>],
    budget: Option<Budget>,
) -> Option<Scan> {
    let mut scan = read_content(cfg, key, kinds, budget)?;
    for _ in 0..TORN_RETRIES {
        if !scan.torn {
            break;
        }
        tracing::debug!("a kubelet volume swapped during the scan: reading it again");
        scan = read_content(cfg, key, kinds, budget)?;
    }
    Some(scan)
}

/// Reads the group's content; `None` when the budget ran out.
fn read_content(
    cfg: &GroupConfig,
    key: &FingerprintKey,
    kinds: &[Option<bool>],
    budget: Option<Budget>,
) -> Option<Scan> {
    let opts = scan::Options {
        key,
        max_files: cfg.max_files,
        follow_external_symlinks: cfg.follow_external_symlinks,
        kinds,
        served_certs: cfg.targets.iter().any(|t| t.served_cert.is_some()),
    };
    match budget {
        Some(b) => scan::scan_within(&cfg.paths, opts, b),
        None => Some(scan::scan(&cfg.paths, opts)),
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
