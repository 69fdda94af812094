//! Making targets hold the content on disk: the actions (signal, HTTP, exec), their verification,
//! and the reconciler that drives them, one per target.
//!
//! - [`reconciler`]: the task of one target: when to act, what to record;
//! - [`progress`]: what the reconciler knows and decides, pure and tested with a test clock;
//! - [`signal`], [`http`], [`exec`]: the actions; [`verify`]: the probe after a reload;
//! - [`state_file`]: what each target applied, kept across sidecar restarts.

pub mod exec;
pub mod http;
pub mod progress;
pub mod reconciler;
pub mod served;
pub mod signal;
pub mod state_file;
pub mod tls;
pub mod verify;

use std::sync::Arc;

use crate::config::ActionConfig;
use crate::group::Version;
use crate::process::identity::Identity;
use crate::process::{ProcFs, Selector};
use crate::scan::fingerprint::FingerprintKey;
use crate::watch::file::FileWatch;
use crate::watch::inotify::WatchHub;

/// What a successful attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The action ran; the text says what was done.
    Done(String),
    /// Nothing had to be done (the process started after the content appeared).
    Skipped(String),
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// Nothing was sent: the target is not ready (no process yet, no signal handler yet). Does not
    /// count against `--reload-retries`.
    Waiting(String),
    /// The action was tried and failed (refused, timed out, wrong status, not permitted).
    Failed(String),
    /// Several unrelated processes match the selector: nothing was sent. Counts as a failure.
    Ambiguous(String),
}

impl ActionError {
    /// The message, whichever kind.
    pub fn message(&self) -> &str {
        match self {
            ActionError::Waiting(m) | ActionError::Failed(m) | ActionError::Ambiguous(m) => m,
        }
    }
}

/// A target's action, ready to run (the runtime side of [`ActionConfig`]).
pub enum Action {
    /// HTTP call.
    Http(http::HttpAction),
    /// Signal.
    Signal(signal::SignalAction),
    /// Command.
    Exec(exec::ExecAction),
}

impl Action {
    /// The action of `cfg`, for target `target` of watch group `group`; `app` is the group's
    /// declared app identity; `env`, for a group the app took as environment variables, the key
    /// its variables are fingerprinted with and the least time between two restarts. A pid file
    /// is watched through `hub`.
    pub fn new(
        cfg: &ActionConfig,
        procfs: &ProcFs,
        app: Option<&Identity>,
        target: &str,
        group: &str,
        env: Option<(FingerprintKey, std::time::Duration)>,
        hub: &Arc<WatchHub>,
    ) -> Action {
        match cfg {
            ActionConfig::Http(h) => Action::Http(http::HttpAction::new(h.clone())),
            ActionConfig::Signal(s) => {
                let mut a =
                    signal::SignalAction::new(s.clone(), procfs.clone(), app.map(|a| a.uid));
                if let Selector::PidFile(path, _) = &s.selector
                    && let Some(w) = FileWatch::new(hub, path)
                {
                    a = a.with_pid_file_changes(Box::new(w));
                }
                Action::Signal(match env {
                    Some((key, gap)) => a.comparing_environment(key, gap),
                    None => a,
                })
            }
            ActionConfig::Exec(e) => Action::Exec(exec::ExecAction::new(e.clone(), target, group)),
        }
    }

    /// Where the action's filesystem calls that may stall run (a signal target's pid file),
    /// until `stop`, shown on `status` when one does not return.
    pub fn on_lane(
        self,
        lane: crate::lane::Lane,
        stop: tokio::sync::watch::Receiver<bool>,
        status: crate::report::status::TargetEntry,
    ) -> Action {
        match self {
            Action::Signal(a) => Action::Signal(a.on_lane(lane, stop, status)),
            other => other,
        }
    }

    /// Whether the action is over as soon as it starts (a signal: nothing awaited), so that
    /// nothing need show it in progress.
    pub fn is_instant(&self) -> bool {
        matches!(self, Action::Signal(_))
    }

    /// Whether the action can tell by itself that the app already holds a version (signal
    /// targets compare the process start time with the content time).
    pub fn knows_process_age(&self) -> bool {
        matches!(self, Action::Signal(_))
    }

    /// What the last comparison of the app's environment with the files found
    /// (`--consumed-as env`).
    pub fn environment(&self) -> Option<&crate::report::status::EnvironmentStatus> {
        match self {
            Action::Signal(a) => a.environment(),
            _ => None,
        }
    }

    /// Whether the app's environment still holds `version`, sending nothing (`None`: not an app
    /// that took it as environment variables, or not readable now).
    pub async fn environment_holds(&mut self, version: &Version) -> Option<bool> {
        match self {
            Action::Signal(a) => a.environment_holds(version).await,
            _ => None,
        }
    }

    /// The process that holds the version last applied (signal targets with one process).
    pub fn delivered(&self) -> Option<(i32, u64)> {
        match self {
            Action::Signal(a) => a.delivered(),
            _ => None,
        }
    }

    /// The target process now (signal targets with one process).
    pub async fn current_process(&mut self) -> Option<(i32, u64)> {
        match self {
            Action::Signal(a) => a.current().await,
            _ => None,
        }
    }

    /// Applies `version`. `force` sends even when the process looks newer than the content.
    pub async fn apply(&mut self, version: &Version, force: bool) -> Result<Outcome, ActionError> {
        // The HTTP exchange and the command are boxed: their state only exists while they run,
        // so a thousand idle targets stay small, and a signal, sent with no await, allocates
        // nothing.
        match self {
            Action::Http(a) => Box::pin(a.call(version)).await,
            Action::Signal(a) => a.send(version, force).await,
            Action::Exec(a) => Box::pin(a.run(version)).await,
        }
    }
}
