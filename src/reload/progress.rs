//! What a target's reconciler knows and decides, as pure functions of that knowledge, the
//! version on disk and the time (tested below with a test clock).
//!
//! Level-triggered: the reconciler compares the newest version of its group (desired) with the
//! version the target last applied, and acts while they differ. Consequences:
//! - bursts coalesce (only the newest version is ever seen), and an outage followed by recovery
//!   delivers the newest content once;
//! - a failed attempt leaves the target's version unknown, so A → B (failed) → A reloads A;
//! - an attempt that sent nothing (no process yet, no handler yet) leaves it as it was;
//! - at most one action per `min_reload_interval`: the first change after a quiet time is acted
//!   on at once, later ones coalesce into one action when the interval has passed;
//! - failures are retried with capped exponential backoff and jitter; `retries` bounds attempts
//!   per version, after which the version is left until the next change or resync;
//! - with `--applied-when workers-replaced`, a version whose signal was sent is draining: not
//!   held until its old workers exit, and never signalled again (not even at a resync) while
//!   they do, past the drain timeout included.

use std::time::{Duration, Instant};

use crate::group::Version;
use crate::report::status::TargetState;
use crate::scan::fingerprint::Fingerprint;

/// First retry delay; doubles per consecutive failure up to the configured cap.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Cap of the delay between looks while waiting for a process or its handler.
pub(crate) const WAIT_CAP: Duration = Duration::from_secs(5);

/// What the reconciler knows about the target.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    /// Version the target holds; `None` when unknown.
    pub applied: Option<Fingerprint>,
    /// Version (and resync round) whose retries were used up.
    pub gave_up: Option<(Fingerprint, u64)>,
    /// Version the failure count is about.
    failing: Option<Fingerprint>,
    /// Failed attempts for `failing`.
    pub version_failures: u32,
    /// Failed attempts in a row, any version (backoff).
    consecutive_failures: u32,
    /// Looks in a row that found the target not ready.
    waits: u32,
    /// When the last action started (storm protection).
    pub last_action: Option<Instant>,
    /// Version to send even if the process looks newer (`--reload-on-start always`).
    pub force: Option<Fingerprint>,
    /// When the first version the target does not hold was seen (`--splay` counts from it).
    pub first_unapplied: Option<Instant>,
    /// The version whose signal was sent while its old workers finish
    /// (`--applied-when workers-replaced`).
    pub draining: Option<Drain>,
}

/// A version signalled, awaiting the exit of the workers that started before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drain {
    /// The version.
    pub version: Fingerprint,
    /// Until when the old workers may run (`--worker-drain-timeout`).
    pub deadline: Instant,
    /// Whether the deadline passed (and was reported).
    pub expired: bool,
}

/// Limits of a target's retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// At most one action per interval.
    pub min_interval: Duration,
    /// Retries per version after the first failure (`None`: until it lands).
    pub retries: Option<u32>,
    /// Cap of the backoff.
    pub backoff_max: Duration,
    /// `--splay`: the first reaction to a change waits this long after it was seen.
    pub splay: Duration,
}

/// What to do about the desired version now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: the target holds it, or its retries are used up.
    Rest,
    /// Storm protection: act when this instant comes.
    CoalesceUntil(Instant),
    /// Act (`force`: even if the process looks newer than the content).
    Act {
        /// Send even to a process that started after the content.
        force: bool,
    },
}

/// How an attempt ended, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The action ran and succeeded (verification included).
    Done,
    /// Nothing had to be done.
    Skipped,
    /// Nothing was sent: the target is not ready.
    Waiting,
    /// The action failed (or the target was ambiguous).
    Failed,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct After {
    /// The target's state now.
    pub state: TargetState,
    /// Wait this long before the next attempt (`None`: look at the desired version again).
    pub delay: Option<Duration>,
    /// The retries of this version are used up now.
    pub gave_up: bool,
}

impl Progress {
    /// Whether the target must still be made to hold `v`.
    pub(crate) fn needs(&self, v: &Version) -> bool {
        self.applied != Some(v.fingerprint)
            && self.gave_up != Some((v.fingerprint, v.resync_round))
            && self.draining_for(v).is_none()
    }

    /// The drain of `v`, when its signal was sent and its old workers are awaited.
    pub(crate) fn draining_for(&self, v: &Version) -> Option<Drain> {
        self.draining.filter(|d| d.version == v.fingerprint)
    }

    /// After a signal for `v` was sent: not held until its old workers exit, awaited until
    /// `deadline`.
    pub(crate) fn drain(&mut self, v: &Version, deadline: Instant) {
        self.applied = None;
        self.draining = Some(Drain {
            version: v.fingerprint,
            deadline,
            expired: false,
        });
    }

    /// The old workers of `v` are gone: it is held. `false` when `v` was not draining.
    pub(crate) fn drained(&mut self, v: &Version) -> bool {
        if self.draining_for(v).is_none() {
            return false;
        }
        self.draining = None;
        self.applied = Some(v.fingerprint);
        true
    }

    /// Whether the drain of `v` passed its deadline at `now` just now (once).
    pub(crate) fn drain_expired(&mut self, v: &Version, now: Instant) -> bool {
        match &mut self.draining {
            Some(d) if d.version == v.fingerprint && !d.expired && now >= d.deadline => {
                d.expired = true;
                true
            }
            _ => false,
        }
    }

    /// Notes that `v` was published: the first version the target does not hold after a change
    /// (not at start) starts the splay.
    pub(crate) fn published(&mut self, v: &Version) {
        if self.needs(v) && !v.at_start && self.first_unapplied.is_none() {
            self.first_unapplied = Some(v.seen_at);
        }
    }

    /// The step for `v` at `now`.
    pub(crate) fn next_step(&self, v: &Version, limits: &Limits, now: Instant) -> Step {
        if !self.needs(v) {
            return Step::Rest;
        }
        // Fleets: the first reaction to a change waits for this pod's turn; what arrives
        // meanwhile coalesces, and newer versions do not postpone it.
        if let Some(first) = self.first_unapplied
            && let Some(turn) = first.checked_add(limits.splay)
            && now < turn
        {
            return Step::CoalesceUntil(turn);
        }
        if let Some(last) = self.last_action
            && let Some(ready) = last.checked_add(limits.min_interval)
            && now < ready
        {
            return Step::CoalesceUntil(ready);
        }
        Step::Act {
            force: self.force == Some(v.fingerprint),
        }
    }

    /// Records an attempt at `v` that started at `started` and ended as `ended`; `jitter` in
    /// [0, 1] spreads the backoff.
    pub(crate) fn after(
        &mut self,
        v: &Version,
        started: Instant,
        ended: Ended,
        limits: &Limits,
        jitter: f64,
    ) -> After {
        let fp = v.fingerprint;
        match ended {
            Ended::Done | Ended::Skipped => {
                let last_action = if ended == Ended::Done {
                    Some(started)
                } else {
                    self.last_action
                };
                *self = Progress {
                    applied: Some(fp),
                    last_action,
                    ..Progress::default()
                };
                After {
                    state: TargetState::Idle,
                    delay: None,
                    gave_up: false,
                }
            }
            Ended::Waiting => {
                self.waits += 1;
                After {
                    state: TargetState::Waiting,
                    delay: Some(backoff(
                        self.waits,
                        limits.backoff_max.min(WAIT_CAP),
                        jitter,
                    )),
                    gave_up: false,
                }
            }
            Ended::Failed => {
                self.last_action = Some(started);
                self.applied = None;
                if self.failing != Some(fp) {
                    self.failing = Some(fp);
                    self.version_failures = 0;
                }
                self.version_failures += 1;
                self.consecutive_failures += 1;
                if limits.retries.is_some_and(|r| self.version_failures > r) {
                    self.gave_up = Some((fp, v.resync_round));
                    After {
                        state: TargetState::Failed,
                        delay: None,
                        gave_up: true,
                    }
                } else {
                    After {
                        state: TargetState::Retrying,
                        delay: Some(backoff(
                            self.consecutive_failures,
                            limits.backoff_max,
                            jitter,
                        )),
                        gave_up: false,
                    }
                }
            }
        }
    }
}

/// `BACKOFF_BASE · 2^(n-1)`, capped, scaled into [50 %, 100 %] by `jitter` in [0, 1] so that
/// sidecars that failed together do not retry together.
pub(crate) fn backoff(n: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    exp.min(cap).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random jitter in [0, 1].
pub(crate) fn jitter() -> f64 {
    getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::fingerprint::FingerprintKey;

    fn version(content: &str, round: u64) -> Version {
        Version {
            fingerprint: FingerprintKey::new(b"k".to_vec()).digest(content.as_bytes()),
            content_time: None,
            resync_round: round,
            at_start: false,
            seen_at: Instant::now(),
            certs: Vec::new().into(),
            keys: Vec::new().into(),
            tokens: Vec::new().into(),
            announced: Default::default(),
        }
    }

    const LIMITS: Limits = Limits {
        min_interval: Duration::from_secs(1),
        retries: Some(2),
        backoff_max: Duration::from_secs(30),
        splay: Duration::ZERO,
    };

    #[test]
    fn splay_delays_the_first_reaction_and_newer_versions_coalesce_into_it() {
        let limits = Limits {
            splay: Duration::from_secs(3),
            ..LIMITS
        };
        let t0 = Instant::now();
        let (a, mut b, mut c) = (version("a", 0), version("b", 0), version("c", 0));
        let mut p = Progress {
            applied: Some(a.fingerprint),
            ..Progress::default()
        };
        b.seen_at = t0;
        p.published(&b);
        let turn = t0 + Duration::from_secs(3);
        assert_eq!(p.next_step(&b, &limits, t0), Step::CoalesceUntil(turn));
        // A newer version during the wait: the same turn, not a later one.
        c.seen_at = t0 + Duration::from_secs(2);
        p.published(&c);
        assert_eq!(
            p.next_step(&c, &limits, c.seen_at),
            Step::CoalesceUntil(turn)
        );
        assert_eq!(p.next_step(&c, &limits, turn), Step::Act { force: false });
        // A failure is retried with the backoff, not a second splay.
        p.after(&c, turn, Ended::Failed, &limits, 0.5);
        let later = turn + Duration::from_secs(2);
        assert_eq!(p.next_step(&c, &limits, later), Step::Act { force: false });
        p.after(&c, later, Ended::Done, &limits, 0.5);
        assert_eq!(p.first_unapplied, None);
        // At start there is nothing to spread: acted on as without --splay.
        let mut d = version("d", 0);
        d.at_start = true;
        let mut fresh = Progress::default();
        fresh.published(&d);
        assert_eq!(fresh.next_step(&d, &limits, t0), Step::Act { force: false });
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let cap = Duration::from_secs(30);
        for n in 1..40 {
            let full = BACKOFF_BASE
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(cap);
            assert_eq!(backoff(n, cap, 1.0), full);
            assert_eq!(backoff(n, cap, 0.0), full / 2);
        }
        assert_eq!(backoff(1, cap, 1.0), BACKOFF_BASE);
    }

    #[test]
    fn storm_protection_coalesces_until_the_interval_has_passed() {
        let t0 = Instant::now();
        let (a, b) = (version("a", 0), version("b", 0));
        let mut p = Progress::default();
        assert_eq!(p.next_step(&a, &LIMITS, t0), Step::Act { force: false });
        p.after(&a, t0, Ended::Done, &LIMITS, 0.5);
        assert_eq!(p.next_step(&a, &LIMITS, t0), Step::Rest);
        let soon = t0 + Duration::from_millis(300);
        assert_eq!(
            p.next_step(&b, &LIMITS, soon),
            Step::CoalesceUntil(t0 + Duration::from_secs(1))
        );
        assert_eq!(
            p.next_step(&b, &LIMITS, t0 + Duration::from_secs(1)),
            Step::Act { force: false }
        );
    }

    #[test]
    fn a_failure_makes_the_held_version_unknown_and_retries_are_bounded() {
        let t0 = Instant::now();
        let (a, b) = (version("a", 0), version("b", 0));
        let mut p = Progress::default();
        p.after(&a, t0, Ended::Done, &LIMITS, 0.5);
        // B fails: the target may hold A, B or something half-way: unknown.
        let r = p.after(&b, t0, Ended::Failed, &LIMITS, 1.0);
        assert_eq!(
            (r.state, r.delay),
            (TargetState::Retrying, Some(BACKOFF_BASE))
        );
        assert!(p.needs(&a), "A → B (failed) → A reloads A");
        p.after(&b, t0, Ended::Failed, &LIMITS, 1.0);
        let r = p.after(&b, t0, Ended::Failed, &LIMITS, 1.0);
        assert_eq!((r.state, r.gave_up), (TargetState::Failed, true));
        assert_eq!(
            p.next_step(&b, &LIMITS, t0 + Duration::from_secs(60)),
            Step::Rest
        );
        // A resync tries the version again.
        assert!(p.needs(&version("b", 1)));
    }

    #[test]
    fn a_draining_version_is_not_held_and_never_sent_again_until_its_workers_exit() {
        let t0 = Instant::now();
        let (a, b) = (version("a", 0), version("b", 0));
        let mut p = Progress::default();
        p.after(&a, t0, Ended::Done, &LIMITS, 0.5);
        p.drain(&a, t0 + Duration::from_secs(5));
        assert_eq!(p.applied, None, "stale while old workers run");
        let late = t0 + Duration::from_secs(60);
        assert_eq!(p.next_step(&a, &LIMITS, late), Step::Rest);
        // Not at a resync either, past the deadline included.
        assert!(!p.needs(&version("a", 3)));
        assert!(!p.drain_expired(&a, t0 + Duration::from_secs(4)));
        assert!(p.drain_expired(&a, late));
        assert!(!p.drain_expired(&a, late), "reported once");
        assert!(!p.needs(&a));
        // A new version is signalled as any other.
        assert_eq!(p.next_step(&b, &LIMITS, late), Step::Act { force: false });
        assert!(!p.drained(&b));
        // The old workers exit, even after the deadline: held.
        assert!(p.drained(&a));
        assert_eq!((p.applied, p.draining), (Some(a.fingerprint), None));
        // A later reload of another version ends the drain.
        p.drain(&a, late);
        p.after(&b, late, Ended::Done, &LIMITS, 0.5);
        assert_eq!(p.draining, None);
    }

    #[test]
    fn waiting_leaves_the_version_alone_and_does_not_count() {
        let t0 = Instant::now();
        let a = version("a", 0);
        let mut p = Progress::default();
        for _ in 0..10 {
            let r = p.after(&a, t0, Ended::Waiting, &LIMITS, 1.0);
            assert_eq!(r.state, TargetState::Waiting);
            assert!(r.delay.unwrap() <= WAIT_CAP);
        }
        assert_eq!(p.version_failures, 0);
        assert_eq!(p.last_action, None, "nothing was sent: no storm interval");
        assert_eq!(p.next_step(&a, &LIMITS, t0), Step::Act { force: false });
    }
}
