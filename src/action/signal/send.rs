//! The signal action at run time: find the app's process in the shared PID namespace and signal it, safely.
//!
//! - The process is found by its selector (see [`crate::process::select`]): never the sidecar,
//!   only the declared app uid when one is declared, and one top-level match (several unrelated
//!   ones are an ambiguous target: nothing is sent).
//! - The process found is kept as a `ProcessHandle` (a pidfd and open procfs files): while it
//!   lives it is the app, with no `/proc` walk at the next reload; once it exits (the app
//!   restarted) it is looked up again. A recycled pid is never hit.
//! - Never kill the app by accident: a signal whose default action ends the process is sent only
//!   when procfs shows a handler for it, read at each send (`sigcatch` in `/proc/<pid>/stat` for
//!   signals 1–31, `SigCgt` in `status` above). TERM, INT, QUIT and KILL, named to restart a
//!   container, are the exception.
//! - A process that started after the current content appeared already holds it: nothing is sent.
//! - An app that took the keys as environment variables (`--consumed-as env`) is restarted
//!   instead, when its environment differs from the files ([`crate::action::restart`]).

use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use tokio::sync::watch;

use super::SignalConfig;
use crate::action::{ActionError, Outcome};
use crate::group::Version;
use crate::lane::{Heard, Lane, Ran};
use crate::lock;
use crate::process::handle::{Gone, ProcessHandle};
use crate::process::select::FindError;
use crate::process::tracker::{Found, PidFileChanges, TrackError, Tracker};
use crate::process::{Dispositions, ProcFs, ProcInfo};
use crate::report::status::TargetEntry;

/// A process must have started this much after the content's ctime to be trusted to hold it:
/// start times count in clock ticks (10 ms) and file times lag by up to a tick.
pub(crate) const START_MARGIN: Duration = Duration::from_millis(20);

/// The youngest a process may be to be sent a signal that ends it by default. `SigCgt` cannot
/// tell an app's own handler from its runtime's: Go's runtime handles every signal from the
/// first instruction, and a SIGHUP that reaches it before the app's `signal.Notify` ends the
/// app. A process this young is signalled once it is this old (a rotation within a second of
/// the app's start waits for the rest of that second).
pub(crate) const YOUNGEST_SIGNALLED: Duration = Duration::from_secs(1);

/// The signal action of one target.
pub(crate) struct SignalAction {
    /// What to send; `None`: nothing (`--signal none`, whose process's environment is only
    /// compared, by [`crate::action::restart`]).
    pub(in crate::action) signal: Option<Signal>,
    /// The app's process(es), followed across reloads; `None` while a lookup that reads the
    /// pid file has not returned.
    /// Boxed: a signal target's tracker would otherwise size every target's action.
    tracker: Option<Box<Tracker>>,
    /// The selector, described for messages.
    pub(in crate::action) selector: String,
    /// Where a lookup that reads the pid file runs (its filesystem may stall).
    lane: Lane,
    /// The daemon's stop flag (a lookup on the lane is not awaited past it).
    stop: watch::Receiver<bool>,
    /// The target's entry on the status board, where a stalled lookup is shown.
    status: Option<TargetEntry>,
    /// The one process that holds the version last applied (pid, start ticks), for the state file.
    pub(in crate::action) delivered: Option<(i32, u64)>,
}

impl SignalAction {
    /// An action for `cfg`; `app_uid` is the declared app uid.
    pub(crate) fn new(cfg: SignalConfig, procfs: ProcFs, app_uid: Option<u32>) -> Self {
        SignalAction {
            signal: cfg.signal,
            selector: cfg.selector.describe(),
            tracker: Some(Box::new(Tracker::new(
                procfs,
                cfg.selector,
                cfg.all,
                app_uid,
            ))),
            lane: Lane {
                deadline: Duration::from_secs(30),
            },
            stop: watch::channel(false).1,
            status: None,
            delivered: None,
        }
    }

    /// The same action, looking at its pid file only when `changes` says it may have changed.
    pub(crate) fn with_pid_file_changes(mut self, changes: Box<dyn PidFileChanges>) -> Self {
        self.tracker = self
            .tracker
            .map(|t| Box::new(t.with_pid_file_changes(changes)));
        self
    }

    /// The same action, reading its pid file on `lane` until `stop`, and showing a lookup that
    /// does not return on `status`.
    pub(crate) fn on_lane(
        mut self,
        lane: Lane,
        stop: watch::Receiver<bool>,
        status: TargetEntry,
    ) -> Self {
        self.lane = lane;
        self.stop = stop;
        self.status = Some(status);
        self
    }

    /// Signals the target process(es) so they load `version`.
    pub(crate) async fn send(
        &mut self,
        version: &Version,
        force: bool,
    ) -> Result<Outcome, ActionError> {
        let Some(sig) = self.signal else {
            // The configuration allows it only where the environment is compared instead.
            return Err(ActionError::Failed(
                "--signal none sends nothing: it is for a group consumed as env (--consumed-as \
                 env), whose app's environment is compared and reported"
                    .into(),
            ));
        };
        // What the processes do with the signal, read now (the safety check of every send), and
        // when they started.
        let mut procs = self
            .targets_with(move |h| {
                let handling = h.dispositions(sig as i32)?;
                Ok((handling, h.info.start_time()))
            })
            .await?;
        self.delivered = None;
        let holds = |started: SystemTime| !force && started_after(started, version.content_time);
        // Check every process before signalling any, so a retry never signals one twice.
        let mut newer = None;
        let mut older = 0;
        for (h, (handling, started)) in &procs {
            if holds(*started) {
                newer.get_or_insert_with(|| h.info.clone());
                continue;
            }
            check_disposition(&h.info, handling, sig)?;
            old_enough(&h.info, *started, sig)?;
            older += 1;
        }
        if older == 0 {
            let Some(p) = newer else {
                return Err(self.not_found());
            };
            if procs.len() == 1 {
                self.delivered = Some((p.pid, p.start_ticks));
            }
            self.keep(procs);
            return Ok(Outcome::Skipped(format!(
                "{} started after the current content appeared: it already holds it",
                p.shown()
            )));
        }
        for (h, (_, started)) in &mut procs {
            if !holds(*started) {
                h.signal(sig).map_err(|e| send_error(h, e))?;
            }
        }
        // The app may wait for this very CPU to handle the signal: let it run before the
        // bookkeeping that follows.
        std::thread::yield_now();
        let signalled = || procs.iter().filter(|(_, (_, started))| !holds(*started));
        let shown: Vec<String> = signalled().map(|(h, _)| h.info.shown()).collect();
        self.delivered = signalled()
            .next()
            .filter(|_| older == 1 && newer.is_none())
            .map(|(h, _)| (h.info.pid, h.info.start_ticks));
        let done = Outcome::Done(format!("{} sent to {}", sig.as_str(), shown.join(", ")));
        self.keep(procs);
        Ok(done)
    }

    pub(in crate::action) fn keep<T>(&mut self, procs: Vec<(ProcessHandle, T)>) {
        if let Some(t) = self.tracker.as_mut() {
            t.keep(procs.into_iter().map(|(h, _)| h).collect());
        }
    }

    /// The one process that holds the version last applied, when there is exactly one.
    pub(crate) fn delivered(&self) -> Option<(i32, u64)> {
        self.delivered
    }

    /// The one target process now, if there is exactly one.
    pub(crate) async fn current(&mut self) -> Option<(i32, u64)> {
        match self.targets().await {
            Ok(p) if p.len() == 1 => {
                let id = (p[0].0.info.pid, p[0].0.info.start_ticks);
                self.keep(p);
                Some(id)
            }
            _ => None,
        }
    }

    /// The live children of the target process(es), counted against `reference`: each one
    /// that started before it holds an older version.
    pub(crate) async fn workers(
        &mut self,
        reference: crate::process::workers::Reference,
    ) -> Result<crate::process::workers::Count, String> {
        let procs = self.targets().await.map_err(ActionError::into_message)?;
        let pids: Vec<i32> = procs.iter().map(|(h, _)| h.info.pid).collect();
        let procfs = self.tracker.as_ref().map(|t| t.procfs().clone());
        self.keep(procs);
        let procfs = procfs.ok_or("a lookup of the pid file has not returned")?;
        let children = crate::process::workers::children(&procfs, &pids)
            .map_err(|e| format!("cannot list the processes: {e}"))?;
        Ok(crate::process::workers::Count::of(&children, reference))
    }

    fn not_found(&self) -> ActionError {
        ActionError::Waiting(format!(
            "no process matches {} (yet): waiting for it (the pod needs shareProcessNamespace: true)",
            self.selector
        ))
    }

    /// The processes to signal, with their status now.
    pub(in crate::action) async fn targets(&mut self) -> Result<Vec<Found>, ActionError> {
        self.targets_with(ProcessHandle::status).await
    }

    /// The processes to signal, each with what `read` tells of it now. A lookup that reads the
    /// pid file (it changed, or the process it named is gone) runs on the lane: the file's
    /// filesystem may stall. Following a process already found reads no file.
    async fn targets_with<T: Send + 'static>(
        &mut self,
        mut read: impl FnMut(&mut ProcessHandle) -> Result<T, Gone> + Send + 'static,
    ) -> Result<Vec<(ProcessHandle, T)>, ActionError> {
        let needs_files = self.tracker.as_ref().is_some_and(|t| t.needs_files());
        let worker = if needs_files {
            match self.lane.turn().await {
                Err(why) => return Err(ActionError::Waiting(why)),
                Ok(w) => Some(w),
            }
        } else {
            None
        };
        let Some(mut tracker) = self.tracker.take() else {
            return Err(ActionError::Waiting(
                "a lookup of the pid file has not returned: waiting for it".into(),
            ));
        };
        let found = if let Some(worker) = worker {
            let lane = self.lane;
            let mut stop = self.stop.clone();
            let status = self.status.clone();
            // Boxed: the lane's wait exists only while a pid file is read (rarely, off the
            // memory fast path); inline, it would size every target's task for it.
            let ran = Box::pin(lane.run(
                worker,
                move || {
                    let found = tracker.processes_with(&mut read);
                    (tracker, found)
                },
                &mut stop,
                |heard| stall_heard(status.as_ref(), heard),
            ))
            .await;
            match ran {
                Ran::Done((t, found)) => {
                    self.tracker = Some(t);
                    found
                }
                Ran::Stopped => return Err(ActionError::Waiting("stopping".into())),
                Ran::Lost => return Err(ActionError::Waiting("the lookup was lost".into())),
            }
        } else {
            let found = tracker.processes_with(read);
            self.tracker = Some(tracker);
            found
        };
        found.map_err(|e| match e {
            TrackError::Gone(p) => gone(&p),
            TrackError::Exhausted(e) => ActionError::Waiting(format!(
                "cannot look at the app's process: {e} (the daemon is out of resources: see \
                 /status resources)"
            )),
            TrackError::Find(FindError::NotFound) => self.not_found(),
            TrackError::Find(e @ FindError::Ambiguous(_)) => ActionError::Ambiguous(e.to_string()),
            TrackError::Find(e) if e.is_transient() => ActionError::Waiting(e.to_string()),
            TrackError::Find(e) => ActionError::Failed(e.to_string()),
        })
    }
}

/// A lookup on the lane has not returned, or returned after it was reported.
fn stall_heard(status: Option<&TargetEntry>, heard: Heard<'_>) {
    match heard {
        Heard::Stalled(stall) => {
            tracing::warn!("{stall}");
            if let Some(s) = status {
                lock(s).stalled = Some(crate::report::status::Stalled::of(stall));
            }
        }
        Heard::Resumed { after } => {
            tracing::info!(after = ?after, "the stalled lookup of the pid file returned");
            if let Some(s) = status {
                lock(s).stalled = None;
            }
        }
    }
}

pub(in crate::action) fn send_error(h: &mut ProcessHandle, e: Errno) -> ActionError {
    match e {
        Errno::ESRCH => gone(&h.info),
        Errno::EPERM => {
            let uid = h.status().map(|s| s.uid).ok();
            let me = nix::unistd::geteuid().as_raw();
            let shown_uid = uid.map_or_else(|| "?".into(), |u| u.to_string());
            if uid.is_some_and(|u| me == 0 || me == u) {
                // The kernel lets this uid signal that one: something else refused.
                let filter = if crate::process::handle::seccomp_filtered() {
                    "the container's seccomp profile denies the call (Seccomp: 2 in \
                     /proc/self/status): allow kill, pidfd_open and pidfd_send_signal in it"
                } else {
                    "a security module (AppArmor, SELinux) or a seccomp profile denies it"
                };
                return ActionError::Failed(format!(
                    "not permitted to signal {} (uid {shown_uid}) although the sidecar runs as uid \
                     {me}: {filter}",
                    h.info.shown(),
                ));
            }
            ActionError::Failed(format!(
                "not permitted to signal {} (uid {shown_uid}): the sidecar runs as uid {me}; run it \
                 as the app's runAsUser ({shown_uid}) or add the KILL capability (CAP_KILL)",
                h.info.shown(),
            ))
        }
        e => ActionError::Failed(format!("cannot signal {}: {e}", h.info.shown())),
    }
}

/// Whether `sig` may be sent to the process `p`, which handles signals as `handling` says.
fn check_disposition(
    p: &ProcInfo,
    handling: &Dispositions,
    sig: Signal,
) -> Result<(), ActionError> {
    if is_restart_signal(sig) {
        return Ok(());
    }
    let n = sig as i32;
    if handling.ignores(n) {
        return Err(ActionError::Failed(format!(
            "{} ignores {}: it will never reload on this signal; check --signal and the app's configuration",
            p.shown(),
            sig.as_str()
        )));
    }
    if !handling.catches(n) {
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

/// Whether a process that started at `started` started after the content appeared.
fn started_after(started: SystemTime, content_time: Option<SystemTime>) -> bool {
    content_time.is_some_and(|ct| started > ct + START_MARGIN)
}

/// A process younger than [`YOUNGEST_SIGNALLED`] (it started at `started`) is not sent a signal
/// that would end it by default: its handler may not be its own yet.
fn old_enough(p: &ProcInfo, started: SystemTime, sig: Signal) -> Result<(), ActionError> {
    if default_is_ignore(sig) {
        return Ok(());
    }
    let age = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    if age >= YOUNGEST_SIGNALLED {
        return Ok(());
    }
    Err(ActionError::Waiting(format!(
        "{} started {:.1} s ago: {} is sent once it is {} s old (a runtime may handle every \
         signal before the app installs its own handler, as Go's does, and the signal would end \
         the app)",
        p.shown(),
        age.as_secs_f64(),
        sig.as_str(),
        YOUNGEST_SIGNALLED.as_secs()
    )))
}

pub(in crate::action) fn gone(p: &ProcInfo) -> ActionError {
    ActionError::Waiting(format!(
        "{} exited before it could be signalled: looking it up again",
        p.shown()
    ))
}

/// Signals named to end the process so that Kubernetes restarts the container.
pub(crate) fn is_restart_signal(sig: Signal) -> bool {
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
