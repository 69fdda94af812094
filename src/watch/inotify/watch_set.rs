//! The hub's watch set kept in line with what each group's scan asks for
//! ([`WatchHub::reconcile`]): the events each kind of [`Interest`] subscribes to, the directories
//! a group no longer wants let go of (a kernel watch is removed once no path shares it), the ones
//! it wants now added, or given a wider mask when another group wants more of them.
//!
//! Apart from the event reader (the parent module), which routes events through the set and
//! only notes the watches the kernel dropped (let go of here, at the next reconcile). A reconcile
//! runs after a scan, on the runtime thread or on the group's lane: the calls that walk a path
//! (`stat`, `inotify_add_watch`) are made without the hub's lock, which the reader takes to route
//! every event.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, Inotify};
use tokio::io::unix::AsyncFd;

use super::{GroupId, Instance, State, WatchHub, Watched};
use crate::lock;
use crate::report::metrics::WatchErrorKind;
use crate::scan::Interest;
use crate::text;
use crate::watch::WatchError;

/// Events of a directory whose every entry may matter: those that can change what a scan reads.
fn full_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | kubelet_mask()
}

/// Events of a kubelet volume: `..data` renamed over (the swap) or removed, and the directory
/// itself going away. Kubelet's steps before the swap wake nothing.
fn kubelet_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::from_bits_retain(libc::IN_EXCL_UNLINK)
}

/// Events of a directory holding one file written whole (a pid file): it appearing, renamed
/// over or removed, closed after a write, and the directory itself going away; not each write,
/// so that a file held open next to it (a log) wakes nothing.
fn file_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | kubelet_mask()
}

/// The mask a directory needs for what its groups (and files) want of it.
fn mask_for(wanted: &HashMap<GroupId, Interest>) -> AddWatchFlags {
    wanted
        .values()
        .map(|i| match i {
            Interest::All | Interest::Names(_) => full_mask(),
            Interest::KubeletData => kubelet_mask(),
            Interest::File(_) => file_mask(),
        })
        .fold(AddWatchFlags::empty(), |a, b| a | b)
}

impl WatchHub {
    /// Makes `group`'s watched directories exactly `desired`; `Ok(true)` when a new inotify watch
    /// was added (a change between the scan and the watch may have been missed).
    ///
    /// The calls that walk a path (`stat`, `inotify_add_watch`) are made without the hub's lock:
    /// on a stalled filesystem they may never return, and the event reader takes that lock.
    /// Another group may change the same directory's watch meanwhile; the mask a watch was
    /// given is compared with what its groups want once it is recorded, and set again if needed.
    pub(crate) fn reconcile(
        &self,
        group: GroupId,
        desired: &BTreeMap<PathBuf, Interest>,
    ) -> Result<bool, WatchError> {
        let fd = self.let_go(group, desired)?;
        let inotify = &fd.get_ref().0;
        let mut added = false;
        for (path, interest) in desired {
            crate::lane::at(path);
            let Ok(md) = std::fs::metadata(path) else {
                continue;
            };
            let id = (md.dev(), md.ino());
            let Some(mask) = self.want(inotify, group, path, interest, id) else {
                continue;
            };
            added |= self.add(inotify, group, path, interest, id, mask)?;
        }
        Ok(added)
    }

    /// Lets go of the directories `group` no longer wants (and of those whose watch the kernel
    /// dropped), and records the ones it wants now, all under the hub's lock; the inotify
    /// instance to add their watches with (an error while there is none: polling).
    fn let_go(
        &self,
        group: GroupId,
        desired: &BTreeMap<PathBuf, Interest>,
    ) -> Result<Arc<AsyncFd<Instance>>, WatchError> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(fd) = st.inotify.clone() else {
            return Err(WatchError::Unavailable(
                st.unavailable
                    .clone()
                    .unwrap_or_else(|| "inotify is not available".into()),
            ));
        };
        let inotify = &fd.get_ref().0;
        // Only this group's directories are looked at: a daemon of thousands of groups
        // reconciles each in time linear in its own watches.
        let mine = st.by_group.remove(&group).unwrap_or_default();
        let mut drop_paths: Vec<PathBuf> = std::mem::take(&mut st.gone).into_iter().collect();
        for path in mine.iter().filter(|p| !desired.contains_key(*p)) {
            if let Some(w) = st.dirs.get_mut(path) {
                w.wanted.remove(&group);
                if w.wanted.is_empty() {
                    drop_paths.push(path.clone());
                }
            }
        }
        for path in drop_paths {
            unwatch(st, inotify, &path);
        }
        st.by_group.insert(group, desired.keys().cloned().collect());
        Ok(fd)
    }

    /// Records what `group` wants of `path` (the directory `id` now) before its watch is added,
    /// so that the mask another group computes meanwhile includes it; the mask to add the watch
    /// with, `None` when the watch there already has the one its groups need.
    fn want(
        &self,
        inotify: &Inotify,
        group: GroupId,
        path: &Path,
        interest: &Interest,
        id: (u64, u64),
    ) -> Option<AddWatchFlags> {
        let mut st = lock(&self.state);
        match st.dirs.get_mut(path) {
            Some(w) if w.id == id => {
                w.wanted.insert(group, interest.clone());
                let mask = mask_for(&w.wanted);
                if mask == w.mask {
                    return None;
                }
                Some(mask)
            }
            Some(_) => {
                // Another inode at this path now: a new watch, for every group that
                // wanted the old one.
                let mut wanted = st
                    .dirs
                    .get(path)
                    .map(|w| w.wanted.clone())
                    .unwrap_or_default();
                wanted.insert(group, interest.clone());
                unwatch(&mut st, inotify, path);
                let mask = mask_for(&wanted);
                st.pending.insert(path.to_path_buf(), wanted);
                Some(mask)
            }
            None => {
                let wanted = st.pending.entry(path.to_path_buf()).or_default();
                wanted.insert(group, interest.clone());
                Some(mask_for(wanted))
            }
        }
    }

    /// Adds the watch of `path` (the directory `id`) with `mask` and records it with what its
    /// groups want of it, again when they wanted more meanwhile; `Ok(true)` when a watch was
    /// added. A directory gone meanwhile is left to the next scan; running out of watches is an
    /// error, other refusals are counted (the scan reports the path).
    fn add(
        &self,
        inotify: &Inotify,
        group: GroupId,
        path: &Path,
        interest: &Interest,
        id: (u64, u64),
        mut mask: AddWatchFlags,
    ) -> Result<bool, WatchError> {
        let mut added = false;
        // Bounded: each round records what the others wanted meanwhile.
        for _ in 0..4 {
            let result = inotify.add_watch(path, mask);
            let mut st = lock(&self.state);
            match result {
                Ok(wd) => {
                    let wanted = match st.pending.remove(path) {
                        Some(p) => p,
                        None => st
                            .dirs
                            .remove(path)
                            .map(|w| w.wanted)
                            .unwrap_or_else(|| HashMap::from([(group, interest.clone())])),
                    };
                    let want = mask_for(&wanted);
                    st.by_wd.entry(wd).or_default().insert(path.to_path_buf());
                    st.dirs.insert(
                        path.to_path_buf(),
                        Watched {
                            wd,
                            mask,
                            id,
                            wanted,
                        },
                    );
                    added = true;
                    if want == mask {
                        break;
                    }
                    mask = want;
                }
                Err(e) => {
                    st.pending.remove(path);
                    drop(st);
                    match e {
                        Errno::ENOSPC => {
                            self.metrics.watch_error(WatchErrorKind::WatchLimit);
                            return Err(WatchError::Limit(text::path(path)));
                        }
                        Errno::ENOENT | Errno::ENOTDIR => {}
                        e => {
                            // Permission denied and the like: the scan reports the path;
                            // count it here.
                            self.metrics.watch_error(WatchErrorKind::Watch);
                            tracing::warn!(path = %text::path(path), error = %e, "cannot watch directory");
                        }
                    }
                    break;
                }
            }
        }
        Ok(added)
    }
}

/// Removes the watch of `path` (the kernel's watch only when no other path shares it).
fn unwatch(st: &mut State, inotify: &Inotify, path: &Path) {
    let Some(w) = st.dirs.remove(path) else {
        return;
    };
    if let Some(paths) = st.by_wd.get_mut(&w.wd) {
        paths.remove(path);
        if paths.is_empty() {
            st.by_wd.remove(&w.wd);
            let _ = inotify.rm_watch(w.wd);
        }
    }
}
