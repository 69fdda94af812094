//! The served certificate, worker by worker: one connection reaches one worker, and nginx with
//! `worker_processes 4` has four, each of which may keep the old certificate.
//!
//! So after a reload the daemon looks several times (`served::confirm`; this file keeps what
//! the looks found and decides), and at each look finds who accepted:
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

use super::served::Served;
use crate::config::ServedCert;
use crate::process::ProcInfo;
use crate::process::holders::Holders;
use crate::scan::CertOnDisk;

/// Looks when one is enough (the workers cannot be told apart), as before.
const ONE_CONNECTION_LOOKS: u32 = 7;
/// Looks per holder, when they can be: enough to reach each of a few workers the kernel
/// chooses among at random.
const LOOKS_PER_WORKER: u32 = 8;
/// Most looks.
const MOST_LOOKS: u32 = 64;
/// Most looks at once.
const AT_ONCE: u32 = 4;

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
pub(super) struct Tally {
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
    pub(super) last_matched: bool,
}

impl Tally {
    /// Records one look; whether it learned something (a worker reached for the first time or
    /// serving something else than before).
    pub(super) fn record(&mut self, served: &Served, holders: Result<Holders, String>) -> bool {
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
    pub(super) fn confirmed(&self) -> bool {
        if self.per_worker() {
            self.holders
                .iter()
                .all(|h| self.by_pid.get(&h.pid).is_some_and(|w| w.served.matches))
        } else {
            self.last_matched
        }
    }

    /// How many looks may be made.
    pub(super) fn budget(&self) -> u32 {
        if self.per_worker() {
            (LOOKS_PER_WORKER * self.most as u32).clamp(ONE_CONNECTION_LOOKS, MOST_LOOKS)
        } else {
            ONE_CONNECTION_LOOKS
        }
    }

    /// How many looks to make at once: one until the workers are known, then one per worker,
    /// up to [`AT_ONCE`].
    pub(super) fn at_once(&self) -> u32 {
        (self.holders.len() as u32).clamp(1, AT_ONCE)
    }

    /// What a current holder served at its last look (the first in pid order), when the
    /// workers are told apart and one was reached.
    pub(super) fn current_served(&self) -> Option<&Served> {
        self.holders
            .iter()
            .find_map(|h| self.by_pid.get(&h.pid))
            .map(|w| &w.served)
    }

    /// The current holders, reached or not.
    pub(super) fn workers(&self) -> Workers {
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

/// `pid 12 (nginx)`, with the backend it was seen through.
fn worker(w: &WorkerSeen) -> String {
    match w.via {
        Some(via) => format!("{} (seen through pid {via})", w.info.shown()),
        None => w.info.shown(),
    }
}

/// The success message.
pub(super) fn confirmed(sc: &ServedCert, last: &Served, tally: &Tally) -> String {
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
pub(super) fn failure(
    sc: &ServedCert,
    disk: &[CertOnDisk],
    tally: &Tally,
    tries: u32,
    last: &str,
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::fingerprint::FingerprintKey;
    use std::time::{Duration, SystemTime};

    fn nginx(pid: i32, ppid: i32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            comm: "nginx".into(),
            state: 'S',
            start_ticks: 0,
            threads: 1,
        }
    }

    /// The disk's certificate (`new`) or the old one.
    fn served(new: bool) -> Served {
        let key = FingerprintKey::new(vec![7; 32]);
        Served {
            fingerprint: key.digest(if new { b"new" } else { b"old" }),
            serial: if new { "0B" } else { "0A" }.into(),
            not_after: SystemTime::UNIX_EPOCH,
            matches: new,
        }
    }

    /// Holders `workers` (children of pid 1), the look accepted by `by` (a child of `parent`).
    fn looked(workers: &[i32], by: i32, parent: i32) -> Result<Holders, String> {
        Ok(Holders {
            workers: workers.iter().map(|&p| nginx(p, 1)).collect(),
            accepted_by: Some(nginx(by, parent)),
            ..Holders::default()
        })
    }

    fn endpoint() -> ServedCert {
        ServedCert {
            host: "127.0.0.1".into(),
            port: 8443,
            postgres: false,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_look_that_meets_an_old_worker_on_its_way_out_is_not_what_the_app_serves() {
        let mut t = Tally::default();
        // The new worker (11) serves the disk's certificate while the old one (10) still holds
        // the port; then a look reaches 10, which has closed its listener (11 alone holds it
        // now), with the old certificate: that completes the tally, but is not the answer.
        t.record(&served(true), looked(&[10, 11], 11, 1));
        assert!(!t.confirmed());
        t.record(&served(false), looked(&[11], 10, 1));
        assert!(t.confirmed());
        assert_eq!(t.current_served().map(|s| s.matches), Some(true));
        let w = t.workers();
        assert!(w.per_worker && w.seen.iter().all(|w| w.served.matches));
        assert!(
            w.note
                .is_some_and(|n| n.contains("does not hold the listening socket"))
        );
    }

    /// Holders, accepted by, the new certificate served, learned, confirmed, not checked.
    type Step = (&'static [i32], i32, bool, bool, bool, &'static [i32]);

    #[test]
    fn every_holder_must_be_seen_serving_the_disk() {
        let mut t = Tally::default();
        let steps: &[Step] = &[
            (&[10, 11], 10, true, true, false, &[11]),
            (&[10, 11], 10, true, false, false, &[11]),
            (&[10, 11], 11, false, true, false, &[]),
            (&[10, 11], 11, false, false, false, &[]),
            (&[10, 11], 11, true, true, true, &[]),
            // A new worker replaces one: it must be seen too; the gone one no longer counts.
            (&[11, 12], 11, true, false, false, &[12]),
            (&[11, 12], 12, true, true, true, &[]),
        ];
        for (i, &(holders, by, new, learned, confirmed, unchecked)) in steps.iter().enumerate() {
            assert_eq!(
                t.record(&served(new), looked(holders, by, 1)),
                learned,
                "step {i}"
            );
            assert_eq!(t.confirmed(), confirmed, "step {i}");
            let w = t.workers();
            assert!(w.per_worker && w.note.is_none(), "step {i}");
            let pids: Vec<i32> = w.not_checked.iter().map(|p| p.pid).collect();
            assert_eq!(pids, unchecked, "step {i}");
        }
        assert_eq!((t.budget(), t.at_once()), (16, 2));
        assert_eq!(t.workers().counts(), (2, 0, 0));
    }

    #[test]
    fn a_worker_serving_the_old_certificate_and_one_not_reached_are_named() {
        let mut t = Tally::default();
        t.record(&served(false), looked(&[10, 11, 12], 10, 1));
        t.record(&served(true), looked(&[10, 11, 12], 11, 1));
        assert_eq!(t.workers().counts(), (1, 1, 1));
        let cert = CertOnDisk {
            path: "/etc/tls/tls.crt".into(),
            fingerprint: served(true).fingerprint,
            serial: "0B".into(),
            not_after: SystemTime::UNIX_EPOCH,
        };
        let msg = failure(&endpoint(), &[cert], &t, 2, "");
        assert!(msg.contains("pid 10 (nginx) serves serial 0A"), "{msg}");
        assert!(msg.contains("pid 12 (nginx) not checked"), "{msg}");
        assert!(msg.contains("/etc/tls/tls.crt serial 0B"), "{msg}");
        assert!(!msg.contains("pid 11"), "{msg}");
        // Many holders: the looks are bounded.
        t.record(&served(true), looked(&(1..=20).collect::<Vec<_>>(), 1, 1));
        assert_eq!((t.budget(), t.at_once()), (MOST_LOOKS, AT_ONCE));
    }

    #[test]
    fn a_backend_stands_for_the_holder_that_forked_it() {
        let mut t = Tally::default();
        assert!(t.record(&served(true), looked(&[5], 77, 5)));
        assert!(t.confirmed());
        let w = t.workers();
        assert_eq!((w.seen[0].info.pid, w.seen[0].via), (5, Some(77)));
        let msg = confirmed(&endpoint(), &served(true), &t);
        assert!(
            msg.contains("pid 5 (nginx) (seen through pid 77) serial 0B"),
            "{msg}"
        );
        // A look that reached a process neither holding nor forked by a holder proves nothing.
        let mut t = Tally::default();
        assert!(!t.record(&served(true), looked(&[5], 99, 1)));
        assert!(!t.confirmed());
        assert!(
            t.workers()
                .note
                .unwrap()
                .contains("1 look(s) reached a process")
        );
    }

    #[test]
    fn workers_that_cannot_be_told_apart_fall_back_to_one_matching_look() {
        let mut t = Tally::default();
        let why = "cannot read the fds of pid 42 (nginx) (uid 101): the daemon runs as uid 1000";
        assert!(!t.record(&served(false), Err(why.into())));
        assert!(!t.confirmed());
        assert_eq!((t.budget(), t.at_once()), (ONE_CONNECTION_LOOKS, 1));
        t.record(&served(true), Err(why.into()));
        assert!(t.confirmed());
        let w = t.workers();
        assert!(!w.per_worker && w.seen.is_empty());
        assert_eq!(w.note.unwrap(), format!("{why}; one connection checked"));
        let msg = confirmed(&endpoint(), &served(true), &t);
        assert!(
            msg.contains("serial 0B, look 2); cannot read the fds"),
            "{msg}"
        );
    }
}
