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
//! to set inotify up again (`WatchHub::try_restore`).
//!
//! This file holds the hub and the event reader (which routes events through the set);
//! `watch_set` keeps the set in line with each group's scan (`WatchHub::reconcile`) and says
//! which events each [`Interest`] subscribes to.

mod watch_set;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::Changed;
use super::Wake;
use super::debounce::Signal;
use super::mounts::Mount;
use crate::lock;
use crate::report::metrics::{Metrics, WatchErrorKind};
use crate::scan::{Interest, KUBELET_DATA};

/// Index of a group in the hub (given by [`WatchHub::register`]).
pub(crate) type GroupId = usize;

/// The inotify instance, as tokio's reactor takes it.
pub(crate) struct Instance(Inotify);

impl std::os::fd::AsRawFd for Instance {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// What an event means for the debouncer.
pub(crate) fn classify(
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
    /// A single file's flag (see [`super::pid_file`]).
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
pub(crate) struct WatchHub {
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
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        force_poll: bool,
        mounts: Vec<Mount>,
    ) -> Arc<WatchHub> {
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
    pub(crate) fn mounts(&self) -> (Arc<Vec<Mount>>, u64) {
        let m = lock(&self.mounts);
        (m.0.clone(), m.1)
    }

    /// A new mount table.
    pub(crate) fn set_mounts(&self, table: Vec<Mount>) {
        let mut m = lock(&self.mounts);
        m.0 = Arc::new(table);
        m.1 += 1;
    }

    /// Registers a group's wakeup; events for the directories it wants wake it.
    pub(crate) fn register(&self, wake: Arc<Wake>) -> GroupId {
        self.listen(Listener::Group(wake))
    }

    /// Registers a file's flag: events its directory is watched for raise it.
    pub(crate) fn register_file(&self, changed: Arc<Changed>) -> GroupId {
        self.listen(Listener::File(changed))
    }

    fn listen(&self, listener: Listener) -> GroupId {
        let mut groups = lock(&self.groups);
        groups.push(listener);
        groups.len() - 1
    }

    /// Wakes every group and raises every file's flag (mount table changed, read errors).
    pub(crate) fn poke_all(&self, now: Instant) {
        for w in lock(&self.groups).iter() {
            w.event(now, Signal::Other);
        }
    }

    /// Whether `dir` is watched for `group` now.
    pub(crate) fn watching(&self, group: GroupId, dir: &Path) -> bool {
        let st = lock(&self.state);
        st.inotify.is_some()
            && st
                .dirs
                .get(dir)
                .is_some_and(|w| w.wanted.contains_key(&group))
    }

    /// Whether inotify is in use.
    pub(crate) fn available(&self) -> bool {
        lock(&self.state).inotify.is_some()
    }

    /// After a fallback to polling: tries to set inotify up again; `true` when it now is.
    pub(crate) fn try_restore(&self) -> bool {
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

    /// Reads events until `stop`; runs on the runtime thread.
    pub(crate) async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
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
