//! The app's workers: the live children of the process a target signals (nginx's, HAProxy's,
//! gunicorn's, php-fpm's workers; PostgreSQL's backends), and which of them started before the
//! version they should hold.
//!
//! An app that reloads by replacing its workers keeps the old ones while they finish their
//! connections (a websocket, a long keep-alive: minutes, with the old certificate or token). A
//! worker that started before the [`Reference`] (the later of the content's change and the
//! reload sent for it) holds the old version: a pre-forking master forks from what it loaded,
//! so a worker forked between the change and the reload is old too.
//!
//! Start times count in clock ticks (10 ms), truncated: a worker forked in the tick the reload
//! was sent in counts as current (a master cannot reload and fork within that tick in practice,
//! and the opposite error would keep a reloaded app stale for good).
//!
//! Only the direct children count: a worker's own children (a CGI program, a helper) are not
//! workers of the app. Zombies do not count.

use std::time::{Duration, SystemTime};

use super::{ProcFs, ProcInfo, clock_ticks_per_sec};

/// Most workers named: an app with thousands of workers is counted, not listed.
pub(crate) const NAMED: usize = 64;

/// The live direct children of `parents` (with their start times), in pid order.
pub(crate) fn children(procfs: &ProcFs, parents: &[i32]) -> std::io::Result<Vec<ProcInfo>> {
    Ok(children_among(&procfs.processes()?, parents))
}

/// The direct children of `parents` among `all` (one walk of `/proc` serves several parents
/// looked at one by one), in pid order.
pub(crate) fn children_among(all: &[ProcInfo], parents: &[i32]) -> Vec<ProcInfo> {
    // A set: with --signal-all the parents may be every process of the namespace.
    let parents: std::collections::HashSet<i32> = parents.iter().copied().collect();
    let mut out: Vec<ProcInfo> = all
        .iter()
        .filter(|p| parents.contains(&p.ppid) && !parents.contains(&p.pid))
        .cloned()
        .collect();
    out.sort_unstable_by_key(|p| p.pid);
    out
}

/// What a worker must have started after to hold a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reference {
    /// When the version's content changed on disk.
    pub changed: SystemTime,
    /// How much later than the change a start must be to be trusted (file times lag).
    pub margin: Duration,
    /// When the reload for it was sent, if one was.
    pub sent: Option<SystemTime>,
}

impl Reference {
    /// The reload sent for the version, when one was sent after its change.
    fn reload(&self) -> Option<SystemTime> {
        self.sent.filter(|s| *s >= self.changed)
    }

    /// The time shown: the reload sent for the version, else its change.
    pub(crate) fn time(&self) -> SystemTime {
        self.reload().unwrap_or(self.changed)
    }

    /// Whether a worker that started at `started` holds an older version. After a reload the
    /// reload decides (a worker forked by the reloaded master may start within milliseconds of
    /// the change); without one, the change with its margin.
    pub(crate) fn predates(&self, started: SystemTime) -> bool {
        match self.reload() {
            Some(sent) => {
                let tick = Duration::from_nanos(1_000_000_000 / clock_ticks_per_sec());
                started + tick < sent
            }
            None => started <= self.changed + self.margin,
        }
    }
}

/// A worker that started before the reference time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OldWorker {
    /// Its pid.
    pub pid: i32,
    /// Its name (comm, escaped when shown).
    pub name: String,
    /// When it started.
    pub started: SystemTime,
}

/// The workers of a target against a reference time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Count {
    /// Live workers.
    pub total: usize,
    /// Workers that started after the reference time.
    pub current: usize,
    /// Those that did not (at most [`NAMED`] of them, oldest first).
    pub older: Vec<OldWorker>,
    /// How many started before the reference time (may exceed `older.len()`).
    pub older_count: usize,
    /// The reference time: a worker must have started after it to hold the version.
    pub reference: SystemTime,
}

impl Count {
    /// Counts `workers` against `reference`.
    pub(crate) fn of(workers: &[ProcInfo], reference: Reference) -> Count {
        let mut older: Vec<OldWorker> = workers
            .iter()
            .filter(|w| reference.predates(w.start_time()))
            .map(|w| OldWorker {
                pid: w.pid,
                name: w.comm.clone(),
                started: w.start_time(),
            })
            .collect();
        older.sort_by_key(|w| (w.started, w.pid));
        let older_count = older.len();
        older.truncate(NAMED);
        Count {
            total: workers.len(),
            current: workers.len() - older_count,
            older,
            older_count,
            reference: reference.time(),
        }
    }

    /// `pid 12 (nginx) started 2026-12-08T10:00:00Z, …`: the old workers for a message.
    pub(crate) fn named(&self) -> String {
        let mut shown: Vec<String> = self
            .older
            .iter()
            .map(|w| {
                format!(
                    "pid {} ({}) started {}",
                    w.pid,
                    crate::text::value(&w.name),
                    crate::text::time(w.started)
                )
            })
            .collect();
        if self.older_count > self.older.len() {
            shown.push(format!("{} more", self.older_count - self.older.len()));
        }
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_real_forking_parent_has_its_children_counted_against_a_time() {
        // sh forks two long sleeps, the second after a pause (a short sleep in the foreground,
        // reaped by then): a reference time between them makes the first old and the second
        // current.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 0.5; sleep 30 & wait"])
            .spawn()
            .unwrap();
        let procfs = ProcFs::new("/proc");
        let pid = sh.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut kids = loop {
            let kids = children(&procfs, &[pid]).unwrap();
            // The long sleeps: two children started more than 300 ms apart.
            let apart = |k: &[ProcInfo]| {
                k.len() == 2
                    && k[0].start_ticks.abs_diff(k[1].start_ticks) * 1000
                        > 300 * crate::process::clock_ticks_per_sec()
            };
            if apart(&kids) || std::time::Instant::now() > deadline {
                break kids;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for k in &kids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(k.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = sh.kill();
        let _ = sh.wait();
        assert_eq!(kids.len(), 2, "{kids:?}");
        kids.sort_by_key(|k| k.start_ticks);
        let (first, second) = (kids[0].start_time(), kids[1].start_time());
        assert!(second > first + Duration::from_millis(300));
        let between = first + (second.duration_since(first).unwrap() / 2);
        let changed = |t| Reference {
            changed: t,
            margin: Duration::from_millis(20),
            sent: None,
        };
        let c = Count::of(&kids, changed(between));
        assert_eq!((c.total, c.current, c.older_count), (2, 1, 1));
        assert_eq!(c.older[0].pid, kids[0].pid);
        assert!(c.named().contains(&format!("pid {} (sleep)", kids[0].pid)));
        // Nothing is older than a time before both.
        let before = first - Duration::from_secs(1);
        let c = Count::of(&kids, changed(before));
        assert_eq!((c.current, c.older_count), (2, 0));
        // A reload sent between them: the first predates it, whatever the change time.
        let sent = Reference {
            sent: Some(between),
            ..changed(before)
        };
        let c = Count::of(&kids, sent);
        assert_eq!((c.current, c.older_count, c.reference), (1, 1, between));
    }
}
