//! Filesystem calls that may never return, run where they hold no one else.
//!
//! `O_NONBLOCK` does nothing for a regular file or a directory: on a FUSE mount whose server
//! does not answer, an NFS server that is gone, a CSI driver or a hung disk, `open`, `stat`,
//! `read`, `getdents`, `readlink` and the path walk of `inotify_add_watch` wait in the kernel,
//! most often where no signal ends the wait. Whatever thread makes such a call may stop for
//! good; nothing else may wait on it.
//!
//! Where a path lives decides where its calls run (`Place`, found by `classify`): on a
//! memory filesystem (`tmpfs`, `ramfs`: every Secret volume and projected token, as kubelet
//! mounts them), reached through local filesystems only and with nothing else mounted below it,
//! a call is a copy from memory, and it runs on the reload thread itself (no thread handoff on
//! the reload path). Everywhere else it runs on a worker thread of its `Lane`: one call in
//! flight per group or target, awaited with a deadline. A call that has not returned after the
//! deadline is reported (`a call on PATH has not returned for 30 s`) while the lane's owner
//! holds its group or target; it is awaited on and read again once it returns. Other groups,
//! the admin server and the shutdown never wait on it. At most 8 lanes' jobs
//! run at once; one past its deadline gives its turn away.
//!
//! Worker threads are the daemon's own (`reserve`): when no thread can be started (the pod's
//! pid limit, `RLIMIT_NPROC`) the caller is told before it gives anything away, and retries,
//! where a thread pool would abort. A job never hands a file descriptor back: descriptors are
//! closed on the worker.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::lock;
use crate::watch::mounts::Mount;

/// Where the files of a group or target live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// A memory filesystem reached through local ones only: calls run inline.
    Memory,
    /// Anywhere else (or not known yet): calls run on the lane's worker.
    Other,
}

/// Filesystems whose calls are copies from memory.
const MEMORY: [&str; 2] = ["tmpfs", "ramfs"];

/// Filesystems a path may be reached through without a call that waits on a device or a
/// server (their dentries are cached and need no revalidation).
const LOCAL: [&str; 13] = [
    "tmpfs", "ramfs", "rootfs", "overlay", "ext2", "ext3", "ext4", "xfs", "btrfs", "devtmpfs",
    "squashfs", "erofs", "proc",
];

/// Where `paths` live: [`Place::Memory`] when every one (or its nearest existing ancestor) is
/// on a memory filesystem of `mounts`, every mount it is reached through is local, nothing is
/// mounted below it, and symbolic links out of it are not followed. Makes filesystem calls:
/// run it where it may stall.
pub(crate) fn classify(paths: &[PathBuf], follow_external: bool, mounts: &[Mount]) -> Place {
    use std::os::unix::fs::MetadataExt;
    if follow_external || mounts.is_empty() {
        return Place::Other;
    }
    for p in paths {
        let (existing, _) = crate::scan::nearest_existing_ancestor(p);
        let here = if p.exists() { p.as_path() } else { &existing };
        let (Ok(real), Ok(md)) = (std::fs::canonicalize(here), std::fs::metadata(here)) else {
            return Place::Other;
        };
        let dev = (libc::major(md.dev()), libc::minor(md.dev()));
        // The mount the path is on: the last one mounted there with its device.
        let Some(on) = mounts
            .iter()
            .rev()
            .find(|m| m.dev == dev && real.starts_with(&m.mount_point))
        else {
            return Place::Other;
        };
        if !MEMORY.contains(&on.fstype.as_str()) {
            return Place::Other;
        }
        let through_other = mounts
            .iter()
            .any(|m| real.starts_with(&m.mount_point) && !LOCAL.contains(&m.fstype.as_str()));
        let below = mounts
            .iter()
            .any(|m| m.mount_point.starts_with(&real) && m.mount_point != real);
        if through_other || below {
            return Place::Other;
        }
    }
    Place::Memory
}

thread_local! {
    /// The path a lane's job is using, for its stall report; `None` outside jobs.
    static AT: RefCell<Option<Arc<Mutex<Option<PathBuf>>>>> = const { RefCell::new(None) };
}

/// Notes that the calling thread is about to use `path` (what a stall report names). Nothing
/// outside a lane's job.
pub(crate) fn at(path: &Path) {
    AT.with(|a| {
        if let Some(slot) = &*a.borrow() {
            *lock(slot) = Some(path.to_path_buf());
        }
    });
}

/// A call that has not returned.
#[derive(Debug, Clone)]
pub(crate) struct Stall {
    /// The path it was using, when the job said.
    pub path: Option<PathBuf>,
    /// When it started.
    pub since: SystemTime,
    /// How long it has not returned.
    pub waited: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.path {
            Some(p) => format!("a call on {}", crate::text::path(p)),
            None => "a filesystem call".to_string(),
        };
        write!(
            f,
            "{what} has not returned for {} s (a stalled filesystem: a FUSE or NFS server, a CSI \
             driver, a hung disk); held until it returns, then read again",
            self.waited.as_secs()
        )
    }
}

/// What a lane's owner hears while it waits.
#[derive(Debug)]
pub(crate) enum Heard<'a> {
    /// The call has not returned within the deadline.
    Stalled(&'a Stall),
    /// A call reported stalled returned after `after`.
    Resumed {
        /// How long it took.
        after: Duration,
    },
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Ran<T> {
    /// The job returned this.
    Done(T),
    /// The daemon is stopping; the job, if still running, is left to its thread.
    Stopped,
    /// The worker ended without an answer (the job panicked).
    Lost,
}

/// One group's or target's way to the filesystem: one call in flight at a time (its owner
/// awaits each), on a worker thread, reported when it does not return.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lane {
    /// After how long a call that has not returned is reported.
    pub deadline: Duration,
}

/// Jobs of lanes running at once before the next waits for one to end (a thousand groups on a
/// disk filesystem read at start a few at a time, not on a thousand new threads). A job that
/// has not returned within its lane's deadline no longer counts: a stalled filesystem holds no
/// other lane's turn.
const RUNNING_AT_ONCE: usize = 8;

static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RUNNING_AT_ONCE);

/// A lane's turn to run a job: a worker thread set aside for it, and the right to run now.
pub(crate) struct Turn {
    permit: tokio::sync::SemaphorePermit<'static>,
    worker: Worker,
}

impl Lane {
    /// Waits for a turn to run a job, and sets a worker thread aside for it; the error says why
    /// no thread could be started (nothing was given away yet: try again later).
    pub(crate) async fn turn(&self) -> Result<Turn, String> {
        let permit = TURNS
            .acquire()
            .await
            .map_err(|_| "no turn can be had".to_string())?;
        Ok(Turn {
            permit,
            worker: reserve()?,
        })
    }

    /// Runs `job` in its `turn` and waits for it; `heard` is told when it has not returned after
    /// the deadline, and when it then returns.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        turn: Turn,
        job: impl FnOnce() -> T + Send + 'static,
        stop: &mut watch::Receiver<bool>,
        mut heard: impl FnMut(Heard<'_>),
    ) -> Ran<T> {
        let Turn { permit, worker } = turn;
        let mut permit = Some(permit);
        let path = Arc::new(Mutex::new(None));
        let (tx, rx) = oneshot::channel();
        let slot = path.clone();
        worker.give(Box::new(move || {
            AT.with(|a| *a.borrow_mut() = Some(slot));
            let out = job();
            AT.with(|a| *a.borrow_mut() = None);
            let _ = tx.send(out);
        }));
        let started = Instant::now();
        let since = SystemTime::now();
        let deadline = tokio::time::sleep(self.deadline);
        tokio::pin!(deadline, rx);
        let mut stalled = false;
        loop {
            tokio::select! {
                out = &mut rx => {
                    if stalled {
                        heard(Heard::Resumed { after: started.elapsed() });
                    }
                    return match out {
                        Ok(out) => Ran::Done(out),
                        Err(_) => Ran::Lost,
                    };
                }
                _ = &mut deadline, if !stalled => {
                    stalled = true;
                    // Another lane's job may run in its place.
                    drop(permit.take());
                    let stall = Stall {
                        path: lock(&path).clone(),
                        since,
                        waited: started.elapsed(),
                    };
                    heard(Heard::Stalled(&stall));
                }
                // A stop flag whose sender is gone never stops the wait.
                Ok(_) = stop.wait_for(|s| *s) => return Ran::Stopped,
            }
        }
    }
}

/// A job for a worker thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker thread waits for another job before it ends.
const IDLE: Duration = Duration::from_secs(10);

/// Idle workers, each waiting on its own channel, by number.
static IDLE_WORKERS: Mutex<Vec<(u64, Sender<Job>)>> = Mutex::new(Vec::new());

/// Numbers of worker threads.
static WORKER_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A worker thread set aside for one job: it waits for it. Dropped unused, it is idle again.
pub(crate) struct Worker {
    id: u64,
    tx: Option<Sender<Job>>,
}

impl Worker {
    /// Hands the job over (the worker waits for it: this cannot fail).
    pub(crate) fn give(mut self, job: Job) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(job);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            lock(&IDLE_WORKERS).push((self.id, tx));
        }
    }
}

/// An idle worker thread, or a new one, set aside for a job: reserved before the job is made,
/// so that when no thread can be started (the error says why) the caller still holds what the
/// job would have taken.
pub(crate) fn reserve() -> Result<Worker, String> {
    if let Some((id, tx)) = lock(&IDLE_WORKERS).pop() {
        return Ok(Worker { id, tx: Some(tx) });
    }
    let (tx, rx) = channel::<Job>();
    let id = WORKER_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let me = tx.clone();
    std::thread::Builder::new()
        .name("fs".into())
        .stack_size(256 * 1024)
        .spawn(move || work(id, me, rx))
        .map_err(|e| {
            crate::report::resources::exhausted(crate::report::resources::Resource::Threads, &e);
            format!("cannot start a thread for filesystem calls: {e}")
        })?;
    Ok(Worker { id, tx: Some(tx) })
}

fn work(id: u64, me: Sender<Job>, jobs: Receiver<Job>) {
    loop {
        let job = match jobs.recv_timeout(IDLE) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                let mut idle = lock(&IDLE_WORKERS);
                match idle.iter().position(|(w, _)| *w == id) {
                    // Idle and not set aside: the thread ends.
                    Some(i) => {
                        idle.remove(i);
                        return;
                    }
                    // Set aside for a job that is on its way.
                    None => {
                        drop(idle);
                        match jobs.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        job();
        lock(&IDLE_WORKERS).push((id, me.clone()));
    }
}

/// Runs `job` on a worker thread and awaits it without a deadline (a state-file write, a name
/// lookup: their owners report their own failures); `Err` when no thread could be started.
pub(crate) async fn run_detached<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let worker = reserve()?;
    let (tx, rx) = oneshot::channel();
    worker.give(Box::new(move || {
        let _ = tx.send(job());
    }));
    rx.await
        .map_err(|_| "the worker thread ended before its job".to_string())
}
