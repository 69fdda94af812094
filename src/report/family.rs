//! A metric family's declaration (name, help, type: written once, beside the atomic it reads)
//! and the samples of the exposition's data model (the `prometheus` crate's), shared by the
//! daemon's own series ([`super::metrics`]) and other tools' ([`super::compat_series`]); the
//! exposition written one family at a time ([`Emit`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// A family of the daemon's own series: its name after `secret_reloader_`, its help and its
/// type. Each is a constant beside the atomic it is read from.
pub(crate) struct Family {
    /// The name after `secret_reloader_`.
    pub name: &'static str,
    /// What it means.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricType,
}

impl Family {
    /// A counter.
    pub(crate) const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::COUNTER,
        }
    }

    /// A gauge.
    pub(crate) const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::GAUGE,
        }
    }

    /// A histogram.
    pub(crate) const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::HISTOGRAM,
        }
    }

    /// The family with its samples.
    pub(crate) fn of(&self, metrics: Vec<Metric>) -> MetricFamily {
        named(
            format!("secret_reloader_{}", self.name),
            self.help,
            self.kind,
            metrics,
        )
    }
}

/// The exposition being written, one family at a time: a scrape of thousands of groups holds
/// one family's data model at a time, not all of them.
pub(super) struct Emit {
    /// The text so far.
    pub buf: Vec<u8>,
}

impl Emit {
    /// Encodes `f` (a family without samples is left out).
    pub(crate) fn push(&mut self, f: MetricFamily) {
        if f.get_metric().is_empty() {
            return;
        }
        if let Err(e) = TextEncoder::new().encode(std::slice::from_ref(&f), &mut self.buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
    }

    /// Encodes each of `families`.
    pub(crate) fn extend(&mut self, families: Vec<MetricFamily>) {
        for f in families {
            self.push(f);
        }
    }
}

/// A flag as a gauge's value.
pub(crate) fn flag(b: &AtomicBool) -> f64 {
    if b.load(Relaxed) { 1.0 } else { 0.0 }
}

/// A family with its full name.
pub(super) fn named(
    name: String,
    help: &str,
    kind: MetricType,
    metrics: Vec<Metric>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name);
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// A metric with `labels`, in name order as registries write them.
pub(super) fn labelled(labels: &[(&str, &str)]) -> Metric {
    let mut sorted = labels.to_vec();
    sorted.sort_by_key(|(k, _)| *k);
    let mut m = Metric::default();
    m.set_label(
        sorted
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.to_string());
                l
            })
            .collect(),
    );
    m
}

/// A gauge sample.
pub(crate) fn gauge(labels: &[(&str, &str)], v: f64) -> Metric {
    let mut m = labelled(labels);
    let mut g = Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}

/// A counter sample.
pub(super) fn counter(labels: &[(&str, &str)], v: u64) -> Metric {
    let mut m = labelled(labels);
    let mut c = Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}
