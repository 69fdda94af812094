//! The atomics the series are kept in: an `f64` in an atomic, and a counter per value of a label
//! enum, each paired with its value (no array position to keep in step with the enum's order).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// An f64 in an atomic.
#[derive(Debug, Default)]
pub(in crate::report) struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// Sets the value.
    pub(in crate::report) fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }

    /// The value.
    pub(in crate::report) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    /// Adds `v`.
    pub(in crate::report) fn add(&self, v: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |b| {
            Some((f64::from_bits(b) + v).to_bits())
        });
    }
}

/// A label's values, all known in advance (exported from the start, so that `rate()` works at
/// once), and its text.
pub(crate) trait Label: Copy + PartialEq + 'static {
    /// Every value, in the order the series are written.
    const ALL: &'static [Self];
    /// The label's value as exported.
    fn as_str(self) -> &'static str;
}

/// A counter per value of the label `L`.
#[derive(Debug)]
pub(crate) struct Counters<L: 'static> {
    by: Vec<(L, AtomicU64)>,
}

impl<L: Label> Default for Counters<L> {
    fn default() -> Self {
        Counters {
            by: L::ALL.iter().map(|l| (*l, AtomicU64::new(0))).collect(),
        }
    }
}

impl<L: Label> Counters<L> {
    /// Counts one of `label`.
    pub(crate) fn add(&self, label: L) {
        if let Some((_, n)) = self.by.iter().find(|(l, _)| *l == label) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// Every value with its count, in the label's order.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        self.by.iter().map(|(l, n)| (*l, n.load(Relaxed)))
    }

    /// The sum over every value.
    pub(in crate::report) fn total(&self) -> u64 {
        self.counts().map(|(_, n)| n).sum()
    }
}
