//! Signal action: find the target process in the shared PID namespace and signal it, safely.
//!
//! - The process is looked up at every reload (it restarts; its pid changes). The previous pick is
//!   reused only while it is provably the same process (pid and start time) and still matches.
//! - Among several matches, the oldest whose parent does not match (nginx, PostgreSQL, HAProxy
//!   masters), unless `--signal-all`.
//! - The signal goes through a pidfd opened and then checked against the start time, so a pid
//!   recycled by another process is never hit.
//! - Never kill the app by accident: a signal whose default action ends the process is sent only
//!   when `/proc/<pid>/status` shows a handler for it (SigCgt). TERM, INT, QUIT and KILL, named to
//!   restart a container, are the exception.
//! - A process that started after the current content appeared already holds it: nothing is sent.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::{ActionError, Outcome};
use crate::config::{Selector, SignalAction};
use crate::process::{FindError, ProcFs, ProcInfo};
use crate::scanner::Version;

/// A process must have started this much after the content's ctime to be trusted to hold it:
/// start times count in clock ticks (10 ms) and file times lag by up to a tick.
pub const START_MARGIN: Duration = Duration::from_millis(20);

/// The signal action of one target.
pub struct SignalActor {
    /// What to send and to whom.
    cfg: SignalAction,
    /// Where processes are looked up.
    procfs: ProcFs,
    /// This process: never a target, even if its command line matches the pattern.
    own_pid: i32,
    /// The process picked last time, reused while it is the same process.
    last: Option<ProcInfo>,
    /// The one process that holds the version last applied (pid, start ticks), for the state file.
    delivered: Option<(i32, u64)>,
}

impl SignalActor {
    /// An actor for `cfg`.
    pub fn new(cfg: SignalAction, procfs: ProcFs) -> Self {
        SignalActor {
            cfg,
            procfs,
            own_pid: std::process::id() as i32,
            last: None,
            delivered: None,
        }
    }

    /// Signals the target process(es) so they load `version`.
    pub fn send(&mut self, version: &Version, force: bool) -> Result<Outcome, ActionError> {
        let sig = self.cfg.signal;
        let procs = self.find()?;
        let (newer, older): (Vec<ProcInfo>, Vec<ProcInfo>) = procs
            .into_iter()
            .partition(|p| !force && self.started_after(p, version.content_time));
        self.delivered = None;
        if older.is_empty() {
            let p = &newer[0];
            if newer.len() == 1 {
                self.delivered = Some((p.pid, p.start_ticks));
            }
            return Ok(Outcome::Skipped(format!(
                "pid {} ({}) started after the current content appeared: it already holds it",
                p.pid, p.comm
            )));
        }
        // Check every process before signalling any, so a retry never signals one twice.
        let mut ready = Vec::with_capacity(older.len());
        for p in &older {
            let fd = self.open(p)?;
            self.check_disposition(p)?;
            ready.push(fd);
        }
        for (p, fd) in older.iter().zip(&ready) {
            send(p.pid, fd.as_ref(), sig).map_err(|e| self.send_error(p, e))?;
        }
        self.last = (older.len() == 1 && !self.cfg.all).then(|| older[0].clone());
        if older.len() == 1 && newer.is_empty() {
            self.delivered = Some((older[0].pid, older[0].start_ticks));
        }
        let pids: Vec<String> = older
            .iter()
            .map(|p| format!("{} ({})", p.pid, p.comm))
            .collect();
        Ok(Outcome::Done(format!(
            "{} sent to pid {}",
            sig.as_str(),
            pids.join(", ")
        )))
    }

    /// The one process that holds the version last applied, when there is exactly one.
    pub fn delivered(&self) -> Option<(i32, u64)> {
        self.delivered
    }

    /// The one target process now, if there is exactly one.
    pub fn current(&mut self) -> Option<(i32, u64)> {
        match self.find() {
            Ok(p) if p.len() == 1 => Some((p[0].pid, p[0].start_ticks)),
            _ => None,
        }
    }

    fn find(&mut self) -> Result<Vec<ProcInfo>, ActionError> {
        if let (Some(last), false) = (&self.last, self.cfg.all) {
            let same = self
                .procfs
                .stat(last.pid)
                .is_ok_and(|now| now.start_ticks == last.start_ticks && now.state != 'Z');
            if same
                && !matches!(self.cfg.selector, Selector::PidFile(_))
                && self.procfs.matches(last, &self.cfg.selector)
            {
                return Ok(vec![last.clone()]);
            }
            self.last = None;
        }
        self.procfs.find(&self.cfg.selector, self.cfg.all, self.own_pid).map_err(|e| match e {
            FindError::NotFound => ActionError::Waiting(format!(
                "no process matches {} (yet): waiting for it (the pod needs shareProcessNamespace: true)",
                describe(&self.cfg.selector)
            )),
            FindError::PidFile(..) | FindError::PidFileStale(..) => ActionError::Waiting(e.to_string()),
            FindError::Proc(..) => ActionError::Failed(e.to_string()),
        })
    }

    fn started_after(&self, p: &ProcInfo, content_time: Option<SystemTime>) -> bool {
        content_time.is_some_and(|ct| self.procfs.start_time(p) > ct + START_MARGIN)
    }

    /// Opens a pidfd and checks it names the process that was found (not a recycled pid).
    fn open(&self, p: &ProcInfo) -> Result<Option<OwnedFd>, ActionError> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
        let fd = if raw >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            Some(unsafe { OwnedFd::from_raw_fd(raw as i32) })
        } else if Errno::last() == Errno::ESRCH {
            return Err(gone(p));
        } else {
            None // No pidfd on this kernel: fall back to kill() after the identity check below.
        };
        match self.procfs.stat(p.pid) {
            Ok(now) if now.start_ticks == p.start_ticks && now.state != 'Z' => Ok(fd),
            _ => Err(gone(p)),
        }
    }

    fn check_disposition(&self, p: &ProcInfo) -> Result<(), ActionError> {
        let sig = self.cfg.signal;
        if is_restart_signal(sig) {
            return Ok(());
        }
        let st = self.procfs.status(p.pid).map_err(|_| gone(p))?;
        let n = sig as i32;
        if st.ignores(n) {
            return Err(ActionError::Failed(format!(
                "pid {} ({}) ignores {}: it will never reload on this signal; check --signal and the app's configuration",
                p.pid,
                p.comm,
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
                "pid {} ({}) has no {} handler (yet): the signal {effect}; waiting until the app installs one",
                p.pid,
                p.comm,
                sig.as_str()
            )));
        }
        Ok(())
    }

    fn send_error(&self, p: &ProcInfo, e: Errno) -> ActionError {
        match e {
            Errno::ESRCH => gone(p),
            Errno::EPERM => {
                let uid = self
                    .procfs
                    .status(p.pid)
                    .map(|s| s.uid.to_string())
                    .unwrap_or_else(|_| "?".into());
                ActionError::Failed(format!(
                    "not permitted to signal pid {} ({}, uid {uid}): the sidecar runs as uid {}; run it as the \
                     app's runAsUser ({uid}) or add the KILL capability (CAP_KILL)",
                    p.pid,
                    p.comm,
                    nix::unistd::geteuid()
                ))
            }
            e => ActionError::Failed(format!("cannot signal pid {} ({}): {e}", p.pid, p.comm)),
        }
    }
}

fn send(pid: i32, pidfd: Option<&OwnedFd>, sig: Signal) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let rc = match pidfd {
        // SAFETY: pidfd_send_signal(fd, sig, NULL, 0) with a descriptor we own.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<()>(),
                0,
            )
        },
        None => return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig),
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

fn gone(p: &ProcInfo) -> ActionError {
    ActionError::Waiting(format!(
        "pid {} ({}) exited before it could be signalled: looking it up again",
        p.pid, p.comm
    ))
}

fn describe(s: &Selector) -> String {
    match s {
        Selector::Name(n) => format!("--process-name {n}"),
        Selector::Cmdline(r) => format!("--process-cmdline '{}'", r.as_str()),
        Selector::PidFile(p) => format!("--pid-file {}", p.display()),
    }
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
