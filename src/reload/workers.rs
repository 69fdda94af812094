//! A signal target's workers, followed after each reload: how many of the signalled process's
//! children started before the version on disk (see [`crate::process::workers`]), in `/status`
//! and the target's series, and, with `--applied-when workers-replaced`, the condition for the
//! version to count as applied.
//!
//! They are counted after each attempt, at each resync, and again while any predates the
//! version: soon after a change of the count (a reload replaces workers within milliseconds, or
//! one by one), less often while it stays (a websocket can keep an old worker for hours).
//! Counting reads `/proc/<pid>/stat` of each process of the namespace: cheap in a pod.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use prometheus::proto::Metric;

use super::progress::Progress;
use super::reconciler::Reconciler;
use crate::action::Action;
use crate::action::ActionConfig;
use crate::action::signal::{AppliedWhen, send::START_MARGIN};
use crate::group::Version;
use crate::lock;
use crate::process::workers::{Count, Reference};
use crate::report::family::{Family, flag, gauge};
use crate::report::status::{ErrorRecord, OldWorkerStatus, WorkersStatus};

pub(crate) const WORKERS: Family = Family::gauge(
    "workers",
    "Live workers (children) of a signal target's process, once counted.",
);
pub(crate) const WORKERS_OLDER: Family = Family::gauge(
    "workers_older_than_version",
    "Workers of a signal target's process that started before the version on disk (the later of its change and the reload sent for it): they hold an older one.",
);

/// The last count of a signal target's workers.
#[derive(Debug, Default)]
pub(crate) struct WorkerSeries {
    /// Counted at least once.
    counted: AtomicBool,
    /// [`WORKERS`].
    total: AtomicU64,
    /// [`WORKERS_OLDER`].
    older: AtomicU64,
}

impl WorkerSeries {
    fn counted(&self, c: &Count) {
        self.total.store(c.total as u64, Relaxed);
        self.older.store(c.older_count as u64, Relaxed);
        self.counted.store(true, Relaxed);
    }

    /// The samples of [`WORKERS`] and [`WORKERS_OLDER`] for the target `name`, once counted.
    pub(crate) fn samples(&self, name: &str) -> Option<(Metric, Metric)> {
        (flag(&self.counted) > 0.0).then(|| {
            let at = [("target", name)];
            (
                gauge(&at, self.total.load(Relaxed) as f64),
                gauge(&at, self.older.load(Relaxed) as f64),
            )
        })
    }
}

/// First pause before counting again while a worker predates the version (or after the count
/// changed).
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause while the version waits for its old workers to exit.
const DRAINING_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause otherwise (the count is information only).
const IDLE_PAUSE: Duration = Duration::from_secs(5);

/// When a target's workers are counted next.
#[derive(Debug, Default)]
pub(crate) struct WorkerLooks {
    /// The next count (`None`: at the next attempt or resync).
    pub due: Option<Instant>,
    /// The pause before it.
    pause: Duration,
    /// Old workers at the last count.
    last_older: Option<usize>,
    /// The resync round last counted in.
    round: Option<u64>,
    /// Counts made.
    counts: u64,
}

impl WorkerLooks {
    /// Counts at once (after an attempt).
    pub(crate) fn now(&mut self) {
        self.due = Some(Instant::now());
        self.pause = FIRST_PAUSE;
    }

    /// Whether to count before the next step: due, and no action about to be taken for `v`
    /// (it counts right after; a count before it would only delay it).
    pub(crate) fn is_due(&self, v: &Version, p: &Progress) -> bool {
        !p.needs(v)
            && (self.round != Some(v.resync_round) || self.due.is_some_and(|d| Instant::now() >= d))
    }
}

impl Reconciler {
    /// With `--applied-when workers-replaced`, how long old workers may run after a signal.
    pub(super) fn drain_timeout(&self) -> Option<Duration> {
        match (&self.action, &self.cfg().action) {
            (Action::Signal(_), ActionConfig::Signal(s))
                if s.applied_when == AppliedWhen::WorkersReplaced =>
            {
                Some(s.drain_timeout)
            }
            _ => None,
        }
    }

    /// Whether the action is one whose workers are counted (a signal's).
    pub(super) fn counts_workers(&self) -> bool {
        matches!(self.action, Action::Signal(_))
    }

    /// Counts the workers (when [`WorkerLooks::is_due`]), shows the count, and, for a version
    /// draining, makes it held once they are all younger, or reports the old ones past the
    /// deadline.
    pub(super) async fn follow_workers(
        &mut self,
        v: &Version,
        p: &mut Progress,
        looks: &mut WorkerLooks,
    ) {
        looks.round = Some(v.resync_round);
        let now = SystemTime::now();
        let wall = |at: Instant| now.checked_sub(at.elapsed()).unwrap_or(now);
        let reference = Reference {
            changed: v.content_time.unwrap_or_else(|| wall(v.seen_at)),
            margin: START_MARGIN,
            sent: p.last_action.map(wall),
        };
        let Some(counted) = self.action.workers(reference).await else {
            // Not a kind with workers: nothing is ever due.
            looks.due = None;
            return;
        };
        looks.counts += 1;
        let older = match &counted {
            Ok(c) => {
                self.show_workers(c, looks.counts);
                c.older_count
            }
            Err(e) => {
                self.workers_unknown(e, looks.counts);
                // Unknown: looked at again as if unchanged.
                looks.last_older.unwrap_or(0)
            }
        };
        let draining = p.draining_for(v);
        if let (Ok(c), Some(_)) = (&counted, draining)
            && c.older_count == 0
            && p.drained(v)
        {
            self.workers_replaced(v, c).await;
        } else if let Ok(c) = &counted
            && p.drain_expired(v, Instant::now())
        {
            self.drain_expired(v, c);
        }
        let pause = if looks.last_older == Some(older) {
            let cap = if p.draining_for(v).is_some_and(|d| !d.expired) {
                DRAINING_PAUSE
            } else {
                IDLE_PAUSE
            };
            (looks.pause * 2).clamp(FIRST_PAUSE, cap)
        } else {
            FIRST_PAUSE
        };
        looks.last_older = Some(older);
        let waiting = older > 0 || counted.is_err() || p.draining_for(v).is_some();
        looks.pause = pause;
        looks.due = waiting.then(|| Instant::now() + pause);
    }

    /// Every worker started after the version: it is applied.
    async fn workers_replaced(&mut self, v: &Version, c: &Count) {
        if let Some(sf) = &self.state_file {
            sf.remember(&self.cfg().name, &v.fingerprint, self.action.delivered())
                .await;
        }
        lock(&self.status).last_success = Some(SystemTime::now());
        tracing::info!(version = %v.fingerprint, workers = c.total,
            "every worker of the app started after the reload: the version is applied");
    }

    /// The drain timeout passed with old workers alive: stale, and said once.
    fn drain_expired(&self, v: &Version, c: &Count) {
        let timeout = self.drain_timeout().unwrap_or_default();
        let message = format!(
            "{} of {} worker(s) still hold the older version {} after the reload \
             (--worker-drain-timeout): {}; they keep connections open (a websocket, a long \
             download) or did not take the app's reload; not signalled again: the target counts \
             as applied once they exit",
            c.older_count,
            c.total,
            humantime::format_duration(timeout),
            c.named()
        );
        tracing::warn!(version = %v.fingerprint, "{message}");
        lock(&self.status).last_error = Some(ErrorRecord {
            at: SystemTime::now(),
            message,
        });
    }

    fn show_workers(&self, c: &Count, counts: u64) {
        self.metrics.workers.counted(c);
        let now = SystemTime::now();
        let age = now.duration_since(c.reference).unwrap_or_default();
        lock(&self.status).workers = Some(Box::new(WorkersStatus {
            total: c.total,
            current: c.current,
            older_than_version: c.older_count,
            older: c
                .older
                .iter()
                .map(|w| OldWorkerStatus {
                    pid: w.pid,
                    name: crate::text::value(&w.name),
                    started: w.started,
                })
                .collect(),
            reference: c.reference,
            version_age_seconds: (age.as_secs_f64() * 1e3).round() / 1e3,
            checked_at: now,
            counts,
            error: None,
        }));
    }

    fn workers_unknown(&self, e: &str, counts: u64) {
        let mut t = lock(&self.status);
        match &mut t.workers {
            Some(w) => {
                w.error = Some(e.to_string());
                w.counts = counts;
                w.checked_at = SystemTime::now();
            }
            None => {
                t.workers = Some(Box::new(WorkersStatus {
                    total: 0,
                    current: 0,
                    older_than_version: 0,
                    older: Vec::new(),
                    reference: SystemTime::now(),
                    version_age_seconds: 0.0,
                    checked_at: SystemTime::now(),
                    counts,
                    error: Some(e.to_string()),
                }))
            }
        }
    }
}
