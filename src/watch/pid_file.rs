//! One file watched outside the watch groups: a pid file. Its directory is watched through the
//! shared [`WatchHub`] for events on the file's name (creation, a close after writing, a rename
//! over it, removal), the directory going away, or a queue overflow; any of them raises a flag. Its
//! reader (`crate::process::tracker`) looks at the file again only when the flag is up, so a
//! reload of an app whose pid file did not change costs no `stat` of it.
//!
//! The kernel queues events in order and the reader routes them before the events that follow,
//! so a pid file written before a rotation has raised its flag by the time that rotation's
//! reload asks. Trusted only while the watch is in place and the directory's path is its own
//! real path: a directory reached through a symbolic link (`/var/run` → `/run`) is watched where
//! the link points today, and a pid file that is itself a link changes where the link points; such
//! a pid file is `stat`ed at each reload as before, for good.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Changed;
use super::inotify::{GroupId, WatchHub};
use crate::process::tracker::PidFileChanges;
use crate::scan::Interest;

/// A pid file's directory, watched for the file's name.
pub(crate) struct PidFileWatch {
    hub: Arc<WatchHub>,
    id: GroupId,
    /// The file, and its directory.
    file: PathBuf,
    dir: PathBuf,
    /// The directory is reached through a symbolic link, or the file is one: never trusted (a
    /// `stat` at each reload, and nothing more).
    through_link: bool,
    /// What is asked of the hub: the directory, for the file's name.
    wanted: BTreeMap<PathBuf, Interest>,
    changed: Arc<Changed>,
}

impl PidFileWatch {
    /// A watch of `path` through `hub`; `None` for a path without a directory and a name.
    pub(crate) fn new(hub: &Arc<WatchHub>, path: &Path) -> Option<PidFileWatch> {
        let name = OsString::from(path.file_name()?);
        let dir = match path.parent()? {
            d if d.as_os_str().is_empty() => PathBuf::from("."),
            d => d.to_path_buf(),
        };
        let changed = Arc::new(Changed::up());
        Some(PidFileWatch {
            hub: hub.clone(),
            id: hub.register_file(changed.clone()),
            wanted: BTreeMap::from([(dir.clone(), Interest::File(name))]),
            file: path.to_path_buf(),
            dir,
            through_link: false,
            changed,
        })
    }
}

impl PidFileChanges for PidFileWatch {
    fn arm(&mut self) -> bool {
        // Cheap when it cannot be trusted: this runs at each reload then.
        if self.through_link || !self.hub.available() {
            return false;
        }
        let Ok(real) = std::fs::canonicalize(&self.dir) else {
            // No such directory (yet): looked at again next time.
            return false;
        };
        let link = std::fs::symlink_metadata(&self.file).is_ok_and(|m| m.file_type().is_symlink());
        if real != self.dir || link {
            self.through_link = true;
            let _ = self.hub.reconcile(self.id, &BTreeMap::new());
            return false;
        }
        let armed = self.hub.reconcile(self.id, &self.wanted).is_ok()
            && self.hub.watching(self.id, &self.dir);
        // What was raised until now is about the file as it is about to be read.
        self.changed.take();
        armed
    }

    fn changed(&mut self) -> bool {
        self.changed.take()
    }

    fn pending(&self) -> bool {
        self.changed.is_up()
    }
}

impl Drop for PidFileWatch {
    fn drop(&mut self) {
        let _ = self.hub.reconcile(self.id, &BTreeMap::new());
    }
}
