//! What the daemon tells the world: the status board behind `/status`, the metrics behind
//! `/metrics`, the admin server that serves both (and the probes), and the log lines.
//!
//! - [`status`]: the status board, one entry per group and per target;
//! - [`metrics`]: every metric, registered per component (`compat_series`: the series of
//!   prometheus-config-reloader and configmap-reload, for `--compat-metrics`);
//! - [`server`]: the admin server, on its own thread;
//! - `resources`: running out of descriptors, threads or memory, said and counted;
//! - [`logging`]: text or JSON log lines on stderr.

mod compat_series;
mod exposition;
pub(crate) mod family;
pub mod logging;
pub mod metrics;
pub(crate) mod resources;
pub mod server;
pub mod status;
