//! One task per target: make the target hold the content on disk, exactly once per real change.
//!
//! The decisions are [`progress`](super::progress)'s; this task waits for its group's outcomes,
//! runs the action (and its verification), and records each step on the status board, in the
//! metrics, in the state file and in the log.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::claims::{self, HeldClaims};
use super::progress::{After, Ended, Limits, Progress, Step, jitter};
use super::served;
use super::state_file::{self, StateFile};
use super::verify;
use super::workers::WorkerLooks;
use crate::action::{Action, ActionError, Outcome};
use crate::config::{ReloadOnStart, TargetConfig};
use crate::group::{Content, DesiredRx, Version};
use crate::lock;
use crate::report::metrics::TargetMetrics;
use crate::report::status::{
    Attempt, AttemptResult, ClaimChanged, ErrorRecord, TargetEntry, TargetState,
};
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};
use crate::stop::stopped;

/// The reconciler of one target.
pub(crate) struct Reconciler {
    /// The configuration of its group (shared, not copied).
    pub group_cfg: std::sync::Arc<crate::config::GroupConfig>,
    /// Which of the group's targets it is.
    pub index: usize,
    /// Its action.
    pub action: Action,
    /// Outcomes of its group's scans.
    pub rx: DesiredRx,
    /// Its entry on the status board.
    pub status: TargetEntry,
    /// Its series.
    pub metrics: Arc<TargetMetrics>,
    /// What each target applied, across restarts (`--state-file`).
    pub state_file: Option<Arc<StateFile>>,
    /// The fingerprint key (the served certificate's fingerprint is compared with the disk's).
    pub key: FingerprintKey,
    /// Its group's series (the token claims its target holds against those on disk).
    pub group_metrics: Arc<crate::report::metrics::GroupMetrics>,
    /// The claims of the tokens its target holds.
    pub claims: HeldClaims,
    /// Where the processes are read (which worker served a look: `--verify-served-cert`).
    pub procfs: crate::process::ProcFs,
}

impl Reconciler {
    /// The target's configuration.
    pub(super) fn cfg(&self) -> &TargetConfig {
        &self.group_cfg.targets[self.index]
    }

    /// Runs until `stop` turns true or the group's task goes away.
    // An async block: an `async fn` would keep `self` twice in the task's state (ARCHITECTURE.md,
    // "A task's state is sized for its idle life").
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        async move {
            let limits = Limits {
                min_interval: self.cfg().min_reload_interval,
                retries: self.cfg().retries,
                backoff_max: self.cfg().retry_backoff_max,
                splay: self.cfg().splay_offset,
            };
            // Boxed, as what follows: a thousand idle reconcilers hold it.
            let mut progress: Option<Box<Progress>> = None;
            // The last message of a wait, logged once.
            let mut last_wait: Option<String> = None;
            // The resync round whose served certificate was looked at (`--verify-served-cert`), and
            // when to look again after a look that could not read it (the app not listening yet).
            let mut served_round: Option<u64> = None;
            let mut look_again: Option<(Instant, Duration)> = None;
            // The resync round whose app environment was compared (`--consumed-as env`).
            let mut env_round: Option<u64> = None;
            // When the signalled process's workers are counted next (signal targets only).
            let mut workers: Option<Box<WorkerLooks>> =
                self.counts_workers().then(Default::default);
            loop {
                let desired = self.rx.borrow_and_update().clone();
                let Some(desired) = desired else {
                    tokio::select! {
                        r = self.rx.changed() => if r.is_err() { return },
                        _ = stopped(&mut stop) => return,
                    }
                    continue;
                };
                let v = match desired.content {
                    Content::Held => {
                        self.show_held(desired.scan_ns);
                        tokio::select! {
                            r = self.rx.changed() => if r.is_err() { return },
                            _ = stopped(&mut stop) => return,
                        }
                        continue;
                    }
                    Content::Version(v) => v,
                };
                let p = match &mut progress {
                    Some(p) => p,
                    // Boxed: it runs once, and inline it would size the task for its life.
                    None => progress.insert(Box::new(Box::pin(self.start(&v)).await)),
                };
                if p.applied == Some(v.fingerprint) && env_round != Some(v.resync_round) {
                    // An app that took the keys as environment variables may have been restarted
                    // with other values since: compared again at each resync.
                    env_round = Some(v.resync_round);
                    if self.action.environment_holds(&v).await == Some(false) {
                        // The attempt that follows says what is done about it (a restart, or,
                        // with --signal none, nothing).
                        tracing::warn!(version = %v.fingerprint,
                            "the app's environment no longer holds the content on disk (its container \
                             restarted with other values)");
                        p.applied = None;
                    }
                    self.saw_environment();
                }
                let due = look_again.is_some_and(|(at, _)| Instant::now() >= at);
                if p.applied == Some(v.fingerprint) && (served_round != Some(v.resync_round) || due)
                {
                    served_round = Some(v.resync_round);
                    look_again = if self.recheck_served(&v, p).await {
                        None
                    } else {
                        // Unreadable: looked at again with a growing pause (1 s … 30 s).
                        let pause = look_again
                            .map_or(LOOK_AGAIN_FIRST, |(_, d)| (d * 2).min(LOOK_AGAIN_MAX));
                        Some((Instant::now() + pause, pause))
                    };
                }
                if let Some(w) = workers.as_mut().filter(|w| w.is_due(&v, p)) {
                    // Boxed: it runs after reloads and resyncs only, never on the way to one.
                    Box::pin(self.follow_workers(&v, p, w)).await;
                }
                self.show_desired(&v, p);
                self.follow_claims(&v, p);
                p.published(&v);
                match p.next_step(&v, &limits, Instant::now()) {
                    Step::Rest => {
                        self.settle(p, &v, desired.scan_ns);
                        let again = [
                            look_again.map(|(at, _)| at),
                            workers.as_ref().and_then(|w| w.due),
                        ]
                        .into_iter()
                        .flatten()
                        .min();
                        tokio::select! {
                            r = self.rx.changed() => if r.is_err() { return },
                            _ = stopped(&mut stop) => return,
                            _ = sleep_until_some(again) => {}
                        }
                    }
                    Step::CoalesceUntil(ready) => {
                        self.set_state(TargetState::Coalescing);
                        self.say_claims(&v).await;
                        // Storm protection: whatever arrives meanwhile coalesces into one action.
                        tokio::select! {
                            _ = tokio::time::sleep_until(ready.into()) => {}
                            _ = stopped(&mut stop) => return,
                        }
                    }
                    Step::Act { force } => {
                        // Not boxed: what is large in an attempt (an HTTP exchange, a command, a
                        // verification) is boxed where it runs.
                        let after = self.attempt(&v, p, force, &limits, &mut last_wait).await;
                        served_round = Some(v.resync_round);
                        look_again = None;
                        if let Some(w) = workers.as_mut() {
                            w.now();
                        }
                        if let Some(delay) = after.delay {
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stopped(&mut stop) => return,
                            }
                        }
                    }
                }
            }
        }
    }

    /// What the target holds at start (see `--reload-on-start`).
    async fn start(&mut self, first: &Version) -> Progress {
        let mut p = Progress::default();
        let assume_held = first.at_start.then_some(first.fingerprint);
        let recorded = match self.cfg().reload_on_start {
            ReloadOnStart::Auto => self.recorded(first).await,
            _ => None,
        };
        match (self.cfg().reload_on_start, recorded) {
            (ReloadOnStart::Never, _) => p.applied = assume_held,
            (ReloadOnStart::Always, _) => p.force = assume_held,
            // What an earlier run of the sidecar delivered is the best knowledge there is.
            (ReloadOnStart::Auto, Some(applied)) => p.applied = applied,
            // Signal targets decide from the process start time, at every attempt.
            (ReloadOnStart::Auto, None) if self.action.knows_process_age() => {}
            (ReloadOnStart::Auto, None) => p.applied = assume_held,
        }
        p
    }

    /// From the state file: `Some(Some(fp))` when the target (the same process, for signal
    /// targets) last applied the current content, `Some(None)` when it applied something else,
    /// `None` when there is no usable record.
    async fn recorded(&mut self, first: &Version) -> Option<Option<Fingerprint>> {
        let record = self.state_file.as_ref()?.applied(&self.cfg().name)?;
        if !state_file::same(&record, &first.fingerprint) {
            return Some(None);
        }
        match record.process {
            Some(process) if self.action.current_process().await != Some(process) => None,
            _ => Some(Some(first.fingerprint)),
        }
    }

    /// One attempt: the action, its verification, and the records.
    async fn attempt(
        &mut self,
        v: &Arc<Version>,
        p: &mut Progress,
        force: bool,
        limits: &Limits,
        last_wait: &mut Option<String>,
    ) -> After {
        let at = SystemTime::now();
        let t0 = Instant::now();
        // A signal is sent with nothing awaited: no one could see it in progress.
        if !self.action.is_instant() {
            self.set_state(TargetState::Acting);
        }
        let mut result = self.action.apply(v, force).await;
        let took = t0.elapsed();
        let name = self.cfg().name.clone();
        if let (Ok(Outcome::Done(detail)), Some(check)) = (&result, &self.cfg().verify) {
            // Only a passing verification makes the version count as applied.
            let (ok, checked) = match Box::pin(verify::verify(check, v.content_time)).await {
                Ok(msg) => (true, Ok(Outcome::Done(format!("{detail}; {msg}")))),
                Err(msg) => (false, Err(ActionError::Failed(msg))),
            };
            self.metrics.verified(ok);
            result = checked;
        }
        if let (Ok(Outcome::Done(detail)), Some(sc)) = (&result, &self.cfg().served_cert) {
            // Only the certificate on disk, served, makes the version count as applied.
            let confirmed = served::confirm(sc, &v.certs, &self.key, &self.procfs, |s, w| {
                self.saw_served(v, s, Some(w))
            });
            result = match Box::pin(confirmed).await {
                Ok(msg) => Ok(Outcome::Done(format!("{detail}; {msg}"))),
                Err(msg) => Err(ActionError::Failed(msg)),
            };
        }
        self.metrics
            .set_ambiguous(matches!(result, Err(ActionError::Ambiguous(_))));
        self.saw_environment();
        self.action.record(result.is_ok(), &self.metrics);
        let fp = v.fingerprint;
        let ended = match &result {
            Ok(Outcome::Done(_)) => Ended::Done,
            Ok(Outcome::Skipped(_)) => Ended::Skipped,
            Err(ActionError::Waiting(_)) => Ended::Waiting,
            Err(ActionError::Failed(_) | ActionError::Ambiguous(_)) => Ended::Failed,
        };
        // With --applied-when workers-replaced, a signal sent is not yet the version held.
        let drain = self.drain_timeout().filter(|_| ended == Ended::Done);
        if matches!(ended, Ended::Done | Ended::Skipped)
            && drain.is_none()
            && let Some(sf) = &self.state_file
        {
            // Recorded before anything else: a SIGKILL from here on cannot cause a redundant
            // reload.
            sf.remember(&name, &fp, self.action.delivered()).await;
        }
        let mut after = p.after(v, t0, ended, limits, jitter());
        if let Some(timeout) = drain {
            p.drain(v, Instant::now() + timeout);
            after.state = TargetState::Draining;
        }
        // The group logs the change it published first (see `GroupTask::scan`); then what the
        // change does to the claims of the tokens the app held.
        self.say_claims(v).await;
        let attempt = |result, detail: String| Attempt {
            at,
            result,
            duration_ms: ms(took),
            detail,
        };
        match result {
            Ok(outcome) => {
                *last_wait = None;
                let mut t = lock(&self.status);
                t.failed_attempts = 0;
                match outcome {
                    Outcome::Done(mut detail) => {
                        if p.draining_for(v).is_some() {
                            detail.push_str(
                                "; applied once every worker that started before it has exited \
                                 (--applied-when workers-replaced)",
                            );
                        } else {
                            t.last_success = Some(SystemTime::now());
                        }
                        t.last_attempt = Some(attempt(AttemptResult::Success, detail.clone()));
                        drop(t);
                        self.metrics.action(true, took, unix_now());
                        tracing::info!(version = %fp, took = ?took,
                            since_change = ?v.seen_at.elapsed(), "reloaded: {detail}");
                    }
                    Outcome::Skipped(detail) => {
                        t.last_attempt = Some(attempt(AttemptResult::Skipped, detail.clone()));
                        drop(t);
                        tracing::info!(version = %fp, "no reload needed: {detail}");
                    }
                }
                self.show_desired(v, p);
            }
            Err(ActionError::Waiting(msg)) => {
                if last_wait.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(version = %fp, "not reloaded yet: {msg}");
                    *last_wait = Some(msg.clone());
                }
                lock(&self.status).last_error = Some(ErrorRecord { at, message: msg });
            }
            Err(ActionError::Failed(msg) | ActionError::Ambiguous(msg)) => {
                *last_wait = None;
                self.metrics.action(false, took, unix_now());
                {
                    let mut t = lock(&self.status);
                    t.failed_attempts = p.version_failures;
                    t.last_attempt = Some(attempt(AttemptResult::Failure, msg.clone()));
                    t.last_error = Some(ErrorRecord {
                        at,
                        message: msg.clone(),
                    });
                }
                self.show_desired(v, p);
                if after.gave_up {
                    tracing::error!(version = %fp, attempts = p.version_failures,
                        "reload failed: {msg}; giving up on this version until the next change or resync");
                } else {
                    tracing::warn!(version = %fp, attempt = p.version_failures,
                        retry_in = ?after.delay, "reload failed: {msg}");
                }
            }
        }
        self.set_state(after.state);
        after
    }

    /// At start and at each resync, with the version applied: is the certificate on disk what
    /// the app serves? When not, the target does not hold the version, and acts again. `false`
    /// when the served certificate could not be read (to be looked at again).
    async fn recheck_served(&self, v: &Version, p: &mut Progress) -> bool {
        let Some(sc) = &self.cfg().served_cert else {
            return true;
        };
        match Box::pin(served::look(sc, &v.certs, &self.key)).await {
            Ok(s) => {
                self.saw_served(v, &s, None);
                if !s.matches {
                    let why = served::mismatch(sc, &v.certs, &s);
                    tracing::warn!(version = %v.fingerprint, "{why}; reloading again");
                    p.applied = None;
                }
                true
            }
            Err(e) => {
                tracing::warn!(version = %v.fingerprint, "cannot read the served certificate: {e}");
                false
            }
        }
    }
}

impl Reconciler {
    /// Follows what the target holds against `v` on disk: which token claims differ, in the
    /// group's series and the target's entry.
    fn follow_claims(&mut self, v: &Version, p: &Progress) {
        let changes = self.claims.follow(v, p.applied);
        self.group_metrics
            .set_claims_changed(self.index, claims::series(&changes));
        lock(&self.status).token_claims_changed = changes
            .into_iter()
            .map(|c| ClaimChanged {
                path: crate::text::path(&c.path),
                claim: c.claim.as_str(),
                held: c.held,
                on_disk: c.on_disk,
            })
            .collect();
    }

    /// Logs the token claims `v` changes against what the target held, once per version, after
    /// the group's line about the change (waited for at most 100 ms).
    async fn say_claims(&mut self, v: &Version) {
        v.announced.wait(Duration::from_millis(100)).await;
        claims::say(&self.claims.unsaid(v), v);
    }
}

/// First pause before looking again at a served certificate that could not be read.
const LOOK_AGAIN_FIRST: Duration = Duration::from_secs(1);
/// Longest such pause.
const LOOK_AGAIN_MAX: Duration = Duration::from_secs(30);

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
