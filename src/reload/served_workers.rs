//! The served certificate, worker by worker: one connection reaches one worker, and nginx with
//! `worker_processes 4` has four, each of which may keep the old certificate.
//!
//! So after a reload the daemon looks several times, and at each look finds who accepted:
//! the processes holding the endpoint's listening sockets (`process::sockets`, `process::holders`; a holder whose
//! children hold them too, nginx's master, never accepts and is left out), and among them the
//! one holding the connection's server side (or, for a server that forks a process per
//! connection, PostgreSQL's postmaster, the parent of the one that does). The connection is kept
//! open until then: its server side exists only while it is. The holders are found again at
//! each look (workers come and go during a reload); the confirmation holds once every holder
//! has been seen serving a certificate of the disk. A holder no look reached (the kernel
//! chooses who accepts) is "not checked", never taken as good.
//!
//! What nginx does (1.22, `worker_processes 4`, `listen … reuseport`): the master opens one
//! listening socket per worker and every worker inherits all four, polling its own; at a
//! reload the sockets are kept and handed to the new workers. A worker stopped (SIGSTOP)
//! before a reload keeps every listening socket open but never accepts again: the new workers
//! take its socket's connections, so it stays not checked. A stopped current worker's share
//! of connections waits in its queue with no handshake: once a worker has answered, a look
//! gets a shorter limit.
//!
//! When the holders cannot be found (another uid's descriptors, the app in another network or
//! PID namespace), the daemon says why and does what it did before: one look that matches is
//! enough, and the message says that one connection was checked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::served::{Served, look_open, mismatch};
use crate::config::ServedCert;
use crate::process::holders::{self, Holders};
use crate::process::sockets;
use crate::process::{ProcFs, ProcInfo};
use crate::scan::CertOnDisk;
use crate::scan::fingerprint::FingerprintKey;

/// Looks when one is enough (the workers cannot be told apart), as before.
const ONE_CONNECTION_LOOKS: u32 = 7;
/// Looks per holder, when they can be: enough to reach each of a few workers the kernel
/// chooses among at random.
const LOOKS_PER_WORKER: u32 = 8;
/// Most looks.
const MOST_LOOKS: u32 = 64;
/// Pause after a look that learned nothing; doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between looks.
const LONGEST_PAUSE: Duration = Duration::from_millis(1600);
/// Time for all the looks (one started before it may take its own limit).
const ALL_LOOKS: Duration = Duration::from_secs(10);
/// The least limit of a look once a worker has answered (a look that lands in a stopped
/// worker's queue never gets a handshake).
const SHORT_LIMIT: Duration = Duration::from_millis(300);

/// What the looks found of the app's workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Workers {
    /// Whether the workers could be told apart; when not, `note` says why.
    pub per_worker: bool,
    /// The holders a look reached, with what each served last (pid order).
    pub seen: Vec<WorkerSeen>,
    /// The holders no look reached (pid order).
    pub not_checked: Vec<ProcInfo>,
    /// Why it fell back to one connection, or what else the looks met.
    pub note: Option<String>,
}

/// A worker and what it served.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSeen {
    /// The worker.
    pub info: ProcInfo,
    /// What it served at the last look that reached it.
    pub served: Served,
    /// The process that held the connection, when another (a forked backend).
    pub via: Option<i32>,
}

impl Workers {
    /// Workers serving a certificate of the disk, serving another, not checked.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let matching = self.seen.iter().filter(|w| w.served.matches).count();
        (matching, self.seen.len() - matching, self.not_checked.len())
    }
}

/// The looks so far.
#[derive(Default)]
struct Tally {
    /// What each pid served last.
    by_pid: BTreeMap<i32, WorkerSeen>,
    /// The holders at the last look that found them.
    holders: Vec<ProcInfo>,
    /// Most holders any look found.
    most: usize,
    /// Why the last look could not tell the workers apart.
    why_not: Option<String>,
    /// Looks whose connection no holder (nor a child of one) held.
    stray: u32,
    /// Looks made.
    looks: u32,
    /// Whether the last look served a certificate of the disk.
    last_matched: bool,
}

impl Tally {
    /// Records one look; whether it learned something (a worker reached for the first time or
    /// serving something else than before).
    fn record(&mut self, served: &Served, holders: Result<Holders, String>) -> bool {
        self.looks += 1;
        self.last_matched = served.matches;
        let h = match holders {
            Ok(h) => h,
            Err(why) => {
                self.why_not = Some(why);
                return false;
            }
        };
        self.why_not = None;
        self.most = self.most.max(h.workers.len());
        self.holders = h.workers.clone();
        let Some((worker, via)) = h.reached() else {
            self.stray += 1;
            return false;
        };
        let before = self.by_pid.get(&worker.pid).map(|w| w.served.fingerprint);
        self.by_pid.insert(
            worker.pid,
            WorkerSeen {
                info: worker.clone(),
                served: served.clone(),
                via: via.map(|v| v.pid),
            },
        );
        before != Some(served.fingerprint)
    }

    /// Whether the workers are told apart.
    fn per_worker(&self) -> bool {
        !self.holders.is_empty()
    }

    /// Done: every holder seen serving a certificate of the disk (or, falling back, the last
    /// look did).
    fn confirmed(&self) -> bool {
        if self.per_worker() {
            self.holders
                .iter()
                .all(|h| self.by_pid.get(&h.pid).is_some_and(|w| w.served.matches))
        } else {
            self.last_matched
        }
    }

    /// How many looks may be made.
    fn budget(&self) -> u32 {
        if self.per_worker() {
            (LOOKS_PER_WORKER * self.most as u32).clamp(ONE_CONNECTION_LOOKS, MOST_LOOKS)
        } else {
            ONE_CONNECTION_LOOKS
        }
    }

    /// The current holders, reached or not.
    fn workers(&self) -> Workers {
        let mut out = Workers {
            per_worker: self.per_worker(),
            ..Workers::default()
        };
        for h in &self.holders {
            match self.by_pid.get(&h.pid) {
                Some(w) => out.seen.push(w.clone()),
                None => out.not_checked.push(h.clone()),
            }
        }
        out.note = match &self.why_not {
            Some(why) if !out.per_worker => Some(format!("{why}; one connection checked")),
            _ if self.stray > 0 => Some(format!(
                "{} look(s) reached a process that does not hold the listening socket",
                self.stray
            )),
            _ => None,
        };
        out
    }
}

/// Looks until every worker serves a certificate of `disk`, the looks are used up, or (the
/// workers cannot be told apart) one look matches; `seen` is told each look.
pub(crate) async fn confirm(
    sc: &ServedCert,
    disk: &[CertOnDisk],
    key: &FingerprintKey,
    procfs: &ProcFs,
    mut seen: impl FnMut(&Served, &Workers),
) -> Result<String, String> {
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut pause = FIRST_PAUSE;
    let mut limit = sc.timeout;
    let mut slowest = Duration::ZERO;
    let mut last_error = String::new();
    let mut tries = 0;
    loop {
        tries += 1;
        let t0 = Instant::now();
        let learned = match look_open(sc, disk, key, limit).await {
            Ok(open) => {
                slowest = slowest.max(t0.elapsed());
                limit = sc.timeout.min(SHORT_LIMIT.max(slowest * 4));
                let holders = survey(procfs, &open);
                // Closed only now: its server side had to be there to be found.
                let served = open.served.clone();
                drop(open);
                let learned = tally.record(&served, holders);
                seen(&served, &tally.workers());
                if tally.confirmed() {
                    return Ok(confirmed(sc, &served, &tally));
                }
                if !served.matches {
                    last_error = mismatch(sc, disk, &served);
                }
                learned
            }
            Err(e) => {
                last_error = e;
                false
            }
        };
        let left = ALL_LOOKS.saturating_sub(start.elapsed());
        if tries >= tally.budget() || left.is_zero() {
            break;
        }
        // At once after a look that reached a new worker or found the disk's certificate (the
        // app has reloaded: more workers are to be reached); a growing pause while it has not.
        if !learned && !tally.last_matched {
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        } else if learned {
            pause = FIRST_PAUSE;
        }
    }
    Err(failure(sc, disk, &tally, tries, &last_error))
}

/// Who holds the endpoint's listening sockets and who accepted `open`, or why that cannot be
/// told.
fn survey(procfs: &ProcFs, open: &super::served::Open) -> Result<Holders, String> {
    let found = sockets::find(procfs, open.server, Some(open.local))
        .map_err(|e| format!("cannot read the sockets of procfs (net/tcp): {e}"))?;
    if found.listening.is_empty() {
        return Err(format!(
            "no socket listens on {} in the daemon's network namespace (the app is in another, \
             or the port is forwarded)",
            open.server
        ));
    }
    let h =
        holders::holders(procfs, &found).map_err(|e| format!("cannot list the processes: {e}"))?;
    if !h.workers.is_empty() {
        return Ok(h);
    }
    let skipped = match h.skipped {
        0 => String::new(),
        n => format!(
            " ({n} processes past the first {} not looked at)",
            holders::PROCESSES
        ),
    };
    if h.unreadable.is_empty() {
        return Err(format!(
            "no process of the daemon's PID namespace holds the socket listening on {}{skipped} \
             (the app is in another)",
            open.server
        ));
    }
    let named: Vec<String> = h
        .unreadable
        .iter()
        .take(4)
        .map(|u| match u.uid {
            Some(uid) => format!("{} (uid {uid})", u.info.shown()),
            None => u.info.shown(),
        })
        .collect();
    let more = h.unreadable.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Err(format!(
        "cannot read the fds of {}{more}: the daemon runs as uid {}{skipped}",
        named.join(", "),
        nix::unistd::geteuid()
    ))
}

/// `pid 12 (nginx)`, with the backend it was seen through.
fn worker(w: &WorkerSeen) -> String {
    match w.via {
        Some(via) => format!("{} (seen through pid {via})", w.info.shown()),
        None => w.info.shown(),
    }
}

/// The success message.
fn confirmed(sc: &ServedCert, last: &Served, tally: &Tally) -> String {
    let w = tally.workers();
    if !w.per_worker {
        return format!(
            "{} serves the certificate on disk (serial {}, look {}); {}",
            sc.label(),
            last.serial,
            tally.looks,
            w.note.as_deref().unwrap_or("one connection checked")
        );
    }
    let each: Vec<String> = w
        .seen
        .iter()
        .map(|s| format!("{} serial {}", worker(s), s.served.serial))
        .collect();
    format!(
        "{} serves the certificate on disk from each of its {} worker(s): {} ({} looks)",
        sc.label(),
        w.seen.len(),
        each.join(", "),
        tally.looks
    )
}

/// The failure message: which workers serve another certificate, which were not checked.
fn failure(sc: &ServedCert, disk: &[CertOnDisk], tally: &Tally, tries: u32, last: &str) -> String {
    let w = tally.workers();
    if !w.per_worker || (w.seen.is_empty() && w.not_checked.is_empty()) {
        let note = w.note.map(|n| format!(" ({n})")).unwrap_or_default();
        return format!("reloaded, but after {tries} looks {last}{note}");
    }
    // The workers serving another certificate, grouped by what they serve.
    let mut other: Vec<(&Served, Vec<String>)> = Vec::new();
    for s in w.seen.iter().filter(|s| !s.served.matches) {
        match other
            .iter_mut()
            .find(|(o, _)| o.fingerprint == s.served.fingerprint)
        {
            Some((_, names)) => names.push(worker(s)),
            None => other.push((&s.served, vec![worker(s)])),
        }
    }
    let mut parts: Vec<String> = other
        .iter()
        .map(|(served, names)| {
            format!(
                "{} {} serial {} (fingerprint {}), not the one on disk",
                names.join(", "),
                if names.len() == 1 { "serves" } else { "serve" },
                served.serial,
                served.fingerprint.short()
            )
        })
        .collect();
    if !w.not_checked.is_empty() {
        let names: Vec<String> = w.not_checked.iter().map(ProcInfo::shown).collect();
        parts.push(format!(
            "{} not checked (holds the port, but no look reached it: the kernel chooses which \
             worker accepts; a stopped worker never does)",
            names.join(", ")
        ));
    }
    let disk: Vec<String> = disk
        .iter()
        .map(|c| format!("{} serial {}", crate::text::path(&c.path), c.serial))
        .collect();
    format!(
        "reloaded, but after {tries} looks at {}: {}; on disk: {}",
        sc.label(),
        parts.join("; "),
        if disk.is_empty() {
            "no certificate".to_string()
        } else {
            disk.join(", ")
        }
    )
}
