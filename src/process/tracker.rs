//! Following the app's process from one reload to the next without walking `/proc` each time.
//!
//! The process found last time is kept as a [`ProcessHandle`]: while it lives it is the app,
//! and one `pread` of its status tells so (and what it handles). With a pid file, the file is
//! read again only when it changed (a `stat`): an app that restarted and wrote it again is
//! followed. Otherwise, and with `--signal-all`, the processes are found again
//! ([`select::find`]).

use std::path::Path;

use super::handle::ProcessHandle;
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
pub type Found = (ProcessHandle, ProcStatus);

/// Why processes could not be had: none found, or one found went away before it was opened.
#[derive(Debug)]
pub enum TrackError {
    /// The selector found nothing usable.
    Find(FindError),
    /// The process exited while it was looked at.
    Gone(ProcInfo),
}

/// The app's process(es), followed across reloads.
pub struct Tracker {
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
}

impl Tracker {
    /// A tracker for `selector` in `procfs`.
    pub fn new(procfs: ProcFs, selector: Selector, all: bool, app_uid: Option<u32>) -> Tracker {
        Tracker {
            procfs,
            selector,
            all,
            app_uid,
            cached: None,
            pid_file_seen: None,
        }
    }

    /// The selector.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Where processes are looked up.
    pub fn procfs(&self) -> &ProcFs {
        &self.procfs
    }

    /// The processes now, each with its status: the cached one while it lives and is still
    /// named, else found again. Give the handles back with [`Tracker::keep`].
    pub fn processes(&mut self) -> Result<Vec<Found>, TrackError> {
        if let Some(mut h) = self.cached.take()
            && self.still_named(&h)
            && let Ok(st) = h.status()
        {
            return Ok(vec![(h, st)]);
        }
        let found = select::find(&self.procfs, &self.selector, self.all, self.app_uid)
            .map_err(TrackError::Find)?;
        self.open(&found)
    }

    /// Handles on `found`, with their status.
    pub fn open(&mut self, found: &[ProcInfo]) -> Result<Vec<Found>, TrackError> {
        let mut out = Vec::with_capacity(found.len());
        for p in found {
            let mut h =
                ProcessHandle::open(&self.procfs, p).map_err(|_| TrackError::Gone(p.clone()))?;
            let st = h.status().map_err(|_| TrackError::Gone(p.clone()))?;
            out.push((h, st));
        }
        if let Selector::PidFile(path) = &self.selector {
            self.pid_file_seen = file_stamp(path);
        }
        Ok(out)
    }

    /// Gives handles back: the one top-level process is kept for next time.
    pub fn keep(&mut self, mut handles: Vec<ProcessHandle>) {
        if !self.all && handles.len() == 1 {
            self.cached = handles.pop();
        }
    }

    /// Whether the selector still names the cached process: a pid file may name another one now.
    /// The file is read again only when it changed.
    fn still_named(&mut self, h: &ProcessHandle) -> bool {
        let Selector::PidFile(path) = &self.selector else {
            return true;
        };
        let stamp = file_stamp(path);
        if stamp.is_some() && stamp == self.pid_file_seen {
            return true;
        }
        self.pid_file_seen = stamp;
        select::pid_in_file(path).is_ok_and(|pid| pid == h.info.pid)
    }
}
