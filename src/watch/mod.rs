//! Noticing changes: inotify events (and the mount table) turned into per-group wakeups.
//!
//! Events only mean "look again". The `inotify::WatchHub` reads inotify on the runtime thread
//! itself (no watcher thread: the kernel's wakeup is the only thread handoff before a scan),
//! finds the groups an event concerns through each directory's [`Interest`](crate::scan::Interest),
//! feeds each one's `debounce::Debounce` and wakes its task. Nothing is queued, so nothing can
//! overflow here; an inotify queue overflow wakes every group. The set of watched directories is
//! reconciled after each scan with what that scan found (level-triggered): a directory removed and
//! created again, a path that appears late, a volume unmounted and mounted again all converge on
//! the next scan.
//!
//! - `debounce`: when to scan after events (pure, clock-free);
//! - `inotify`: the watch set and the event reader;
//! - `pid_file`: a pid file's directory watched for its name, so that a reload need not `stat` it;
//! - [`mounts`]: mount tables: single-file mounts, and the mount-table watcher.

pub(crate) mod debounce;
pub(crate) mod inotify;
pub mod mounts;
pub(crate) mod pid_file;
pub(crate) mod remount;

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

use crate::lock;
use debounce::{Debounce, Signal};

/// A flag the event reader raises when something happened to a watched file (a pid file: see
/// [`pid_file`]); its reader lowers it.
#[derive(Debug)]
pub(crate) struct Changed(std::sync::atomic::AtomicBool);

impl Changed {
    /// A flag up: nothing is known of the file yet.
    pub(crate) fn up() -> Changed {
        Changed(std::sync::atomic::AtomicBool::new(true))
    }

    /// Up: the file may have changed.
    pub(crate) fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether it was up since the last call; lowers it.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Whether it is up, leaving it so.
    pub(crate) fn is_up(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Wakeup of one group's task.
#[derive(Debug)]
pub(crate) struct Wake {
    /// Debounce state, fed by the event reader and read by the group's task.
    pub debounce: Mutex<Debounce>,
    /// Wakes the group's task to look at the debounce state again.
    pub notify: Notify,
}

impl Wake {
    /// A wakeup with the group's quiet period and cap.
    pub(crate) fn new(quiet: std::time::Duration, max_wait: std::time::Duration) -> Wake {
        Wake {
            debounce: Mutex::new(Debounce::new(quiet, max_wait)),
            notify: Notify::new(),
        }
    }

    /// Records `signal` and wakes the task.
    pub(crate) fn event(&self, now: Instant, signal: Signal) {
        lock(&self.debounce).event(now, signal);
        self.notify.notify_one();
    }
}

/// Why a group cannot be watched with inotify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchError {
    /// inotify is not available (instance limit, forced polling).
    Unavailable(String),
    /// The inotify watch limit (`fs.inotify.max_user_watches`) is reached.
    Limit(String),
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Unavailable(why) => f.write_str(why),
            WatchError::Limit(p) => write!(
                f,
                "inotify watch limit reached adding {p} (raise fs.inotify.max_user_watches)"
            ),
        }
    }
}
