//! The environment restart: for a group the app took as environment variables
//! (`--consumed-as env`, `envFrom`), a new version applies only when its container restarts.
//! The signal target's process is compared instead of signalled: its environment's keyed
//! fingerprints against the files'. While they differ it is sent the restart signal once per
//! version (its container restarts and takes the Secret anew), at most once per
//! `--retry-backoff-max` across versions, never when none of the keys is in its environment,
//! and the new process is compared again before anything else is sent. Its configuration check
//! (`check_groups`) and its doctor check ([`doctor`]) live here too.

pub(crate) mod doctor;
pub(crate) mod metrics;

use std::time::{Duration, Instant, SystemTime};

use super::signal::send::{SignalAction, gone, send_error};
use super::{ActionConfig, ActionError, Outcome};
use crate::config::{ConsumedAs, Findings, GroupConfig};
use crate::group::Version;
use crate::process::environ::{self, Verdict};
use crate::process::handle::ProcessHandle;
use crate::report::status::EnvironmentStatus;
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};

/// The environment comparison of an app that took the keys as environment variables.
struct EnvMode {
    /// The fingerprint key (the variables are fingerprinted like the files).
    key: FingerprintKey,
    /// Least time between two restarts (`--retry-backoff-max`).
    gap: Duration,
    /// The last restart signal sent.
    restart: Option<Restart>,
    /// What the last comparison found.
    last: Option<EnvironmentStatus>,
}

/// A restart signal sent for a version.
#[derive(Debug, Clone, Copy)]
struct Restart {
    version: Fingerprint,
    at: Instant,
    /// The process it was sent to (pid, start ticks).
    process: (i32, u64),
}

/// The restart action of one target: its signal action, whose process is compared.
pub(crate) struct RestartAction {
    /// Finds the process and sends the restart signal.
    signal: SignalAction,
    /// What the environment is compared with, and what was sent (boxed: a thousand idle signal
    /// targets stay small).
    env: Box<EnvMode>,
}

impl RestartAction {
    /// The action for an app that took the keys as environment variables: `signal`'s process
    /// compared with `key`, restarted at most once per `gap`.
    pub(crate) fn new(signal: SignalAction, key: FingerprintKey, gap: Duration) -> Self {
        RestartAction {
            signal,
            env: Box::new(EnvMode {
                key,
                gap,
                restart: None,
                last: None,
            }),
        }
    }

    /// The same action, its signal action's pid-file lookups on `lane` (see
    /// [`SignalAction::on_lane`]).
    pub(crate) fn on_lane(
        self,
        lane: crate::lane::Lane,
        stop: tokio::sync::watch::Receiver<bool>,
        status: crate::report::status::TargetEntry,
    ) -> Self {
        RestartAction {
            signal: self.signal.on_lane(lane, stop, status),
            env: self.env,
        }
    }

    /// The signal action it restarts with.
    pub(crate) fn signal(&self) -> &SignalAction {
        &self.signal
    }

    /// As [`RestartAction::signal`], to change.
    pub(crate) fn signal_mut(&mut self) -> &mut SignalAction {
        &mut self.signal
    }

    /// What the last comparison of the app's environment found (`--consumed-as env`).
    pub(crate) fn environment(&self) -> Option<&EnvironmentStatus> {
        self.env.last.as_ref()
    }

    /// Whether the app's environment still holds `version` (`None`: not compared, or it cannot
    /// be read now). Sends nothing.
    pub(crate) async fn environment_holds(&mut self, version: &Version) -> Option<bool> {
        let mut procs = self.signal.targets().await.ok()?;
        if procs.len() != 1 {
            self.signal.keep(procs);
            return None;
        }
        let found = self.compare(&mut procs[0].0, version);
        self.signal.keep(procs);
        Some(found.ok()? == Verdict::Holds)
    }

    /// Compares the environment of `h` with the keys of `version`, and records it.
    fn compare(
        &mut self,
        h: &mut ProcessHandle,
        version: &Version,
    ) -> Result<Verdict, ActionError> {
        let env = &mut self.env;
        let mut status = EnvironmentStatus {
            pid: h.info.pid,
            checked_at: SystemTime::now(),
            keys: environ::Compared::default(),
            error: None,
        };
        match h.environ() {
            Ok(raw) => {
                status.keys = environ::compare(&raw, &version.keys, &env.key);
                let verdict = status.keys.verdict();
                env.last = Some(status);
                Ok(verdict)
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(gone(&h.info)),
            Err(e) => {
                let uid = h
                    .status()
                    .map(|s| s.uid.to_string())
                    .unwrap_or_else(|_| "?".into());
                let why = environ::unreadable(&h.info.shown(), h.info.pid, &uid, &e);
                status.error = Some(why.clone());
                env.last = Some(status);
                Err(ActionError::Failed(why))
            }
        }
    }

    /// `--consumed-as env`: restart the app when its environment differs from the files, safely
    /// (see the module's documentation).
    pub(crate) async fn apply(&mut self, version: &Version) -> Result<Outcome, ActionError> {
        let sig = self.signal.signal;
        let mut procs = self.signal.targets().await?;
        if procs.len() != 1 {
            let n = procs.len();
            self.signal.keep(procs);
            return Err(ActionError::Failed(format!(
                "--consumed-as env compares the environment of one process, but {n} match {}: \
                 select the app's main process alone",
                self.signal.selector
            )));
        }
        let compared = self.compare(&mut procs[0].0, version);
        let (h, _) = &mut procs[0];
        let me = (h.info.pid, h.info.start_ticks);
        let shown = h.info.shown();
        let restart = self.env.restart;
        let this_version = restart.filter(|r| r.version == version.fingerprint);
        let result = match compared {
            Err(e) => Err(e),
            Ok(Verdict::Absent) => Err(ActionError::Failed(format!(
                "none of the keys ({}) is in the environment of {shown}: a restart would change \
                 nothing, so none is sent; give the app the Secret with envFrom, or watch the \
                 files it reads with --consumed-as files",
                version
                    .keys
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Ok(Verdict::Holds) => {
                self.signal.delivered = Some(me);
                Ok(match this_version {
                    Some(r) if r.process != me => Outcome::Done(format!(
                        "{shown}, started after {} to pid {}, holds the content on disk in its environment",
                        sig.as_str(),
                        r.process.0
                    )),
                    _ => Outcome::Skipped(format!(
                        "the environment of {shown} holds the content on disk"
                    )),
                })
            }
            Ok(Verdict::Differs) => {
                let keys = self
                    .environment()
                    .map(|e| e.keys.differing.join(", "))
                    .unwrap_or_default();
                match (this_version, restart) {
                    (Some(r), _) if r.process == me => Err(ActionError::Waiting(format!(
                        "{} was sent to {shown} {} ago: waiting for it to exit and its container to restart",
                        sig.as_str(),
                        humantime::format_duration(Duration::from_secs(r.at.elapsed().as_secs()))
                    ))),
                    (Some(r), _) => Err(ActionError::Failed(format!(
                        "{shown}, started after {} to pid {}, still holds another value of {keys}: its \
                         container took an older Secret (kubelet's copy lags, or the Secret changed back); \
                         not restarting it again for this version",
                        sig.as_str(),
                        r.process.0
                    ))),
                    (None, Some(r)) if r.at.elapsed() < self.env.gap => {
                        Err(ActionError::Waiting(format!(
                            "{shown} holds another value of {keys}, but the last restart was {} ago: the \
                             next waits for --retry-backoff-max",
                            humantime::format_duration(Duration::from_secs(
                                r.at.elapsed().as_secs()
                            ))
                        )))
                    }
                    _ => match h.signal(sig) {
                        Ok(()) => {
                            self.env.restart = Some(Restart {
                                version: version.fingerprint,
                                at: Instant::now(),
                                process: me,
                            });
                            Err(ActionError::Waiting(format!(
                                "{} sent to {shown}: its environment holds another value of {keys}; \
                                 waiting for its container to restart with the current Secret",
                                sig.as_str()
                            )))
                        }
                        Err(e) => Err(send_error(h, e)),
                    },
                }
            }
        };
        self.signal.keep(procs);
        result
    }
}

/// An app that took its keys as environment variables is restarted, never reloaded: every target
/// of such a group must be a signal target (the process whose environment is compared).
pub(crate) fn check_groups(groups: &[GroupConfig], f: &mut Findings) {
    for g in groups.iter().filter(|g| g.consumed_as == ConsumedAs::Env) {
        for t in &g.targets {
            match &t.action {
                ActionConfig::Signal(s) => {
                    let sig = s.signal.as_str();
                    if !matches!(sig, "SIGTERM" | "SIGINT" | "SIGQUIT" | "SIGKILL") {
                        f.warn(format!(
                            "watch group '{}' is consumed as env, and target '{}' sends {sig}: a signal \
                             cannot change a process's environment; --signal TERM restarts the container, \
                             which takes the Secret anew",
                            g.name,
                            crate::text::value(&t.name)
                        ));
                    }
                }
                ActionConfig::Http(_) | ActionConfig::Exec(_) => f.error(format!(
                    "watch group '{}' is consumed as env (--consumed-as env, consumed_as), but target '{}' \
                     is not a signal target: only a restart applies an environment. Give the app's process \
                     (--process-name, --process-cmdline or --pid-file) with --signal TERM",
                    g.name,
                    crate::text::value(&t.name)
                )),
            }
        }
    }
}
