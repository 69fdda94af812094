//! From inotify (through notify) to per-group wakeups, and the set of watched directories.
//!
//! Events only mean "look again": the notify callback (on notify's thread) classifies each event
//! for the debouncer of every group it may concern and wakes that group's scanner. Nothing is
//! queued, so nothing can overflow here; an inotify queue overflow (a rescan event without paths)
//! wakes every group. The set of watched directories is reconciled after each scan with what that
//! scan found (level-triggered): a directory removed and created again, a path that appears late,
//! a volume unmounted and mounted again all converge on the next scan.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, INotifyWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::debounce::{Debounce, Signal};
use crate::metrics::Metrics;
use crate::snapshot::KUBELET_DATA;
use crate::state::lock;

/// Wakeup of one group's scanner.
pub struct Wake {
    /// Debounce state, fed by the notify thread and read by the scanner.
    pub debounce: Mutex<Debounce>,
    /// Wakes the scanner to look at the debounce state again.
    pub notify: Notify,
}

impl Wake {
    /// Something may have changed (no path to go by): scan after the quiet period.
    pub fn poke(&self, now: Instant) {
        self.event(now, Signal::Other);
    }

    fn event(&self, now: Instant, signal: Signal) {
        lock(&self.debounce).event(now, signal);
        self.notify.notify_one();
    }
}

/// Which groups an event path may concern.
pub struct Router {
    /// The configured watch paths of each group.
    groups: Vec<Vec<PathBuf>>,
}

impl Router {
    /// A router for the groups' watch paths.
    pub fn new(groups: Vec<Vec<PathBuf>>) -> Self {
        Router { groups }
    }

    /// Indexes of the groups `path` may concern: the watched path itself, anything below it, its
    /// ancestors (a missing path's parents appearing) and its siblings (kubelet's `..data` next to
    /// a watched file; the temporary file a rename-over writer renames onto it).
    pub fn groups_for<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = usize> + 'a {
        self.groups
            .iter()
            .enumerate()
            .filter_map(move |(i, paths)| {
                paths
                    .iter()
                    .any(|p| {
                        path.starts_with(p) || p.starts_with(path) || path.parent() == p.parent()
                    })
                    .then_some(i)
            })
    }
}

/// What an event kind means for the debouncer; `None` for events that cannot change content
/// (our own reads open and close files in the watched directories).
pub fn classify(kind: &EventKind, path: &Path) -> Option<Signal> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            Some(Signal::Closed(path.to_path_buf()))
        }
        EventKind::Access(_) => None,
        // notify reports a rename as From, To and then Both: Both only repeats the other two.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        _ if path.file_name().is_some_and(|n| n == KUBELET_DATA) => Some(Signal::Commit),
        EventKind::Modify(ModifyKind::Data(_)) => Some(Signal::Write(path.to_path_buf())),
        _ => Some(Signal::Other),
    }
}

/// Shared between the notify callback and the watch set.
struct Shared {
    router: Router,
    wakes: Vec<Arc<Wake>>,
    metrics: Arc<Metrics>,
    /// Paths removed or renamed away since the last reconcile: their watches are gone even if a
    /// new directory reuses the inode number.
    gone: Mutex<HashSet<PathBuf>>,
}

impl Shared {
    fn handle(&self, res: notify::Result<Event>) {
        let now = Instant::now();
        match res {
            Ok(ev) if ev.need_rescan() => {
                tracing::warn!("inotify queue overflowed: rescanning every watch group");
                self.metrics.watch_error("overflow");
                for w in &self.wakes {
                    w.event(now, Signal::Other);
                }
            }
            Ok(ev) => {
                tracing::trace!(kind = ?ev.kind, paths = ?ev.paths, "filesystem event");
                if matches!(
                    ev.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
                ) {
                    lock(&self.gone).extend(ev.paths.iter().cloned());
                }
                for path in &ev.paths {
                    let Some(signal) = classify(&ev.kind, path) else {
                        continue;
                    };
                    for g in self.router.groups_for(path) {
                        self.wakes[g].event(now, signal.clone());
                    }
                }
            }
            Err(e) => {
                let kind = if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    "watch_limit"
                } else {
                    "event"
                };
                tracing::warn!(error = %e, "inotify reported an error: rescanning every watch group");
                self.metrics.watch_error(kind);
                for w in &self.wakes {
                    w.event(now, Signal::Other);
                }
            }
        }
    }
}

/// Why a group cannot be watched with inotify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// inotify is not available (instance limit, forced polling).
    Unavailable(String),
    /// The inotify watch limit (`fs.inotify.max_user_watches`) is reached.
    Limit(PathBuf),
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Unavailable(why) => f.write_str(why),
            WatchError::Limit(p) => write!(
                f,
                "inotify watch limit reached adding {} (raise fs.inotify.max_user_watches)",
                p.display()
            ),
        }
    }
}

/// A watched directory.
struct Watched {
    /// Identity when the watch was added: another inode at the same path needs a new watch.
    id: (u64, u64),
    /// Groups that want it.
    groups: BTreeSet<usize>,
}

/// The inotify watcher and the directories it watches, shared by all groups.
pub struct WatchHub {
    shared: Arc<Shared>,
    /// `None` when polling (forced, or inotify could not be set up).
    watcher: Mutex<Option<INotifyWatcher>>,
    /// Why there is no watcher.
    unavailable: Option<String>,
    dirs: Mutex<HashMap<PathBuf, Watched>>,
}

impl WatchHub {
    /// Sets up inotify for `router`'s groups, waking `wakes`. With `force_poll`, or when inotify
    /// cannot be set up, every group polls.
    pub fn new(
        router: Router,
        wakes: Vec<Arc<Wake>>,
        metrics: Arc<Metrics>,
        force_poll: bool,
    ) -> WatchHub {
        let shared = Arc::new(Shared {
            router,
            wakes,
            metrics: metrics.clone(),
            gone: Mutex::new(HashSet::new()),
        });
        let (watcher, unavailable) = if force_poll {
            (
                None,
                Some("polling requested (--poll-interval)".to_string()),
            )
        } else {
            let cb = shared.clone();
            match INotifyWatcher::new(move |res| cb.handle(res), notify::Config::default()) {
                Ok(w) => (Some(w), None),
                Err(e) => {
                    metrics.watch_error("inotify_init");
                    let why = format!(
                        "inotify cannot be set up ({e}); raise fs.inotify.max_user_instances or use --poll-interval"
                    );
                    tracing::warn!("{why}: polling instead");
                    (None, Some(why))
                }
            }
        };
        WatchHub {
            shared,
            watcher: Mutex::new(watcher),
            unavailable,
            dirs: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `group`'s watched directories exactly `desired`; `Ok(true)` when a new inotify watch
    /// was added. Blocking (notify answers through its own thread): call from a blocking context.
    pub fn reconcile(&self, group: usize, desired: &BTreeSet<PathBuf>) -> Result<bool, WatchError> {
        if let Some(why) = &self.unavailable {
            return Err(WatchError::Unavailable(why.clone()));
        }
        let mut watcher = lock(&self.watcher);
        let Some(watcher) = watcher.as_mut() else {
            return Err(WatchError::Unavailable("inotify is not available".into()));
        };
        let mut dirs = lock(&self.dirs);
        // A directory removed or renamed away lost its watch, whichever group wanted it; the
        // groups that still want it add it again when they scan (the removal woke them).
        let gone: HashSet<PathBuf> = std::mem::take(&mut *lock(&self.shared.gone));
        dirs.retain(|path, w| {
            if !desired.contains(path) {
                w.groups.remove(&group);
            }
            let keep = !w.groups.is_empty() && !gone.contains(path);
            if !keep {
                let _ = watcher.unwatch(path);
            }
            keep
        });
        let mut result = Ok(false);
        for path in desired {
            let Ok(md) = std::fs::metadata(path) else {
                continue;
            };
            let id = (md.dev(), md.ino());
            if let Some(w) = dirs.get_mut(path) {
                if w.id == id {
                    w.groups.insert(group);
                    continue;
                }
                let _ = watcher.unwatch(path);
                dirs.remove(path);
            }
            match watcher.watch(path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    dirs.insert(
                        path.clone(),
                        Watched {
                            id,
                            groups: BTreeSet::from([group]),
                        },
                    );
                    result = Ok(true);
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    self.shared.metrics.watch_error("watch_limit");
                    result = Err(WatchError::Limit(path.clone()));
                    break;
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                Err(e) => {
                    // Permission denied and the like: the scan reports the path; count it here.
                    self.shared.metrics.watch_error("watch");
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch directory");
                }
            }
        }
        result
    }
}
