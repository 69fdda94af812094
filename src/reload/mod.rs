//! Reload actions and the reconciler that drives them.
//!
//! One file per action (`signal`, `http`, `exec`); [`Actor`] dispatches to them. The
//! [`reconciler`] decides when to act: it compares the content on disk with what the target last
//! applied, retries with backoff and spaces actions out.

pub mod exec;
pub mod http;
pub mod reconciler;
pub mod signal;
pub mod verify;

use crate::config::Action;
use crate::process::ProcFs;
use crate::scanner::Version;

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
}

impl ActionError {
    /// The message, whichever kind.
    pub fn message(&self) -> &str {
        match self {
            ActionError::Waiting(m) | ActionError::Failed(m) => m,
        }
    }
}

/// A target's action, ready to run.
pub enum Actor {
    /// HTTP call.
    Http(http::HttpActor),
    /// Signal.
    Signal(signal::SignalActor),
    /// Command.
    Exec(exec::ExecActor),
}

impl Actor {
    /// Builds the actor of `action`; `group` names the watch group (for the exec environment).
    pub fn new(action: &Action, procfs: &ProcFs, group: &str) -> Actor {
        match action {
            Action::Http(h) => Actor::Http(http::HttpActor::new(h.clone())),
            Action::Signal(s) => Actor::Signal(signal::SignalActor::new(s.clone(), procfs.clone())),
            Action::Exec(e) => Actor::Exec(exec::ExecActor::new(e.clone(), group)),
        }
    }

    /// `http`, `signal` or `exec`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Http(_) => "http",
            Actor::Signal(_) => "signal",
            Actor::Exec(_) => "exec",
        }
    }

    /// Whether the actor can tell by itself that the app already holds a version (signal
    /// targets compare the process start time with the content time).
    pub fn knows_process_age(&self) -> bool {
        matches!(self, Actor::Signal(_))
    }

    /// The process that holds the version last applied (signal targets with one process).
    pub fn delivered(&self) -> Option<(i32, u64)> {
        match self {
            Actor::Signal(a) => a.delivered(),
            _ => None,
        }
    }

    /// The target process now (signal targets with one process).
    pub fn current_process(&mut self) -> Option<(i32, u64)> {
        match self {
            Actor::Signal(a) => a.current(),
            _ => None,
        }
    }

    /// Applies `version`. `force` sends even when the process looks newer than the content.
    pub async fn apply(&mut self, version: &Version, force: bool) -> Result<Outcome, ActionError> {
        match self {
            Actor::Http(a) => a.call(version).await,
            Actor::Signal(a) => a.send(version, force),
            Actor::Exec(a) => a.run(version).await,
        }
    }
}
