//! The inotify watch set shared by every group, and the reader of its events.
//!
//! One inotify instance, read on the runtime thread through tokio's reactor: the kernel's event
//! wakes the runtime, the event is routed to the groups it concerns, their tasks scan. Only the
//! events that can change content are subscribed to (not opens and reads: the daemon's own reads
//! of the watched files wake nothing).
//!
//! Each watched directory records, per group, what it is watched for ([`Interest`]): a watched
//! directory wants every event; the parent of a watched path wants only events on that path's
//! name (so a log file written next to a watched directory delays nothing). A watch the kernel
//! drops (the directory was removed or unmounted) wakes the groups that wanted it; they add it
//! again when they scan.
//!
//! Without inotify (instances exhausted, or `--poll-interval`), groups poll. Each resync tries
//! to set inotify up again ([`WatchHub::try_restore`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::Changed;
use super::debounce::Signal;
use super::mounts::Mount;
use super::{Wake, WatchError};
use crate::lock;
use crate::report::metrics::{Metrics, WatchErrorKind};
use crate::scan::{Interest, KUBELET_DATA};
use crate::text;

/// Index of a group in the hub (given by [`WatchHub::register`]).
pub type GroupId = usize;

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

/// The inotify instance, as tokio's reactor takes it.
pub struct Instance(Inotify);

impl std::os::fd::AsRawFd for Instance {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// What an event means for the debouncer.
pub fn classify(
    mask: AddWatchFlags,
    name: Option<&OsStr>,
    path: impl FnOnce() -> PathBuf,
) -> Signal {
    if name.is_some_and(|n| n == KUBELET_DATA)
        && mask.intersects(AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE)
    {
        Signal::Commit
    } else if mask.contains(AddWatchFlags::IN_MODIFY) {
        Signal::Write(path())
    } else if mask.contains(AddWatchFlags::IN_CLOSE_WRITE) {
        Signal::Closed(path())
    } else {
        Signal::Other
    }
}

/// A watched directory.
struct Watched {
    wd: WatchDescriptor,
    /// The events subscribed to.
    mask: AddWatchFlags,
    /// Identity when the watch was added: another inode at the same path needs a new watch.
    id: (u64, u64),
    /// What each group wants of it.
    wanted: HashMap<GroupId, Interest>,
}

struct State {
    /// `None` while polling.
    inotify: Option<Arc<AsyncFd<Instance>>>,
    /// Why there is no inotify.
    unavailable: Option<String>,
    dirs: HashMap<PathBuf, Watched>,
    /// Paths by watch descriptor (one inode may be reached by several paths).
    by_wd: HashMap<WatchDescriptor, BTreeSet<PathBuf>>,
    /// Watches the kernel dropped since the last reconcile.
    gone: HashSet<PathBuf>,
    /// Directories whose watch is being added (outside the lock), with what is wanted of them.
    pending: HashMap<PathBuf, HashMap<GroupId, Interest>>,
    /// The directories each group asked for last.
    by_group: HashMap<GroupId, HashSet<PathBuf>>,
}

/// Who the events of a [`GroupId`] go to.
enum Listener {
    /// A watch group's task.
    Group(Arc<Wake>),
    /// A single file's flag (see [`super::file`]).
    File(Arc<Changed>),
}

impl Listener {
    fn event(&self, now: Instant, signal: Signal) {
        match self {
            Listener::Group(wake) => wake.event(now, signal),
            Listener::File(changed) => changed.raise(),
        }
    }
}

/// The inotify watcher and the directories it watches, shared by all groups.
pub struct WatchHub {
    state: Mutex<State>,
    /// Every group's wakeup (and every watched file's flag), by [`GroupId`].
    groups: Mutex<Vec<Listener>>,
    metrics: Arc<Metrics>,
    /// Polling was asked for: never try inotify.
    forced_poll: bool,
    /// Tells the reader that inotify is (again) available.
    restored: Notify,
    /// The mount table last read, and how many times it changed: where a group's files live
    /// ([`crate::lane::classify`]) is found again after a change.
    mounts: Mutex<(Arc<Vec<Mount>>, u64)>,
}

impl WatchHub {
    /// Sets up inotify; with `force_poll`, or when inotify cannot be set up, groups poll. Call
    /// inside the runtime. `mounts`: the mount table now.
    pub fn new(metrics: Arc<Metrics>, force_poll: bool, mounts: Vec<Mount>) -> Arc<WatchHub> {
        let (inotify, unavailable) = if force_poll {
            (
                None,
                Some("polling requested (--poll-interval)".to_string()),
            )
        } else {
            match init() {
                Ok(fd) => (Some(fd), None),
                Err(why) => {
                    metrics.watch_error(WatchErrorKind::InotifyInit);
                    tracing::warn!("{why}: polling instead");
                    (None, Some(why))
                }
            }
        };
        Arc::new(WatchHub {
            state: Mutex::new(State {
                inotify,
                unavailable,
                dirs: HashMap::new(),
                by_wd: HashMap::new(),
                gone: HashSet::new(),
                pending: HashMap::new(),
                by_group: HashMap::new(),
            }),
            groups: Mutex::new(Vec::new()),
            metrics,
            forced_poll: force_poll,
            restored: Notify::new(),
            mounts: Mutex::new((Arc::new(mounts), 0)),
        })
    }

    /// The mount table, and its generation (it grows at each change).
    pub fn mounts(&self) -> (Arc<Vec<Mount>>, u64) {
        let m = lock(&self.mounts);
        (m.0.clone(), m.1)
    }

    /// A new mount table.
    pub fn set_mounts(&self, table: Vec<Mount>) {
        let mut m = lock(&self.mounts);
        m.0 = Arc::new(table);
        m.1 += 1;
    }

    /// Registers a group's wakeup; events for the directories it wants wake it.
    pub fn register(&self, wake: Arc<Wake>) -> GroupId {
        self.listen(Listener::Group(wake))
    }

    /// Registers a file's flag: events its directory is watched for raise it.
    pub fn register_file(&self, changed: Arc<Changed>) -> GroupId {
        self.listen(Listener::File(changed))
    }

    fn listen(&self, listener: Listener) -> GroupId {
        let mut groups = lock(&self.groups);
        groups.push(listener);
        groups.len() - 1
    }

    /// Wakes every group and raises every file's flag (mount table changed, read errors).
    pub fn poke_all(&self, now: Instant) {
        for w in lock(&self.groups).iter() {
            w.event(now, Signal::Other);
        }
    }

    /// Whether `dir` is watched for `group` now.
    pub fn watching(&self, group: GroupId, dir: &Path) -> bool {
        let st = lock(&self.state);
        st.inotify.is_some()
            && st
                .dirs
                .get(dir)
                .is_some_and(|w| w.wanted.contains_key(&group))
    }

    /// Whether inotify is in use.
    pub fn available(&self) -> bool {
        lock(&self.state).inotify.is_some()
    }

    /// After a fallback to polling: tries to set inotify up again; `true` when it now is.
    pub fn try_restore(&self) -> bool {
        if self.forced_poll {
            return false;
        }
        let mut st = lock(&self.state);
        if st.inotify.is_some() {
            return true;
        }
        match init() {
            Ok(fd) => {
                st.inotify = Some(fd);
                st.unavailable = None;
                st.dirs.clear();
                st.by_wd.clear();
                st.by_group.clear();
                drop(st);
                self.metrics.inotify_restored();
                tracing::info!("inotify is available again: watching instead of polling");
                self.restored.notify_one();
                true
            }
            Err(_) => false,
        }
    }

    /// Makes `group`'s watched directories exactly `desired`; `Ok(true)` when a new inotify watch
    /// was added (a change between the scan and the watch may have been missed).
    ///
    /// The calls that walk a path (`stat`, `inotify_add_watch`) are made without the hub's lock:
    /// on a stalled filesystem they may never return, and the event reader takes that lock.
    /// Another group may change the same directory's watch meanwhile; the mask a watch was
    /// given is compared with what its groups want once it is recorded, and set again if needed.
    pub fn reconcile(
        &self,
        group: GroupId,
        desired: &BTreeMap<PathBuf, Interest>,
    ) -> Result<bool, WatchError> {
        let fd = {
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
            fd
        };
        let inotify = &fd.get_ref().0;
        let mut added = false;
        for (path, interest) in desired {
            crate::lane::at(path);
            let Ok(md) = std::fs::metadata(path) else {
                continue;
            };
            let id = (md.dev(), md.ino());
            // Recorded first, so that the mask another group computes meanwhile includes it.
            let mask = {
                let mut st = lock(&self.state);
                match st.dirs.get_mut(path) {
                    Some(w) if w.id == id => {
                        w.wanted.insert(group, interest.clone());
                        let mask = mask_for(&w.wanted);
                        if mask == w.mask {
                            continue;
                        }
                        mask
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
                        st.pending.insert(path.clone(), wanted);
                        mask
                    }
                    None => {
                        let wanted = st.pending.entry(path.clone()).or_default();
                        wanted.insert(group, interest.clone());
                        mask_for(wanted)
                    }
                }
            };
            let mut mask = mask;
            // Bounded: each round records what the others wanted meanwhile.
            for _ in 0..4 {
                let result = inotify.add_watch(path.as_path(), mask);
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
                        st.by_wd.entry(wd).or_default().insert(path.clone());
                        st.dirs.insert(
                            path.clone(),
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
        }
        Ok(added)
    }

    /// Reads events until `stop`; runs on the runtime thread.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let fd = lock(&self.state).inotify.clone();
            let Some(fd) = fd else {
                tokio::select! {
                    _ = self.restored.notified() => continue,
                    _ = crate::stop::stopped(&mut stop) => return,
                }
            };
            tokio::select! {
                ready = fd.readable() => {
                    let Ok(mut guard) = ready else { return };
                    match fd.get_ref().0.read_events() {
                        Ok(events) => {
                            self.route(events.as_slice());
                            // The woken groups scan now; the next read (most often EAGAIN) waits.
                            tokio::task::yield_now().await;
                        }
                        Err(Errno::EAGAIN) => guard.clear_ready(),
                        Err(Errno::EINTR) => {}
                        Err(e) => {
                            self.metrics.watch_error(WatchErrorKind::Event);
                            tracing::warn!(error = %e, "cannot read inotify events: rescanning every watch group");
                            self.poke_all(Instant::now());
                            guard.clear_ready();
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
                _ = crate::stop::stopped(&mut stop) => return,
            }
        }
    }

    /// Routes a batch of events to the groups they concern.
    fn route(&self, events: &[InotifyEvent]) {
        let now = Instant::now();
        self.metrics.watch_events(events.len());
        // Held while routing: nothing takes the group list after the state.
        let groups = lock(&self.groups);
        let mut st = lock(&self.state);
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                drop(st);
                tracing::warn!("inotify queue overflowed: rescanning every watch group");
                self.metrics.watch_error(WatchErrorKind::Overflow);
                for w in groups.iter() {
                    w.event(now, Signal::Other);
                }
                st = lock(&self.state);
                continue;
            }
            let Some(paths) = st.by_wd.get(&ev.wd) else {
                continue;
            };
            tracing::trace!(mask = ?ev.mask, name = ?ev.name, "filesystem event");
            let dropped = ev.mask.contains(AddWatchFlags::IN_IGNORED);
            for dir in paths {
                let Some(w) = st.dirs.get(dir) else { continue };
                for (g, interest) in &w.wanted {
                    let name = ev.name.as_deref();
                    if !dropped && !interest.wants(name) {
                        continue;
                    }
                    let signal = if dropped {
                        Signal::Other
                    } else {
                        classify(ev.mask, name, || match name {
                            Some(n) => dir.join(n),
                            None => dir.clone(),
                        })
                    };
                    if let Some(wake) = groups.get(*g) {
                        wake.event(now, signal);
                    }
                }
            }
            if dropped {
                // The kernel removed the watch (directory deleted or unmounted).
                for dir in st.by_wd.remove(&ev.wd).unwrap_or_default() {
                    st.dirs.remove(&dir);
                    st.gone.insert(dir);
                }
            }
        }
    }
}

fn init() -> Result<Arc<AsyncFd<Instance>>, String> {
    let explain = |e: &dyn std::fmt::Display| {
        format!(
            "inotify cannot be set up ({e}); raise fs.inotify.max_user_instances or use --poll-interval"
        )
    };
    let inotify =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| explain(&e))?;
    // SAFETY: `Instance` owns the descriptor, which stays open and the same until the AsyncFd
    // (its only owner) is dropped.
    unsafe { AsyncFd::register_with_interest(Instance(inotify), tokio::io::Interest::READABLE) }
        .map(Arc::new)
        .map_err(|e| explain(&e.to_string()))
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
