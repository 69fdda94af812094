//! Where a group's scan runs, and what comes back with it. When the group's files live in memory
//! the content is read on the runtime thread within [`INLINE_BUDGET`] (no thread handoff on the
//! reload path). Past that budget, or anywhere else, the scan runs on the group's lane together
//! with the rest of what may stall: where the files live (found again after a mount-table
//! change), the watches reconciled, the access checks. A call on the lane that does not return
//! is reported and holds the group (its targets stale) until it does. Either way, a kubelet
//! volume that swapped under the read is read again, at most [`TORN_RETRIES`] times.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Content, Desired, GroupTask, Memory, RESOURCE_RETRY};
use crate::assess::{Assessment, assess, held_back_by_content};
use crate::config::GroupConfig;
use crate::lane::{Heard, Place, Ran};
use crate::lock;
use crate::scan::fingerprint::FingerprintKey;
use crate::scan::{self, Budget, Scan};

/// What a scan on the runtime thread may do; more is done on the group's lane.
pub(super) const INLINE_BUDGET: Budget = Budget {
    bytes: 256 * 1024,
    entries: 256,
};

/// Scans read again when a kubelet volume swapped under them.
pub(super) const TORN_RETRIES: usize = 10;

impl GroupTask {
    /// Looks at the content: on this thread within the budget when the group's files live in
    /// memory, else on the group's lane, where the watches are reconciled and the access
    /// checked too. `None` when there is nothing to act on (stopped, no thread, a call that
    /// ran out of a resource: reported, and read again soon).
    pub(super) async fn look(
        &mut self,
        mem: &mut Memory,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Look> {
        let (mounts, generation) = self.hub.mounts();
        if mem.place == (Place::Memory, Some(generation)) && !mem.large {
            if let Some(scan) =
                read_settled(&self.cfg, &self.key, &mem.was_dir, Some(INLINE_BUDGET))
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
        let (cfg, key, was_dir, hub, id) = (
            self.cfg.clone(),
            self.key.clone(),
            mem.was_dir.clone(),
            self.hub.clone(),
            self.id,
        );
        let policy = self.policy();
        let mounts = (mem.place.1 != Some(generation)).then_some(mounts);
        let job = move || {
            let scan = read_settled(&cfg, &key, &was_dir, None).expect("no budget");
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
}

/// What one look at the content found.
pub(super) struct Look {
    /// The content read.
    pub(super) scan: Scan,
    /// Made on the lane with the scan (files not in memory).
    pub(super) off_thread: Option<OffThread>,
}

/// What a job on the lane did besides the scan.
pub(super) struct OffThread {
    /// Where the files live, when found again (the mount table changed since the last time).
    place: Option<Place>,
    /// The watches reconciled with the scan's.
    pub(super) watched: Result<bool, crate::watch::WatchError>,
    /// The assessment.
    pub(super) assessment: Assessment,
}

/// Reads the content (within `budget`: `None` when it ran out), again while a kubelet volume
/// swaps under the read: the newer version instead of one kubelet has already removed. Bounded:
/// a volume swapping faster than it can be read is reported as it was found (still `torn`).
fn read_settled(
    cfg: &GroupConfig,
    key: &FingerprintKey,
    was_dir: &std::collections::HashMap<std::path::PathBuf, bool>,
    budget: Option<Budget>,
) -> Option<Scan> {
    let mut scan = read_content(cfg, key, was_dir, budget)?;
    for _ in 0..TORN_RETRIES {
        if !scan.torn {
            break;
        }
        tracing::debug!("a kubelet volume swapped during the scan: reading it again");
        scan = read_content(cfg, key, was_dir, budget)?;
    }
    Some(scan)
}

/// Reads the group's content; `None` when the budget ran out.
fn read_content(
    cfg: &GroupConfig,
    key: &FingerprintKey,
    was_dir: &std::collections::HashMap<std::path::PathBuf, bool>,
    budget: Option<Budget>,
) -> Option<Scan> {
    let opts = scan::Options {
        key,
        max_files: cfg.max_files,
        follow_external_symlinks: cfg.follow_external_symlinks,
        was_dir,
        served_certs: cfg.targets.iter().any(|t| t.served_cert.is_some()),
    };
    match budget {
        Some(b) => scan::scan_within(&cfg.paths, opts, b),
        None => Some(scan::scan(&cfg.paths, opts)),
    }
}
