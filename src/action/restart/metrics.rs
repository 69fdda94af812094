//! The environment restart's own series: whether the app's environment, when compared, holds
//! another value of a key than the files (`environment_stale`), declared here beside its atomics.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use prometheus::proto::Metric;

use crate::report::family::{Family, flag, gauge};

pub(crate) const ENVIRONMENT_STALE: Family = Family::gauge(
    "environment_stale",
    "1 while the app's environment holds another value of a key than the file (--consumed-as env): only a restart applies it.",
);

/// `--consumed-as env`: what the last comparison of the app's environment found.
#[derive(Debug, Default)]
pub(crate) struct EnvironmentSeries {
    /// Compared at least once.
    compared: AtomicBool,
    /// The app's environment differs from the files.
    differs: AtomicBool,
}

impl EnvironmentSeries {
    /// The app's environment was compared with the files: `differs` when some key holds another
    /// value.
    pub(crate) fn compared(&self, differs: bool) {
        self.differs.store(differs, Relaxed);
        self.compared.store(true, Relaxed);
    }

    /// The sample of [`ENVIRONMENT_STALE`] for the target `name`, once compared.
    pub(crate) fn sample(&self, name: &str) -> Option<Metric> {
        (flag(&self.compared) > 0.0).then(|| gauge(&[("target", name)], flag(&self.differs)))
    }
}
