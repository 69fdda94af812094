//! Samples and families of the exposition's data model (the `prometheus` crate's), shared by the
//! daemon's own series ([`super::exposition`]) and other tools' ([`super::compat`]).

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

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

pub(super) fn gauge(labels: &[(&str, &str)], v: f64) -> Metric {
    let mut m = labelled(labels);
    let mut g = Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}

pub(super) fn counter(labels: &[(&str, &str)], v: u64) -> Metric {
    let mut m = labelled(labels);
    let mut c = Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}
