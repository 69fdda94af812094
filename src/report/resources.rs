//! Running out of what the daemon needs: file descriptors, threads, memory.
//!
//! A daemon at its open-files limit cannot open the files it watches, a pid file, a process's
//! `/proc` entries or a connection; one that cannot start a thread cannot read a slow
//! filesystem. Each such failure is counted (`secret_reloader_resource_exhausted_total
//! {resource}`); the first one of an episode is logged as a warning that names the limit and
//! what to raise; `/status` shows the episode (since when, how many failures, the last one);
//! and the episode ends, logged, once `QUIET` passes without another failure. What failed is
//! retried by its owner (a scan within a second, an action with its backoff), so the daemon
//! recovers by itself when the resource comes back. Process-wide, like the limits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::lock;

/// What ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// File descriptors (EMFILE: the process's limit; ENFILE: the system's).
    FileDescriptors,
    /// Threads or processes (EAGAIN from `clone`: the pod's pid limit, `RLIMIT_NPROC`).
    Threads,
    /// Memory (ENOMEM from the kernel).
    Memory,
}

impl Resource {
    const ALL: [Resource; 3] = [
        Resource::FileDescriptors,
        Resource::Threads,
        Resource::Memory,
    ];

    /// The metric label and `/status` name.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Resource::FileDescriptors => "file_descriptors",
            Resource::Threads => "threads",
            Resource::Memory => "memory",
        }
    }

    fn index(self) -> usize {
        Resource::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    fn what_to_do(self) -> String {
        match self {
            Resource::FileDescriptors => format!(
                "the daemon is out of file descriptors (its limit is {}): raise the container's \
                 open-files limit (nofile)",
                open_files_limit().map_or("?".into(), |n| n.to_string()),
            ),
            Resource::Threads => "the daemon cannot start a thread: the pod's pid limit \
                                  (pids cgroup) or RLIMIT_NPROC is reached"
                .into(),
            Resource::Memory => "the kernel is out of memory for the daemon: raise the \
                                 container's memory limit"
                .into(),
        }
    }
}

/// No failure for this long ends an episode.
pub(crate) const QUIET: Duration = Duration::from_secs(10);

/// Failures so far, by resource.
static FAILURES: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// An episode of one resource running out.
#[derive(Debug, Clone)]
struct Episode {
    since: SystemTime,
    last_at: Instant,
    last: String,
    failures: u64,
}

static EPISODES: Mutex<[Option<Episode>; 3]> = Mutex::new([None, None, None]);

/// Woken at the first failure of an episode (the task that ends episodes waits on it).
static BEGUN: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Records a failure for want of `r`; `what` says what failed.
pub(crate) fn exhausted(r: Resource, what: &dyn std::fmt::Display) {
    FAILURES[r.index()].fetch_add(1, Relaxed);
    let mut all = lock(&EPISODES);
    let slot = &mut all[r.index()];
    match slot {
        Some(e) => {
            e.last_at = Instant::now();
            e.last = what.to_string();
            e.failures += 1;
        }
        None => {
            tracing::warn!(resource = r.label(), error = %what, "{}", r.what_to_do());
            *slot = Some(Episode {
                since: SystemTime::now(),
                last_at: Instant::now(),
                last: what.to_string(),
                failures: 1,
            });
            BEGUN.notify_one();
        }
    }
}

/// Records `e` when it says a resource ran out; whether it did.
pub(crate) fn check(e: &std::io::Error) -> bool {
    match of(e) {
        Some(r) => {
            exhausted(r, e);
            true
        }
        None => false,
    }
}

/// The resource an error says ran out, if any.
pub(crate) fn of(e: &std::io::Error) -> Option<Resource> {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => Some(Resource::FileDescriptors),
        Some(libc::ENOMEM) => Some(Resource::Memory),
        _ => None,
    }
}

/// Every failure so far: a scan that saw this grow while it ran is read again soon.
pub(crate) fn failures() -> u64 {
    FAILURES.iter().map(|f| f.load(Relaxed)).sum()
}

/// Ends the episodes that had no failure for [`QUIET`], logging each; runs until the daemon
/// stops, idle while no episode is open.
pub(crate) async fn end_episodes() {
    loop {
        BEGUN.notified().await;
        loop {
            tokio::time::sleep(QUIET).await;
            let mut all = lock(&EPISODES);
            for (r, slot) in Resource::ALL.iter().zip(all.iter_mut()) {
                if let Some(e) = slot
                    && e.last_at.elapsed() >= QUIET
                {
                    tracing::info!(
                        resource = r.label(),
                        failures = e.failures,
                        "{} available again: no failure for {} s",
                        r.label(),
                        QUIET.as_secs()
                    );
                    *slot = None;
                }
            }
            if all.iter().all(Option::is_none) {
                break;
            }
        }
    }
}

/// Open descriptors of this process now (`None` when they cannot be counted: counting needs
/// one).
pub(crate) fn open_files() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1) as u64)
}

/// The soft open-files limit.
pub(crate) fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// For `/status`: descriptors in use and their limit, and each open episode.
pub(crate) fn status() -> Value {
    let all = lock(&EPISODES).clone();
    let episodes: Vec<Value> = Resource::ALL
        .iter()
        .zip(all.iter())
        .filter_map(|(r, e)| {
            let e = e.as_ref()?;
            Some(json!({
                "resource": r.label(),
                "since": crate::text::time(e.since),
                "failures": e.failures,
                "last_error": crate::text::value(&e.last),
                "what_to_do": r.what_to_do(),
            }))
        })
        .collect();
    json!({
        "open_files": open_files(),
        "open_files_limit": open_files_limit(),
        "exhausted": episodes,
    })
}

/// `resource_exhausted_total`, read from [`counts`].
pub(super) const EXHAUSTED: super::family::Family = super::family::Family::counter(
    "resource_exhausted_total",
    "Failures for want of a resource (file_descriptors, threads, memory); see /status resources.",
);

/// Failures so far, by label, for the metric.
pub(crate) fn counts() -> Vec<(&'static str, u64)> {
    Resource::ALL
        .iter()
        .map(|r| (r.label(), FAILURES[r.index()].load(Relaxed)))
        .collect()
}
