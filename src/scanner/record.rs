//! Bookkeeping after a scan: the status document, the metrics and the logs. Each change (a file
//! the app can no longer read, content held back, identity drift) is logged once, when it
//! happens, with what to do about it; nothing is logged again while it stays the same.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::{GroupScanner, Memory};
use crate::assess::Assessment;
use crate::snapshot::Scan;
use crate::state::lock;
use crate::watch::WatchError;

/// What was last reported for a group.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Reasons the content was held back.
    held_back: Vec<String>,
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
}

impl Journal {
    /// When a hold becomes an error: a scan is due then.
    pub(super) fn escalation_due(&self, timeout: Duration) -> Option<Instant> {
        self.held_since
            .filter(|_| !self.escalated)
            .map(|since| since + timeout)
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl GroupScanner {
    /// Status, metrics and logs of one scan.
    pub(super) fn record(&self, j: &mut Journal, scan: &Scan, a: &Assessment, changed: bool) {
        let name = self.group.name.as_str();
        let mut g = lock(&self.state.groups[self.index]);
        g.record_scan(scan, a);
        if changed {
            let now = SystemTime::now();
            g.changes += 1;
            g.last_change = Some(now);
            drop(g);
            self.metrics.group(self.index).changed(unix(now));
            let fp = scan.fingerprint.map(|f| f.short()).unwrap_or_default();
            tracing::info!(watch = name, fingerprint = %fp, files = scan.files.len(), "content changed");
        } else {
            drop(g);
        }
        self.metrics
            .group(self.index)
            .set_watched_files(scan.files.len());
        self.record_held_back(j, a);
        self.record_files(j, a, scan);
        if a.identity.drift != j.drift {
            match &a.identity.drift {
                Some(d) => tracing::warn!(watch = name, "identity drift: {d}"),
                None => tracing::info!(watch = name, "identity drift resolved"),
            }
            j.drift = a.identity.drift.clone();
        }
        self.metrics
            .group(self.index)
            .set_identity_drift(j.drift.is_some());
        if scan.not_checked != j.not_checked {
            for n in &scan.not_checked {
                tracing::info!(watch = name, "{n}");
            }
            j.not_checked = scan.not_checked.clone();
        }
        for s in &scan.skipped {
            tracing::debug!(watch = name, "{s}");
        }
    }

    fn record_held_back(&self, j: &mut Journal, a: &Assessment) {
        let name = self.group.name.as_str();
        if a.held_back != j.held_back {
            if a.held_back.is_empty() {
                tracing::info!(watch = name, "content complete and consistent again");
            } else {
                if a.held_back.iter().any(|p| p.starts_with("cannot read")) {
                    self.metrics.watch_error("read");
                }
                tracing::warn!(watch = name, reasons = ?a.held_back,
                    "content held back: the app keeps its current version until this is resolved");
            }
            j.held_back = a.held_back.clone();
        }
        if a.held_back.is_empty() {
            j.held_since = None;
            j.escalated = false;
        } else {
            let since = *j.held_since.get_or_insert_with(Instant::now);
            let timeout = self.group.consistency_timeout;
            if !j.escalated && since.elapsed() >= timeout {
                j.escalated = true;
                tracing::error!(watch = name, held_for = ?since.elapsed(), reasons = ?a.held_back,
                    "content still held back after --consistency-timeout: fix the content on disk");
            }
        }
        self.metrics
            .group(self.index)
            .set_content_blocked(!a.held_back.is_empty());
    }

    /// Logs each change of a verdict once, and exports the verdicts and certificate expiries.
    fn record_files(&self, j: &mut Journal, a: &Assessment, scan: &Scan) {
        let name = self.group.name.as_str();
        let mut access = BTreeMap::new();
        for (path, v) in &a.verdicts {
            let shown = path.display().to_string();
            let before = j.readable.insert(path.clone(), v.readable);
            if before != Some(v.readable) {
                match (v.readable, before) {
                    (false, _) => tracing::warn!(watch = name, path = %shown,
                        "the app cannot read it: {}; {}", v.reason, v.hint.as_deref().unwrap_or("")),
                    (true, Some(false)) => {
                        tracing::info!(watch = name, path = %shown, "readable by the app again")
                    }
                    _ => {}
                }
            }
            access.insert(shown, v.readable);
        }
        j.readable
            .retain(|p, _| a.verdicts.iter().any(|(q, _)| q == p));
        let expiry = scan
            .cert_expiry
            .iter()
            .map(|(p, t)| (p.display().to_string(), unix(*t)))
            .collect();
        self.metrics.group(self.index).set_files(access, expiry);
    }

    pub(super) fn record_watch_mode(&self, mem: &mut Memory, watched: Result<(), WatchError>) {
        let name = self.group.name.as_str();
        let mode = match &watched {
            Ok(()) => {
                if mem.polling {
                    tracing::info!(
                        watch = name,
                        "inotify watches set up again: polling stopped"
                    );
                }
                mem.polling = false;
                "inotify".to_string()
            }
            Err(_) if self.forced_poll => {
                mem.polling = true;
                "poll".to_string()
            }
            Err(e) => {
                if !mem.polling {
                    tracing::warn!(watch = name, interval = ?self.poll_interval, "{e}: polling instead");
                }
                mem.polling = true;
                format!("poll (fallback: {e})")
            }
        };
        self.metrics.group(self.index).set_polling(mem.polling);
        lock(&self.state.groups[self.index]).watch_mode = mode;
    }
}
