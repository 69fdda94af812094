//! One scan of a group, from the look at the content to the record: what the task learns from
//! it for the next one, the holds known before publishing, a version still being written waited
//! for, the publish (the targets act before anything else is done), the watches reconciled with
//! what the scan found, the assessment and the bookkeeping. When to scan is the task's loop (the
//! parent module); where the content is read, `look`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::look::{INLINE_BUDGET, Look, TORN_RETRIES};
use super::publish::{self, Decision, Scanned};
use super::{Announced, Content, Desired, GroupTask, Memory, RESOURCE_RETRY, Version, env_keys};
use crate::assess::{Assessment, Policy, assess, held_back_by_content};
use crate::config::AccessPolicy;
use crate::lock;
use crate::report::status::LastScan;
use crate::scan::Scan;

/// A new version is published only when no file data was written within this time after its scan
/// started (see [`publish::needs_confirmation`]); the kernel queues a truncate's events before the
/// truncated file can be read, so a short wait lets them through.
const CONFIRM: Duration = Duration::from_millis(20);

impl GroupTask {
    /// The assessment of a scan made on this thread (the group's files are in memory; finding
    /// the app never waits on its pid file, see
    /// [`IdentityResolver`](crate::process::identity::IdentityResolver)).
    fn assess_inline(&mut self, scan: &Scan, policy: Policy) -> Assessment {
        match self.identity.as_mut() {
            Some(identity) => assess(scan, identity, policy),
            None => Assessment {
                held_back: held_back_by_content(scan, policy),
                ..Assessment::default()
            },
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

    /// One scan: read the content, reconcile the watches, assess, publish, record. `commit`: the
    /// scan follows kubelet's swap. Returns `false` when stopped.
    pub(super) async fn scan(
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
        let first = mem.learn(&scan, failures);
        // Access verdicts are needed before publishing only when they can hold a version back;
        // otherwise they wait until the targets have acted. Off the thread, the job made them.
        let policy = self.policy();
        let blocking = policy.access == AccessPolicy::Block;
        let mut assessed = off_thread
            .as_mut()
            .map(|o| std::mem::take(&mut o.assessment));
        let held = match (&assessed, blocking) {
            (Some(a), _) => !a.held_back.is_empty(),
            (None, true) => {
                let a = self.assess_inline(&scan, policy);
                let held = !a.held_back.is_empty();
                assessed = Some(a);
                held
            }
            (None, false) => !held_back_by_content(&scan, policy).is_empty(),
        };
        let scanned = Scanned {
            fingerprint: scan.fingerprint,
            held,
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
        if !changing {
            mem.unconfirmed_since = None;
            self.publish_scan(mem, &mut scan, &scanned, started, scan_ns)
                .await;
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

    /// Publishes what the targets must hold after `scan` (`scanned`: what it found, as far as
    /// the decision goes; `started`, `scan_ns`: when it started), lets them act at once, then
    /// closes what the scan kept open and logs a change of version.
    async fn publish_scan(
        &self,
        mem: &mut Memory,
        scan: &mut Scan,
        scanned: &Scanned,
        started: Instant,
        scan_ns: u64,
    ) {
        let first = scanned.first;
        let mut changed = false;
        let mut announced = None;
        let decision = publish::decide(scanned, mem.published);
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
                    keys: env_keys(&self.cfg, scan).unwrap_or_else(|| mem.no_keys.clone()),
                    tokens: if scan.tokens.is_empty() {
                        mem.no_tokens.clone()
                    } else {
                        scan.tokens.clone().into()
                    },
                    announced: flag,
                }))
            }
        };
        self.tx.send_replace(Some(Desired { content, scan_ns }));
        // The targets act now, before the bookkeeping: nothing but the scan stands between the
        // event and the action. Their log lines wait for this one (see `Announced`), so the log
        // still reads in causal order.
        tokio::task::yield_now().await;
        drop(std::mem::take(&mut scan.closing));
        if changed {
            self.note_change(scan);
        }
        if let Some(flag) = announced {
            flag.set();
        }
    }
}

impl Memory {
    /// What the task learns from `scan` for the next one (`failures`: the resource failures
    /// counted before it): when to read again, whether the next read fits the inline budget,
    /// what each watched path was when first seen. Whether this was the group's first scan.
    fn learn(&mut self, scan: &Scan, failures: u64) -> bool {
        // Ran out of descriptors or threads while reading: what was read may lack what could
        // not be opened. Reported as it is, and read again soon.
        self.retry_at = (crate::report::resources::failures() != failures)
            .then(|| Instant::now() + RESOURCE_RETRY);
        // Back on the runtime thread once the content is small again.
        self.large =
            scan.work.bytes > INLINE_BUDGET.bytes || scan.work.entries > INLINE_BUDGET.entries;
        for (path, layout) in &scan.layouts {
            if let Some(dir) = layout.is_dir()
                && !self.was_dir.contains_key(path)
            {
                self.was_dir.insert(path.clone(), dir);
            }
        }
        let first = !self.scanned_once;
        self.scanned_once = true;
        first
    }
}
