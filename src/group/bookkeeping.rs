//! Bookkeeping after a scan: the status board, the metrics and the log lines. Each change (a
//! file the app can no longer read, content held back, identity drift) is logged once, when it
//! happens, with what to do about it; nothing is logged again while it stays the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::{GroupTask, Memory};
use crate::assess::{Assessment, Hold, unreadable_by_sidecar};
use crate::lock;
use crate::report::metrics::WatchErrorKind;
use crate::report::status::{LastScan, WatchMode};
use crate::scan::Scan;
use crate::text;
use crate::watch::WatchError;

/// Most newly skipped entries logged one by one after a scan (the rest are counted).
const SKIPPED_LOGGED: usize = 20;

/// What was last reported for a group.
#[derive(Debug, Default)]
pub(super) struct Books {
    /// Reasons the content was held back.
    held_back: Vec<Hold>,
    /// Since when it is held back.
    held_since: Option<Instant>,
    /// Whether the hold was reported as an error (after the consistency timeout).
    escalated: bool,
    /// Last verdict per file.
    readable: HashMap<PathBuf, bool>,
    /// Last drift message.
    drift: Option<String>,
    /// Last PEM material that could not be checked.
    not_checked: Vec<String>,
    /// Last skipped entries.
    skipped: Vec<String>,
}

impl Books {
    /// When a hold becomes an error: a scan is due then.
    pub(super) fn escalation_due(&self, timeout: Duration) -> Option<Instant> {
        self.held_since
            .filter(|_| !self.escalated)
            .and_then(|since| since.checked_add(timeout))
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl GroupTask {
    /// A new version is about to be published: counted and logged first.
    pub(super) fn note_change(&self, scan: &Scan) {
        let now = SystemTime::now();
        {
            let mut g = lock(&self.status);
            g.changes += 1;
            g.last_change = Some(now);
        }
        self.metrics.changed(unix(now));
        let fp = scan.fingerprint.map(|f| f.short()).unwrap_or_default();
        tracing::info!(fingerprint = %fp, files = scan.files.len(), "content changed");
    }

    /// Status, metrics and logs of one scan.
    pub(super) fn report(&self, j: &mut Books, scan: &Scan, a: &Assessment, last: LastScan) {
        lock(&self.status).update(scan, a, last, &self.key);
        self.metrics.set_watched_files(scan.files.len());
        self.report_holds(j, scan, a);
        self.report_files(j, a, scan);
        if a.identity.drift != j.drift {
            match &a.identity.drift {
                Some(d) => tracing::warn!("identity drift: {d}"),
                None => tracing::info!("identity drift resolved"),
            }
            j.drift = a.identity.drift.clone();
        }
        self.metrics.set_identity_drift(j.drift.is_some());
        if scan.not_checked != j.not_checked {
            for n in &scan.not_checked {
                tracing::info!("{n}");
            }
            j.not_checked = scan.not_checked.clone();
        }
        if scan.skipped != j.skipped {
            let before: HashSet<&String> = j.skipped.iter().collect();
            let new: Vec<&String> = scan
                .skipped
                .iter()
                .filter(|s| !before.contains(s))
                .collect();
            for s in new.iter().take(SKIPPED_LOGGED) {
                tracing::info!("{s}");
            }
            if new.len() > SKIPPED_LOGGED {
                tracing::info!(
                    "{} more entries skipped (listed in /status)",
                    new.len() - SKIPPED_LOGGED
                );
            }
            j.skipped = scan.skipped.clone();
        }
    }

    fn report_holds(&self, j: &mut Books, scan: &Scan, a: &Assessment) {
        if a.held_back != j.held_back {
            if a.held_back.is_empty() {
                tracing::info!("content complete and consistent again");
            } else {
                if unreadable_by_sidecar(scan) {
                    self.daemon_metrics.watch_error(WatchErrorKind::Read);
                }
                let reasons: Vec<&str> = a.held_back.iter().map(|h| h.detail.as_str()).collect();
                tracing::warn!(reasons = ?reasons,
                    "content held back: the app keeps its current version until this is resolved");
            }
            j.held_back = a.held_back.clone();
        }
        if a.held_back.is_empty() {
            j.held_since = None;
            j.escalated = false;
        } else {
            let since = *j.held_since.get_or_insert_with(Instant::now);
            let timeout = self.cfg.consistency_timeout;
            if !j.escalated && since.elapsed() >= timeout {
                j.escalated = true;
                let reasons: Vec<&str> = a.held_back.iter().map(|h| h.detail.as_str()).collect();
                tracing::error!(held_for = ?since.elapsed(), reasons = ?reasons,
                    "content still held back after --consistency-timeout: fix the content on disk");
            }
        }
        self.metrics.set_content_blocked(!a.held_back.is_empty());
    }

    /// Logs each change of a verdict once, and exports the verdicts and certificate expiries.
    fn report_files(&self, j: &mut Books, a: &Assessment, scan: &Scan) {
        let mut access = BTreeMap::new();
        for (path, v) in &a.verdicts {
            let shown = text::path(path);
            let before = j.readable.insert(path.clone(), v.readable);
            if before != Some(v.readable) {
                match (v.readable, before) {
                    (false, _) => tracing::warn!(path = %shown,
                        "the app cannot read it: {}; {}", v.reason, v.hint.as_deref().unwrap_or("")),
                    (true, Some(false)) => {
                        tracing::info!(path = %shown, "readable by the app again")
                    }
                    _ => {}
                }
            }
            access.insert(shown, v.readable);
        }
        let current: HashSet<&PathBuf> = a.verdicts.iter().map(|(p, _)| p).collect();
        j.readable.retain(|p, _| current.contains(p));
        let certs = scan
            .cert_expiry
            .iter()
            .map(|(p, t)| (text::path(p), unix(*t)))
            .collect();
        let tokens = scan
            .tokens
            .iter()
            .map(|(p, c)| (text::path(p), c.exp.map(unix)))
            .collect();
        self.metrics.set_files(access, certs, tokens);
    }

    pub(super) fn report_watch_mode(&self, mem: &mut Memory, watched: Result<(), WatchError>) {
        let (mode, fallback) = match &watched {
            Ok(()) => {
                if mem.polling {
                    tracing::info!("inotify watches set up again: polling stopped");
                }
                mem.polling = false;
                (WatchMode::Inotify, None)
            }
            Err(_) if self.timing.forced_poll => {
                mem.polling = true;
                (WatchMode::Poll, None)
            }
            Err(e) => {
                if !mem.polling {
                    tracing::warn!(interval = ?self.timing.poll_interval, "{e}: polling instead");
                }
                mem.polling = true;
                (WatchMode::PollFallback, Some(e.to_string()))
            }
        };
        self.metrics.set_polling(mem.polling);
        let mut g = lock(&self.status);
        g.watch_mode = mode;
        g.watch_fallback = fallback;
    }
}
