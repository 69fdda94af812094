//! What the daemon tells the world: the status board behind `/status`, the metrics behind
//! `/metrics`, the admin server that serves both (and the probes), and the log lines.
//!
//! - [`status`]: the status board, one entry per group and per target;
//! - [`metrics`]: every metric, registered per component;
//! - [`server`]: the admin server, on its own thread;
//! - [`logging`]: text or JSON log lines on stderr.

mod exposition;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod status;
