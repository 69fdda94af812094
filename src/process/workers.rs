//! The app's workers: the live children of the process a target signals (nginx's, HAProxy's,
//! gunicorn's, php-fpm's workers; PostgreSQL's backends), and which of them started before the
//! version they should hold.
//!
//! An app that reloads by replacing its workers keeps the old ones while they finish their
//! connections (a websocket, a long keep-alive: minutes, with the old certificate or token). A
//! worker that started before the reference time (the later of the content's change and the
//! reload sent for it) holds the old version: a pre-forking master forks from what it loaded,
//! so a worker forked between the change and the reload is old too.
//!
//! Only the direct children count: a worker's own children (a CGI program, a helper) are not
//! workers of the app. Zombies do not count.

use std::time::SystemTime;

use super::{ProcFs, ProcInfo};

/// Most workers named: an app with thousands of workers is counted, not listed.
pub(crate) const NAMED: usize = 64;

/// The live direct children of `parents` (with their start times), in pid order.
pub(crate) fn children(procfs: &ProcFs, parents: &[i32]) -> std::io::Result<Vec<ProcInfo>> {
    let mut out: Vec<ProcInfo> = procfs
        .processes()?
        .into_iter()
        .filter(|p| parents.contains(&p.ppid) && !parents.contains(&p.pid))
        .collect();
    out.sort_unstable_by_key(|p| p.pid);
    Ok(out)
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
    /// Counts `workers` against `reference` (`margin`: how much later a start must be to be
    /// trusted, for the clock tick of start times).
    pub(crate) fn of(
        workers: &[ProcInfo],
        reference: SystemTime,
        margin: std::time::Duration,
    ) -> Count {
        let mut older: Vec<OldWorker> = workers
            .iter()
            .filter(|w| w.start_time() <= reference + margin)
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
            reference,
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
        let c = Count::of(&kids, between, Duration::from_millis(20));
        assert_eq!((c.total, c.current, c.older_count), (2, 1, 1));
        assert_eq!(c.older[0].pid, kids[0].pid);
        assert!(c.named().contains(&format!("pid {} (sleep)", kids[0].pid)));
        // Nothing is older than a time before both.
        let c = Count::of(&kids, first - Duration::from_secs(1), Duration::ZERO);
        assert_eq!((c.current, c.older_count), (2, 0));
    }
}
