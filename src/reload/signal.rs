//! Signal action: find the app's process in the shared PID namespace and signal it, safely.
//!
//! - The process is found by its selector (see [`crate::process::select`]): never the sidecar,
//!   only the declared app uid when one is declared, and one top-level match (several unrelated
//!   ones are an ambiguous target: nothing is sent).
//! - The process found is kept as a [`ProcessHandle`] (a pidfd and its open status): while it
//!   lives it is the app, with no `/proc` walk at the next reload; once it exits (the app
//!   restarted) it is looked up again. A recycled pid is never hit.
//! - Never kill the app by accident: a signal whose default action ends the process is sent only
//!   when its status shows a handler for it (SigCgt). TERM, INT, QUIT and KILL, named to restart a
//!   container, are the exception.
//! - A process that started after the current content appeared already holds it: nothing is sent.

use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::{ActionError, Outcome};
use crate::config::SignalConfig;
use crate::group::Version;
use crate::process::select::FindError;
use crate::process::tracker::{Found, TrackError, Tracker};
use crate::process::{ProcFs, ProcInfo, ProcStatus};

/// A process must have started this much after the content's ctime to be trusted to hold it:
/// start times count in clock ticks (10 ms) and file times lag by up to a tick.
pub const START_MARGIN: Duration = Duration::from_millis(20);

/// The signal action of one target.
pub struct SignalAction {
    /// What to send.
    signal: Signal,
    /// The app's process(es), followed across reloads.
    tracker: Tracker,
    /// The one process that holds the version last applied (pid, start ticks), for the state file.
    delivered: Option<(i32, u64)>,
}

impl SignalAction {
    /// An action for `cfg`; `app_uid` is the declared app uid.
    pub fn new(cfg: SignalConfig, procfs: ProcFs, app_uid: Option<u32>) -> Self {
        SignalAction {
            signal: cfg.signal,
            tracker: Tracker::new(procfs, cfg.selector, cfg.all, app_uid),
            delivered: None,
        }
    }

    /// Signals the target process(es) so they load `version`.
    pub fn send(&mut self, version: &Version, force: bool) -> Result<Outcome, ActionError> {
        let sig = self.signal;
        let procs = self.targets()?;
        self.delivered = None;
        // Check every process before signalling any, so a retry never signals one twice.
        let mut older = Vec::with_capacity(procs.len());
        let mut newer = None;
        for (h, st) in &procs {
            if !force && self.started_after(&h.info, version.content_time) {
                newer.get_or_insert_with(|| h.info.clone());
                continue;
            }
            check_disposition(&h.info, st, sig)?;
            older.push((h, st));
        }
        if older.is_empty() {
            let p = newer.expect("at least one process");
            if procs.len() == 1 {
                self.delivered = Some((p.pid, p.start_ticks));
            }
            self.keep(procs);
            return Ok(Outcome::Skipped(format!(
                "{} started after the current content appeared: it already holds it",
                p.shown()
            )));
        }
        for (h, st) in &older {
            h.signal(sig).map_err(|e| send_error(&h.info, st, e))?;
        }
        // The app may wait for this very CPU to handle the signal: let it run before the
        // bookkeeping that follows.
        std::thread::yield_now();
        let shown: Vec<String> = older.iter().map(|(h, _)| h.info.shown()).collect();
        self.delivered = (older.len() == 1 && newer.is_none())
            .then(|| (older[0].0.info.pid, older[0].0.info.start_ticks));
        let done = Outcome::Done(format!("{} sent to {}", sig.as_str(), shown.join(", ")));
        self.keep(procs);
        Ok(done)
    }

    fn keep(&mut self, procs: Vec<Found>) {
        self.tracker
            .keep(procs.into_iter().map(|(h, _)| h).collect());
    }

    /// The one process that holds the version last applied, when there is exactly one.
    pub fn delivered(&self) -> Option<(i32, u64)> {
        self.delivered
    }

    /// The one target process now, if there is exactly one.
    pub fn current(&mut self) -> Option<(i32, u64)> {
        match self.targets() {
            Ok(p) if p.len() == 1 => {
                let id = (p[0].0.info.pid, p[0].0.info.start_ticks);
                self.keep(p);
                Some(id)
            }
            _ => None,
        }
    }

    /// The processes to signal, with their status now.
    fn targets(&mut self) -> Result<Vec<Found>, ActionError> {
        self.tracker.processes().map_err(|e| match e {
            TrackError::Gone(p) => gone(&p),
            TrackError::Find(FindError::NotFound) => ActionError::Waiting(format!(
                "no process matches {} (yet): waiting for it (the pod needs shareProcessNamespace: true)",
                self.tracker.selector().describe()
            )),
            TrackError::Find(e @ FindError::Ambiguous(_)) => ActionError::Ambiguous(e.to_string()),
            TrackError::Find(e) if e.is_transient() => ActionError::Waiting(e.to_string()),
            TrackError::Find(e) => ActionError::Failed(e.to_string()),
        })
    }

    fn started_after(&self, p: &ProcInfo, content_time: Option<SystemTime>) -> bool {
        content_time.is_some_and(|ct| self.tracker.procfs().start_time(p) > ct + START_MARGIN)
    }
}

fn send_error(p: &ProcInfo, st: &ProcStatus, e: Errno) -> ActionError {
    match e {
        Errno::ESRCH => gone(p),
        Errno::EPERM => ActionError::Failed(format!(
            "not permitted to signal {} (uid {uid}): the sidecar runs as uid {}; run it as the \
                 app's runAsUser ({uid}) or add the KILL capability (CAP_KILL)",
            p.shown(),
            nix::unistd::geteuid(),
            uid = st.uid,
        )),
        e => ActionError::Failed(format!("cannot signal {}: {e}", p.shown())),
    }
}

/// Whether `sig` may be sent to the process whose status is `st`.
fn check_disposition(p: &ProcInfo, st: &ProcStatus, sig: Signal) -> Result<(), ActionError> {
    if is_restart_signal(sig) {
        return Ok(());
    }
    let n = sig as i32;
    if st.ignores(n) {
        return Err(ActionError::Failed(format!(
            "{} ignores {}: it will never reload on this signal; check --signal and the app's configuration",
            p.shown(),
            sig.as_str()
        )));
    }
    if !st.catches(n) {
        let effect = if default_is_ignore(sig) {
            "would have no effect"
        } else {
            "would end it"
        };
        return Err(ActionError::Waiting(format!(
            "{} has no {} handler (yet): the signal {effect}; waiting until the app installs one",
            p.shown(),
            sig.as_str()
        )));
    }
    Ok(())
}

fn gone(p: &ProcInfo) -> ActionError {
    ActionError::Waiting(format!(
        "{} exited before it could be signalled: looking it up again",
        p.shown()
    ))
}

/// Signals named to end the process so that Kubernetes restarts the container.
pub fn is_restart_signal(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGKILL
    )
}

/// Signals whose default action is to do nothing.
fn default_is_ignore(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGCHLD | Signal::SIGCONT | Signal::SIGURG | Signal::SIGWINCH
    )
}
