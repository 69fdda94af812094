//! The environment restart: for a group the app took as environment variables
//! (`--consumed-as env`, `envFrom`), a new version applies only when its container restarts.
//! The signal target's process is compared instead of signalled: its environment's keyed
//! fingerprints against the files'. While they differ it is sent the restart signal once per
//! version (its container restarts and takes the Secret anew), at most once per
//! `--retry-backoff-max` across versions, never when none of the keys is in its environment,
//! and the new process is compared again before anything else is sent. Its configuration check
//! (`check_groups`) and its doctor check ([`doctor`]) live here too.
//!
//! A target with `--signal none` (`"signal": "none"`) reports only: its process is compared
//! exactly so, and nothing is ever sent. While the environment differs the target is `waiting`
//! (stale, with why and what to do), for a restart of the container by someone else (a rollout,
//! an operator); it looks again with the wait's backoff (every 5 s at most), counts no failure,
//! and is applied as soon as the environment holds the content on disk.

pub(crate) mod doctor;
pub(crate) mod metrics;

use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

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
    /// Comparisons made (shown with the last one: a reader sees that they go on).
    comparisons: u64,
}

/// A restart signal sent for a version.
#[derive(Debug, Clone, Copy)]
struct Restart {
    /// The signal sent.
    signal: Signal,
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
                comparisons: 0,
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
        env.comparisons += 1;
        let mut status = EnvironmentStatus {
            pid: h.info.pid,
            checked_at: SystemTime::now(),
            comparisons: env.comparisons,
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
    /// (see the module's documentation); with `--signal none`, only say so.
    pub(crate) async fn apply(&mut self, version: &Version) -> Result<Outcome, ActionError> {
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
                        r.signal.as_str(),
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
                let Some(sig) = self.signal.signal else {
                    // Report only: nothing is sent, and nothing failed. Waiting (stale, no
                    // failure counted, looked at again with the wait's backoff) for the
                    // container's restart by someone else.
                    self.signal.keep(procs);
                    return Err(ActionError::Waiting(format!(
                        "the environment of {shown} holds another value of {keys}; --signal none: \
                         restart its container to apply it, or set --signal TERM"
                    )));
                };
                match (this_version, restart) {
                    (Some(r), _) if r.process == me => Err(ActionError::Waiting(format!(
                        "{} was sent to {shown} {} ago: waiting for it to exit and its container to restart",
                        r.signal.as_str(),
                        humantime::format_duration(Duration::from_secs(r.at.elapsed().as_secs()))
                    ))),
                    (Some(r), _) => Err(ActionError::Failed(format!(
                        "{shown}, started after {} to pid {}, still holds another value of {keys}: its \
                         container took an older Secret (kubelet's copy lags, or the Secret changed back); \
                         not restarting it again for this version",
                        r.signal.as_str(),
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
                                signal: sig,
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
/// of such a group must be a signal target (the process whose environment is compared). A target
/// that sends nothing (`--signal none`) only reports such an environment: anywhere else it
/// would do nothing at all.
pub(crate) fn check_groups(groups: &[GroupConfig], f: &mut Findings) {
    for g in groups {
        let env = g.consumed_as == ConsumedAs::Env;
        for t in &g.targets {
            let name = crate::text::value(&t.name);
            match &t.action {
                ActionConfig::Signal(s) if s.signal.is_none() && !env => f.error(format!(
                    "watch group '{}', target '{name}': --signal none (\"signal\": \"none\") sends \
                     nothing; it only reports an app that took the keys as environment variables. \
                     Give the signal the app reloads on (--signal HUP), or, if the app was given the \
                     keys with envFrom, declare the group --consumed-as env (consumed_as: env)",
                    g.name
                )),
                ActionConfig::Signal(_) if !env => {}
                ActionConfig::Signal(s) => {
                    let Some(sig) = s.signal.map(|s| s.as_str()) else {
                        continue;
                    };
                    if !matches!(sig, "SIGTERM" | "SIGINT" | "SIGQUIT" | "SIGKILL") {
                        f.warn(format!(
                            "watch group '{}' is consumed as env, and target '{name}' sends {sig}: a \
                             signal cannot change a process's environment; --signal TERM restarts the \
                             container, which takes the Secret anew (--signal none only reports it)",
                            g.name,
                        ));
                    }
                }
                ActionConfig::Http(_) | ActionConfig::Exec(_) if env => f.error(format!(
                    "watch group '{}' is consumed as env (--consumed-as env, consumed_as), but target '{name}' \
                     is not a signal target: only a restart applies an environment. Give the app's process \
                     (--process-name, --process-cmdline or --pid-file) with --signal TERM (or --signal \
                     none to report only)",
                    g.name,
                )),
                ActionConfig::Http(_) | ActionConfig::Exec(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(argv: &[&str]) -> Result<Config, Vec<String>> {
        Config::from_argv(std::iter::once("secret-reloader").chain(argv.iter().copied()))
            .map_err(|e| e.0)
    }

    #[test]
    fn signal_none_reports_an_environment_and_is_refused_elsewhere() {
        let flags = ["--watch", "/x", "--process-name", "app", "--signal", "none"];
        let c = load(&[&flags[..], &["--consumed-as", "env"]].concat()).unwrap();
        let action = c.groups[0].targets[0].action.summary();
        assert_eq!(action["signal"], "none", "{action}");
        // The same target where the app reads files would do nothing at all.
        let e = load(&flags).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("--signal none") && e[0].contains("--signal HUP"),
            "{e:?}"
        );
        // In a config file: the field, and the same rule.
        let group = |consumed_as: &str| {
            format!(
                r#"{{"groups":[{{"name":"g","watch":["/x"],"consumed_as":"{consumed_as}",
                "targets":[{{"type":"signal","signal":"NONE","process_name":"app"}}]}}]}}"#
            )
        };
        assert!(Config::from_json(&group("env")).is_ok());
        let e = Config::from_json(&group("files")).unwrap_err().0;
        assert!(
            e[0].contains("watch group 'g'") && e[0].contains(r#""signal": "none""#),
            "{e:?}"
        );
        // Not a warning about a signal that cannot change an environment: it sends none.
        let cli = crate::config::cli::Cli::try_from_argv(
            std::iter::once("secret-reloader")
                .chain(flags)
                .chain(["--consumed-as", "env"]),
        )
        .unwrap();
        assert!(Config::load(&cli.run).unwrap().warnings.is_empty());
    }
}
