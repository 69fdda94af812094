//! Following the app's process from one reload to the next without walking `/proc` each time.
//!
//! The process found last time is kept as a [`ProcessHandle`]: while it lives it is the app,
//! and one `pread` tells so (and what it does with signals). With a pid file, the file is read
//! again only when it changed: a `stat` says so, or, when its directory is watched
//! ([`PidFileChanges`]), the absence of any event on its name says it without a system call.
//! An app that restarted and wrote it again is followed. Otherwise, and with `--signal-all`,
//! the processes are found again ([`select::find`]).

use std::path::Path;

use super::handle::{Gone, OpenError, ProcessHandle};
use super::select::{self, FindError, Selector};
use super::{ProcFs, ProcInfo, ProcStatus};

/// What tells that a file changed: device, inode, size, modification time.
type FileStamp = (u64, u64, u64, i64, i64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A process found, with its status when it was looked at.
pub(crate) type Found = (ProcessHandle, ProcStatus);

/// Tells when a pid file may have changed, so that a reload need not `stat` it: an inotify
/// watch of its directory (`crate::watch::pid_file`).
pub(crate) trait PidFileChanges: Send + Sync {
    /// Watches the file from now on, before it is read; `false` when it cannot be (polling, no
    /// such directory, a directory reached through a symbolic link): it is then looked at each
    /// time.
    fn arm(&mut self) -> bool;
    /// Whether anything may have happened to the file since the last call or [`Self::arm`].
    fn changed(&mut self) -> bool;
    /// As [`Self::changed`], without taking the notice.
    fn pending(&self) -> bool;
}

/// Why processes could not be had: none found, or one found went away before it was opened.
#[derive(Debug)]
pub(crate) enum TrackError {
    /// The selector found nothing usable.
    Find(FindError),
    /// The process exited while it was looked at.
    Gone(ProcInfo),
    /// The daemon ran out of descriptors or memory while it looked (recorded).
    Exhausted(std::io::Error),
}

/// The app's process(es), followed across reloads.
pub(crate) struct Tracker {
    procfs: ProcFs,
    selector: Selector,
    /// Every match, not the one top-level match (nothing is cached then).
    all: bool,
    /// Only processes of this uid are candidates.
    app_uid: Option<u32>,
    /// The one process of last time, while it lives.
    cached: Option<ProcessHandle>,
    /// The pid file as it was when it named the cached process.
    pid_file_seen: Option<FileStamp>,
    /// Tells when the pid file may have changed.
    pid_file_changes: Option<Box<dyn PidFileChanges>>,
    /// Whether [`PidFileChanges`] watched the pid file when it was last looked at.
    pid_file_watched: bool,
    /// The pids that existed when the processes were last looked at (name and command-line
    /// selectors): a process started since that matches too makes the kept one ambiguous.
    known: Vec<i32>,
}

impl Tracker {
    /// A tracker for `selector` in `procfs`.
    pub(crate) fn new(
        procfs: ProcFs,
        selector: Selector,
        all: bool,
        app_uid: Option<u32>,
    ) -> Tracker {
        Tracker {
            procfs,
            selector,
            all,
            app_uid,
            cached: None,
            pid_file_seen: None,
            pid_file_changes: None,
            pid_file_watched: false,
            known: Vec::new(),
        }
    }

    /// Looks at the pid file only when `changes` says it may have changed.
    pub(crate) fn with_pid_file_changes(mut self, changes: Box<dyn PidFileChanges>) -> Tracker {
        self.pid_file_changes = Some(changes);
        self
    }

    /// The procfs it looks in.
    pub(crate) fn procfs(&self) -> &ProcFs {
        &self.procfs
    }

    /// Whether the next lookup reads a file (the pid file, its directory's watch): no process
    /// kept, or its pid file may have changed, or is not watched. Such a lookup may stall.
    pub(crate) fn needs_files(&self) -> bool {
        if !matches!(self.selector, Selector::PidFile(..)) {
            return false;
        }
        let watched_quiet =
            self.pid_file_watched && self.pid_file_changes.as_ref().is_some_and(|c| !c.pending());
        self.cached.is_none() || !watched_quiet
    }

    /// The processes now, each with its status: the cached one while it lives and is still
    /// named, else found again. Give the handles back with [`Tracker::keep`].
    pub(crate) fn processes(&mut self) -> Result<Vec<Found>, TrackError> {
        self.processes_with(ProcessHandle::status)
    }

    /// The processes now, each with what `read` tells of it (an error: it is gone).
    pub(crate) fn processes_with<T>(
        &mut self,
        mut read: impl FnMut(&mut ProcessHandle) -> Result<T, Gone>,
    ) -> Result<Vec<(ProcessHandle, T)>, TrackError> {
        if let Some(mut h) = self.cached.take()
            && self.still_named(&h)
            && let Ok(t) = read(&mut h)
        {
            return Ok(vec![(h, t)]);
        }
        self.watch_pid_file();
        if !matches!(self.selector, Selector::PidFile(..)) {
            self.known = self.procfs.pids().unwrap_or_default();
        }
        let found = select::find(&self.procfs, &self.selector, self.all, self.app_uid)
            .map_err(TrackError::Find)?;
        self.open_with(&found, read)
    }

    /// Whether a process started since the last look matches the selector too (or the
    /// processes cannot be listed): the kept one may not be the only match any more, and all
    /// are looked at again. An impostor named like the app, started while the app restarted,
    /// is kept only until the app is back; then both match and the target is ambiguous.
    fn newcomer_matches(&mut self) -> bool {
        let Ok(now) = self.procfs.pids() else {
            return true;
        };
        let known = std::mem::replace(&mut self.known, now);
        self.known
            .iter()
            .filter(|p| known.binary_search(p).is_err())
            .any(|&pid| {
                self.procfs
                    .stat(pid)
                    .is_ok_and(|info| info.is_live() && self.selector.matches(&self.procfs, &info))
            })
    }

    /// Handles on `found`, with their status.
    pub(crate) fn open(&mut self, found: &[ProcInfo]) -> Result<Vec<Found>, TrackError> {
        self.open_with(found, ProcessHandle::status)
    }

    fn open_with<T>(
        &mut self,
        found: &[ProcInfo],
        mut read: impl FnMut(&mut ProcessHandle) -> Result<T, Gone>,
    ) -> Result<Vec<(ProcessHandle, T)>, TrackError> {
        let mut out = Vec::with_capacity(found.len());
        for p in found {
            let mut h = ProcessHandle::open(&self.procfs, p).map_err(|e| match e {
                OpenError::Gone => TrackError::Gone(p.clone()),
                OpenError::Exhausted(e) => TrackError::Exhausted(e),
            })?;
            let t = read(&mut h).map_err(|_| TrackError::Gone(p.clone()))?;
            out.push((h, t));
        }
        if let Selector::PidFile(path, _) = &self.selector {
            self.pid_file_seen = file_stamp(path);
        }
        Ok(out)
    }

    /// Gives handles back: the one top-level process is kept for next time.
    pub(crate) fn keep(&mut self, mut handles: Vec<ProcessHandle>) {
        if !self.all && handles.len() == 1 {
            self.cached = handles.pop();
        }
    }

    /// Whether the selector still names the cached process: a pid file may name another one now.
    /// The file is read again only when it changed.
    fn still_named(&mut self, h: &ProcessHandle) -> bool {
        if !matches!(self.selector, Selector::PidFile(..)) {
            return !self.newcomer_matches();
        }
        // Watched since it was last looked at, and nothing happened to it.
        if self.pid_file_watched && self.pid_file_changes.as_mut().is_some_and(|c| !c.changed()) {
            return true;
        }
        self.watch_pid_file();
        let Selector::PidFile(path, _) = &self.selector else {
            return true;
        };
        let stamp = file_stamp(path);
        if stamp.is_some() && stamp == self.pid_file_seen {
            return true;
        }
        self.pid_file_seen = stamp;
        select::read_pid(path).is_ok_and(|f| f.pid == h.info.pid)
    }

    /// Watches the pid file (when it can be) before it is looked at.
    fn watch_pid_file(&mut self) {
        self.pid_file_watched = self.pid_file_changes.as_mut().is_some_and(|c| c.arm());
    }
}
