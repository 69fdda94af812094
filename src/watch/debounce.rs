//! When to scan after filesystem events: the debounce state machine of one watch group.
//!
//! Pure and clock-free (every call takes `now`), so its timing is tested without a filesystem.
//!
//! - A kubelet `..data` swap is a commit point: scan at once, no quiet period.
//! - Other writers have no commit point: wait until events stop for the quiet period, but never
//!   longer than the cap after the first event (a writer that never pauses still gets scanned).
//! - A file written but not closed yet (`IN_MODIFY` without `IN_CLOSE_WRITE`) is a write in
//!   progress: wait for its close, up to the cap, so a slow writer is not read half-way.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What an event means for the timing of the next scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Kubelet's `..data` swap: the new version is complete now.
    Commit,
    /// Data written to this file (it may still be open).
    Write(PathBuf),
    /// This file was closed after writing.
    Closed(PathBuf),
    /// Anything else that may have changed the content (create, rename, delete, chmod, overflow).
    Other,
}

/// Debounce state of one watch group.
#[derive(Debug)]
pub(crate) struct Debounce {
    /// Quiet period.
    quiet: Duration,
    /// Cap on the total wait from the first pending event.
    max_wait: Duration,
    /// First event not yet covered by a scan.
    first: Option<Instant>,
    /// Latest event not yet covered by a scan.
    last: Option<Instant>,
    /// A commit point is pending: scan immediately.
    commit: bool,
    /// Files written and not yet closed.
    writing: HashSet<PathBuf>,
    /// File data was written (or a written file closed) since the last fire.
    wrote: bool,
}

impl Debounce {
    /// A debouncer with the given quiet period and cap.
    pub(crate) fn new(quiet: Duration, max_wait: Duration) -> Self {
        Debounce {
            quiet,
            max_wait: max_wait.max(quiet),
            first: None,
            last: None,
            commit: false,
            writing: HashSet::new(),
            wrote: false,
        }
    }

    /// Records an event seen at `now`.
    pub(crate) fn event(&mut self, now: Instant, signal: Signal) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        match signal {
            Signal::Commit => self.commit = true,
            Signal::Write(p) => {
                self.writing.insert(p);
                self.wrote = true;
            }
            Signal::Closed(p) => {
                self.writing.remove(&p);
                self.wrote = true;
            }
            Signal::Other => {}
        }
    }

    /// When the next scan is due; `None` when nothing is pending.
    pub(crate) fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.commit {
            return Some(first);
        }
        let cap = first + self.max_wait;
        if !self.writing.is_empty() {
            return Some(cap);
        }
        Some((last + self.quiet).min(cap))
    }

    /// Whether file data was written since the last [`Debounce::fire`] (renames, creations and
    /// removals swap whole files: what a scan read then was complete either way).
    pub(crate) fn wrote(&self) -> bool {
        self.wrote
    }

    /// Whether a commit point is pending (the scan it causes is the fast path).
    pub(crate) fn is_commit(&self) -> bool {
        self.commit
    }

    /// A scan starts now: everything seen so far is covered by it.
    pub(crate) fn fire(&mut self) {
        self.first = None;
        self.last = None;
        self.commit = false;
        self.writing.clear();
        self.wrote = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Table: events at offsets (ms) → expected due offset (ms) after the last event.
    #[test]
    fn quiet_period_and_cap() {
        let t0 = Instant::now();
        let cases: &[(&[u64], Option<u64>)] = &[
            (&[], None),
            (&[0], Some(100)),
            (&[0, 50], Some(150)),
            (&[0, 50, 120], Some(220)),
            // Events every 90 ms forever: the cap (1 s after the first) wins.
            (
                &[0, 90, 180, 270, 360, 450, 540, 630, 720, 810, 900, 990],
                Some(1000),
            ),
        ];
        for (events, due) in cases {
            let mut d = Debounce::new(ms(100), ms(1000));
            for e in *events {
                d.event(t0 + ms(*e), Signal::Other);
            }
            assert_eq!(d.due(), due.map(|x| t0 + ms(x)), "events {events:?}");
        }
    }

    #[test]
    fn commit_is_immediate_and_fire_resets() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(100), ms(1000));
        d.event(t0, Signal::Other);
        d.event(t0 + ms(5), Signal::Commit);
        assert!(d.is_commit());
        assert_eq!(d.due(), Some(t0));
        d.fire();
        assert_eq!(d.due(), None);
        assert!(!d.is_commit());
        d.event(t0 + ms(10), Signal::Other);
        assert_eq!(d.due(), Some(t0 + ms(110)));
    }

    #[test]
    fn only_data_writes_count_as_still_changing() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(100), ms(1000));
        d.event(t0, Signal::Other);
        d.event(t0, Signal::Commit);
        assert!(!d.wrote(), "renames and creations swap whole files");
        d.event(t0, Signal::Write(PathBuf::from("/v/token")));
        assert!(d.wrote());
        d.fire();
        assert!(!d.wrote());
    }

    #[test]
    fn open_writer_waits_for_close_up_to_the_cap() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(100), ms(1000));
        let f = PathBuf::from("/v/tls.key");
        d.event(t0, Signal::Write(f.clone()));
        assert_eq!(
            d.due(),
            Some(t0 + ms(1000)),
            "a write in progress waits for its close"
        );
        d.event(t0 + ms(400), Signal::Closed(f));
        assert_eq!(
            d.due(),
            Some(t0 + ms(500)),
            "closed: the quiet period runs from the close"
        );
    }
}
