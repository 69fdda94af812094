//! Bookkeeping after a scan: the status document, the metrics and the logs. Each change (a file
//! the app can no longer read, content held back, identity drift) is logged once, when it
//! happens, with what to do about it; nothing is logged again while it stays the same.

use std::collections::{HashMap, HashSet};
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
    /// Files with a `file_access_ok` series.
    access_series: HashSet<PathBuf>,
    /// Files with a `cert_expiry_timestamp_seconds` series.
    cert_series: HashSet<PathBuf>,
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
            self.metrics.changes_total.with_label_values(&[name]).inc();
            self.metrics
                .last_change_timestamp_seconds
                .with_label_values(&[name])
                .set(unix(now));
            let fp = scan.fingerprint.map(|f| f.short()).unwrap_or_default();
            tracing::info!(watch = name, fingerprint = %fp, files = scan.files.len(), "content changed");
        } else {
            drop(g);
        }
        self.metrics
            .watched_files
            .with_label_values(&[name])
            .set(scan.files.len() as i64);
        self.record_held_back(j, a);
        self.record_access(j, a);
        self.record_certs(j, scan);
        if a.identity.drift != j.drift {
            match &a.identity.drift {
                Some(d) => tracing::warn!(watch = name, "identity drift: {d}"),
                None => tracing::info!(watch = name, "identity drift resolved"),
            }
            j.drift = a.identity.drift.clone();
        }
        self.metrics
            .identity_drift
            .with_label_values(&[name])
            .set(i64::from(j.drift.is_some()));
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
            .content_blocked
            .with_label_values(&[name])
            .set(i64::from(!a.held_back.is_empty()));
    }

    fn record_access(&self, j: &mut Journal, a: &Assessment) {
        let name = self.group.name.as_str();
        let mut seen = HashSet::new();
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
            self.metrics
                .file_access_ok
                .with_label_values(&[name, &shown])
                .set(i64::from(v.readable));
            seen.insert(path.clone());
        }
        for gone in j.access_series.difference(&seen) {
            let _ = self
                .metrics
                .file_access_ok
                .remove_label_values(&[name, &gone.display().to_string()]);
        }
        j.readable.retain(|p, _| seen.contains(p));
        j.access_series = seen;
    }

    fn record_certs(&self, j: &mut Journal, scan: &Scan) {
        let name = self.group.name.as_str();
        let mut seen = HashSet::new();
        for (path, expiry) in &scan.cert_expiry {
            let shown = path.display().to_string();
            self.metrics
                .cert_expiry_timestamp_seconds
                .with_label_values(&[name, &shown])
                .set(unix(*expiry));
            seen.insert(path.clone());
        }
        for gone in j.cert_series.difference(&seen) {
            let _ = self
                .metrics
                .cert_expiry_timestamp_seconds
                .remove_label_values(&[name, &gone.display().to_string()]);
        }
        j.cert_series = seen;
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
        self.metrics
            .polling
            .with_label_values(&[name])
            .set(i64::from(mem.polling));
        lock(&self.state.groups[self.index]).watch_mode = mode;
    }
}
