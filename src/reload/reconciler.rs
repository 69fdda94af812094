//! One task per target: make the target hold the content on disk, exactly once per real change.
//!
//! Level-triggered: the reconciler compares the newest version of its group (desired) with the
//! version the target last applied, and acts while they differ. Consequences:
//! - bursts coalesce (the watch channel keeps only the newest version), and an outage followed by
//!   recovery delivers the newest content once;
//! - a failed attempt leaves the target's version unknown, so A → B (failed) → A reloads A;
//! - an attempt that sent nothing (no process yet, no handler yet) leaves it as it was;
//! - at most one action per `min_reload_interval`: the first change after a quiet time is acted
//!   on at once, later ones coalesce into one action when the interval has passed;
//! - failures are retried with capped exponential backoff and jitter; `retries` bounds attempts
//!   per version, after which the version is reported failed until the next change or resync.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::{ActionError, Actor, Outcome, verify};
use crate::cli::ReloadOnStart;
use crate::config::TargetConfig;
use crate::fingerprint::Fingerprint;
use crate::metrics::Metrics;
use crate::persist::{self, Persist};
use crate::scanner::{Version, VersionRx};
use crate::state::{Attempt, ErrorRecord, State, lock};

/// First retry delay; doubles per consecutive failure up to the configured cap.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Cap of the delay between looks while waiting for a process or its handler.
const WAIT_CAP: Duration = Duration::from_secs(5);

/// The reconciler of one target.
pub struct Reconciler {
    /// Index in `State::targets`.
    pub index: usize,
    /// Watch group name (logs).
    pub group: String,
    /// The target's configuration.
    pub cfg: TargetConfig,
    /// Its action.
    pub actor: Actor,
    /// Versions of its group.
    pub rx: VersionRx,
    /// Status registry.
    pub state: Arc<State>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// What each target applied, across restarts (`--state-file`).
    pub persist: Option<Arc<Persist>>,
}

/// What the reconciler knows about the target.
#[derive(Debug, Default)]
struct Progress {
    /// Version the target holds; `None` when unknown.
    applied: Option<Fingerprint>,
    /// Version (and resync round) whose retries were used up.
    gave_up: Option<(Fingerprint, u64)>,
    /// Version the failure count is about.
    failing: Option<Fingerprint>,
    /// Failed attempts for `failing`.
    version_failures: u32,
    /// Failed attempts in a row, any version (backoff).
    consecutive_failures: u32,
    /// Looks in a row that found the target not ready.
    waits: u32,
    /// When the last action started (storm protection).
    last_action: Option<Instant>,
    /// Version to send even if the process looks newer (`--reload-on-start always`).
    force: Option<Fingerprint>,
    /// Last waiting message logged (each is logged once).
    last_wait: Option<String>,
}

impl Progress {
    fn needs(&self, v: &Version) -> bool {
        self.applied != Some(v.fingerprint) && self.gave_up != Some((v.fingerprint, v.resync_round))
    }
}

impl Reconciler {
    /// Runs until `stop` turns true or the group's scanner goes away.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let first = loop {
            if let Some(v) = self.rx.borrow_and_update().clone() {
                break v;
            }
            tokio::select! {
                r = self.rx.changed() => if r.is_err() { return },
                _ = crate::shutdown::stopped(&mut stop) => return,
            }
        };
        let mut p = self.start(&first);
        loop {
            let Some(v) = self.rx.borrow_and_update().clone() else {
                return;
            };
            self.record_desired(&v, &p);
            if !p.needs(&v) {
                tokio::select! {
                    r = self.rx.changed() => if r.is_err() { return },
                    _ = crate::shutdown::stopped(&mut stop) => return,
                }
                continue;
            }
            if let Some(last) = p.last_action {
                let ready = last + self.cfg.min_reload_interval;
                if Instant::now() < ready {
                    // Storm protection: whatever arrives meanwhile coalesces into one action.
                    tokio::select! {
                        _ = tokio::time::sleep_until(ready.into()) => {}
                        _ = crate::shutdown::stopped(&mut stop) => return,
                    }
                    continue;
                }
            }
            // Boxed: the action's state (an HTTP exchange) only exists while it runs, so a
            // thousand idle targets stay small.
            if let Some(delay) = Box::pin(self.attempt(&v, &mut p)).await {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::shutdown::stopped(&mut stop) => return,
                }
            }
        }
    }

    /// What the target holds at start (see `--reload-on-start`).
    fn start(&mut self, first: &Version) -> Progress {
        let mut p = Progress::default();
        let assume_held = first.at_start.then_some(first.fingerprint);
        let recorded = match self.cfg.reload_on_start {
            ReloadOnStart::Auto => self.recorded(first),
            _ => None,
        };
        match (self.cfg.reload_on_start, recorded) {
            (ReloadOnStart::Never, _) => p.applied = assume_held,
            (ReloadOnStart::Always, _) => p.force = assume_held,
            // What an earlier run of the sidecar delivered is the best knowledge there is.
            (ReloadOnStart::Auto, Some(applied)) => p.applied = applied,
            // Signal targets decide from the process start time, at every attempt.
            (ReloadOnStart::Auto, None) if self.actor.knows_process_age() => {}
            (ReloadOnStart::Auto, None) => p.applied = assume_held,
        }
        p
    }

    /// From the state file: `Some(Some(fp))` when the target (the same process, for signal
    /// targets) last applied the current content, `Some(None)` when it applied something else,
    /// `None` when there is no usable record.
    fn recorded(&mut self, first: &Version) -> Option<Option<Fingerprint>> {
        let record = self.persist.as_ref()?.applied(&self.cfg.name)?;
        if !persist::same(&record, &first.fingerprint) {
            return Some(None);
        }
        match record.process {
            Some(process) if self.actor.current_process() != Some(process) => None,
            _ => Some(Some(first.fingerprint)),
        }
    }

    /// One attempt; returns the delay before the next one when it has to be retried.
    async fn attempt(&mut self, v: &Arc<Version>, p: &mut Progress) -> Option<Duration> {
        let name = self.cfg.name.clone();
        let at = SystemTime::now();
        let t0 = Instant::now();
        let force = p.force == Some(v.fingerprint);
        let mut result = self.actor.apply(v, force).await;
        let took = t0.elapsed();
        if let (Ok(Outcome::Done(detail)), Some(check)) = (&result, &self.cfg.verify) {
            // Only a passing verification makes the version count as applied.
            let (verdict, checked) = match verify::verify(check).await {
                Ok(msg) => ("success", Ok(Outcome::Done(format!("{detail}; {msg}")))),
                Err(msg) => ("failure", Err(ActionError::Failed(msg))),
            };
            self.metrics
                .target(self.index)
                .verified(verdict == "success");
            result = checked;
        }
        let fp = v.fingerprint;
        match result {
            Ok(outcome) => {
                // Recorded first: a SIGKILL from here on cannot cause a redundant reload.
                if let Some(persist) = &self.persist {
                    persist.record(&name, &fp, self.actor.delivered());
                }
                let (result, detail) = match outcome {
                    Outcome::Done(detail) => {
                        p.last_action = Some(t0);
                        self.count(true, took);
                        let since_change = v.seen_at.elapsed();
                        tracing::info!(target = %name, watch = %self.group, version = %fp, took = ?took,
                            since_change = ?since_change, "reloaded: {detail}");
                        ("success", detail)
                    }
                    Outcome::Skipped(detail) => {
                        tracing::info!(target = %name, watch = %self.group, version = %fp, "no reload needed: {detail}");
                        ("skipped", detail)
                    }
                };
                *p = Progress {
                    applied: Some(fp),
                    last_action: p.last_action,
                    ..Progress::default()
                };
                let mut t = lock(&self.state.targets[self.index]);
                t.state = "idle";
                t.failed_attempts = 0;
                t.last_attempt = Some(Attempt {
                    at,
                    result,
                    duration_ms: ms(took),
                    detail,
                });
                if result == "success" {
                    t.last_success = Some(SystemTime::now());
                }
                drop(t);
                self.record_desired(v, p);
                None
            }
            Err(ActionError::Waiting(msg)) => {
                p.waits += 1;
                if p.last_wait.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(target = %name, watch = %self.group, version = %fp, "not reloaded yet: {msg}");
                    p.last_wait = Some(msg.clone());
                }
                let mut t = lock(&self.state.targets[self.index]);
                t.state = "waiting";
                t.last_error = Some(ErrorRecord { at, message: msg });
                Some(backoff(p.waits, self.cfg.retry_backoff_max.min(WAIT_CAP)))
            }
            Err(ActionError::Failed(msg)) => {
                p.last_action = Some(t0);
                p.applied = None;
                p.last_wait = None;
                self.count(false, took);
                if p.failing != Some(fp) {
                    p.failing = Some(fp);
                    p.version_failures = 0;
                }
                p.version_failures += 1;
                p.consecutive_failures += 1;
                let give_up = self.cfg.retries.is_some_and(|r| p.version_failures > r);
                let delay = backoff(p.consecutive_failures, self.cfg.retry_backoff_max);
                let mut t = lock(&self.state.targets[self.index]);
                t.failed_attempts = p.version_failures;
                t.last_attempt = Some(Attempt {
                    at,
                    result: "failure",
                    duration_ms: ms(took),
                    detail: msg.clone(),
                });
                t.last_error = Some(ErrorRecord {
                    at,
                    message: msg.clone(),
                });
                if give_up {
                    t.state = "failed";
                    drop(t);
                    p.gave_up = Some((fp, v.resync_round));
                    tracing::error!(target = %name, watch = %self.group, version = %fp, attempts = p.version_failures,
                        "reload failed: {msg}; giving up on this version until the next change or resync");
                    None
                } else {
                    t.state = "retrying";
                    drop(t);
                    tracing::warn!(target = %name, watch = %self.group, version = %fp, attempt = p.version_failures,
                        retry_in = ?delay, "reload failed: {msg}");
                    Some(delay)
                }
            }
        }
    }

    fn count(&self, ok: bool, took: Duration) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.target(self.index).action(ok, took, now);
    }

    /// Publishes desired/applied and the stale flag.
    fn record_desired(&self, v: &Version, p: &Progress) {
        let stale = p.applied != Some(v.fingerprint);
        self.metrics.target(self.index).set_stale(stale);
        let mut t = lock(&self.state.targets[self.index]);
        t.desired_fingerprint = Some(v.fingerprint.short());
        t.applied_fingerprint = p.applied.map(|f| f.short());
        match (stale, t.stale) {
            (true, false) => t.stale_since = Some(SystemTime::now()),
            (false, _) => t.stale_since = None,
            _ => {}
        }
        t.stale = stale;
    }
}

/// `BACKOFF_BASE · 2^(n-1)`, capped, with jitter in [50 %, 100 %] so that sidecars that failed
/// together do not retry together.
fn backoff(n: u32, cap: Duration) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    let d = exp.min(cap);
    let r = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    d.mul_f64(0.5 + 0.5 * r)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let cap = Duration::from_secs(30);
        for n in 1..40 {
            let d = backoff(n, cap);
            let full = BACKOFF_BASE
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(cap);
            assert!(
                d >= full / 2 && d <= full,
                "n={n}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(backoff(1, cap) <= BACKOFF_BASE);
        assert!(backoff(30, cap) >= cap / 2);
    }
}
