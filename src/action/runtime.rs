//! The actions at run time: one enum over the kinds' runtimes, built from a target's
//! [`ActionConfig`]; the reconciler drives it.

use std::sync::Arc;

use super::{ActionConfig, ActionError, Outcome, exec, http, restart, signal};
use crate::group::Version;
use crate::process::identity::Identity;
use crate::process::{ProcFs, Selector};
use crate::scan::fingerprint::FingerprintKey;
use crate::watch::inotify::WatchHub;
use crate::watch::pid_file::PidFileWatch;

/// A target's action, ready to run (the runtime side of [`ActionConfig`]).
pub(crate) enum Action {
    /// HTTP call.
    Http(http::call::HttpAction),
    /// Signal.
    Signal(signal::send::SignalAction),
    /// For an app that took its keys as environment variables: a restart when its environment
    /// differs from the files.
    Restart(restart::RestartAction),
    /// Command.
    Exec(exec::run::ExecAction),
}

impl Action {
    /// The action of `cfg`, for target `target` of watch group `group`; `app` is the group's
    /// declared app identity; `env`, for a group the app took as environment variables, the key
    /// its variables are fingerprinted with and the least time between two restarts
    /// ([`restart`]). A pid file is watched through `hub`.
    pub(crate) fn new(
        cfg: &ActionConfig,
        procfs: &ProcFs,
        app: Option<&Identity>,
        target: &str,
        group: &str,
        env: Option<(FingerprintKey, std::time::Duration)>,
        hub: &Arc<WatchHub>,
    ) -> Action {
        match cfg {
            ActionConfig::Http(h) => Action::Http(http::call::HttpAction::new(h.clone())),
            ActionConfig::Signal(s) => {
                let mut a =
                    signal::send::SignalAction::new(s.clone(), procfs.clone(), app.map(|a| a.uid));
                if let Selector::PidFile(path, _) = &s.selector
                    && let Some(w) = PidFileWatch::new(hub, path)
                {
                    a = a.with_pid_file_changes(Box::new(w));
                }
                match env {
                    Some((key, gap)) => Action::Restart(restart::RestartAction::new(a, key, gap)),
                    None => Action::Signal(a),
                }
            }
            ActionConfig::Exec(e) => {
                Action::Exec(exec::run::ExecAction::new(e.clone(), target, group))
            }
        }
    }

    /// Where the action's filesystem calls that may stall run (a signal target's pid file),
    /// until `stop`, shown on `status` when one does not return.
    pub(crate) fn on_lane(
        self,
        lane: crate::lane::Lane,
        stop: tokio::sync::watch::Receiver<bool>,
        status: crate::report::status::TargetEntry,
    ) -> Action {
        match self {
            Action::Signal(a) => Action::Signal(a.on_lane(lane, stop, status)),
            Action::Restart(a) => Action::Restart(a.on_lane(lane, stop, status)),
            a @ (Action::Http(_) | Action::Exec(_)) => a,
        }
    }

    /// Whether the action is over as soon as it starts (a signal: nothing awaited), so that
    /// nothing need show it in progress.
    pub(crate) fn is_instant(&self) -> bool {
        match self {
            Action::Signal(_) | Action::Restart(_) => true,
            Action::Http(_) | Action::Exec(_) => false,
        }
    }

    /// Whether the action can tell by itself that the app already holds a version (signal
    /// targets compare the process start time with the content time).
    pub(crate) fn knows_process_age(&self) -> bool {
        match self {
            Action::Signal(_) | Action::Restart(_) => true,
            Action::Http(_) | Action::Exec(_) => false,
        }
    }

    /// What the last comparison of the app's environment with the files found
    /// (`--consumed-as env`).
    pub(crate) fn environment(&self) -> Option<&crate::report::status::EnvironmentStatus> {
        match self {
            Action::Restart(a) => a.environment(),
            Action::Signal(_) => None,
            Action::Http(_) | Action::Exec(_) => None,
        }
    }

    /// Whether the app's environment still holds `version`, sending nothing (`None`: not an app
    /// that took it as environment variables, or not readable now).
    pub(crate) async fn environment_holds(&mut self, version: &Version) -> Option<bool> {
        match self {
            Action::Restart(a) => a.environment_holds(version).await,
            Action::Signal(_) => None,
            Action::Http(_) | Action::Exec(_) => None,
        }
    }

    /// The process that holds the version last applied (signal targets with one process).
    pub(crate) fn delivered(&self) -> Option<(i32, u64)> {
        match self {
            Action::Signal(a) => a.delivered(),
            Action::Restart(a) => a.signal().delivered(),
            Action::Http(_) | Action::Exec(_) => None,
        }
    }

    /// The target process now (signal targets with one process).
    pub(crate) async fn current_process(&mut self) -> Option<(i32, u64)> {
        match self {
            Action::Signal(a) => a.current().await,
            Action::Restart(a) => a.signal_mut().current().await,
            Action::Http(_) | Action::Exec(_) => None,
        }
    }

    /// The workers of the signalled process(es) against `reference` (signal targets; `None`
    /// for other kinds, and for an app restarted on an environment change, whose workers are
    /// replaced with it).
    pub(crate) async fn workers(
        &mut self,
        reference: crate::process::workers::Reference,
    ) -> Option<Result<crate::process::workers::Count, String>> {
        match self {
            Action::Signal(a) => Some(a.workers(reference).await),
            Action::Restart(_) | Action::Http(_) | Action::Exec(_) => None,
        }
    }

    /// Records in the target's series what only this kind knows of the attempt that just ended
    /// (`ok`: whether it counted, verification included): an HTTP call's answer.
    pub(crate) fn record(&self, ok: bool, metrics: &crate::report::metrics::TargetMetrics) {
        match self {
            Action::Http(a) => {
                let (status, failure) = a.answered(ok);
                metrics.call(status, failure);
            }
            Action::Signal(_) | Action::Restart(_) | Action::Exec(_) => {}
        }
    }

    /// Applies `version`. `force` sends even when the process looks newer than the content.
    pub(crate) async fn apply(
        &mut self,
        version: &Version,
        force: bool,
    ) -> Result<Outcome, ActionError> {
        // The HTTP exchange and the command are boxed: their state only exists while they run,
        // so a thousand idle targets stay small, and a signal, sent with no await, allocates
        // nothing.
        match self {
            Action::Http(a) => Box::pin(a.call(version)).await,
            Action::Signal(a) => a.send(version, force).await,
            Action::Restart(a) => a.apply(version).await,
            Action::Exec(a) => Box::pin(a.run(version)).await,
        }
    }
}
