//! The atomics the series are kept in: an `f64` in an atomic, a counter per value of a label
//! enum, each paired with its value (no array position to keep in step with the enum's order),
//! and a histogram of durations.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus::proto::{Bucket, Histogram, Metric};

use crate::report::family::labelled;

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

/// Upper bounds of the duration histograms, in seconds.
const DURATION_BOUNDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of durations: how many fell in each bucket of `DURATION_BOUNDS` (past the last
/// one, only in the count), their count and their sum.
#[derive(Debug, Default)]
pub(in crate::report) struct Durations {
    /// Observations per bucket (not cumulative).
    buckets: [AtomicU64; DURATION_BOUNDS.len()],
    /// Every observation.
    count: AtomicU64,
    /// Their sum, seconds.
    sum: AtomicF64,
}

impl Durations {
    /// Records one duration.
    pub(in crate::report) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = DURATION_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum.add(secs);
    }

    /// The histogram sample, with `labels`.
    pub(in crate::report) fn sample(&self, labels: &[(&str, &str)]) -> Metric {
        let mut m = labelled(labels);
        let mut h = Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(DURATION_BOUNDS.len());
        for (bound, n) in DURATION_BOUNDS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        h.set_bucket(buckets);
        h.set_sample_count(self.count.load(Relaxed));
        h.set_sample_sum(self.sum.get());
        m.set_histogram(h);
        m
    }
}
