//! SIGTERM and SIGINT: an orderly shutdown that always ends.
//!
//! Kubernetes sends SIGTERM to start a graceful shutdown; Ctrl-C sends SIGINT. A thread of its
//! own takes them ([`super::signals`]), so they are seen whatever the runtime is doing, and tells
//! the runtime. The daemon then stops its watches and gives actions in flight `--shutdown-grace`
//! to finish. Should the daemon not have ended `grace` + [`WATCHDOG_MARGIN`] after the signal (a
//! hang nothing else can end), the same thread ends the process with exit code 1; a second signal
//! ends it at once.

use std::time::Duration;

/// Time beyond the grace period before the process is ended regardless.
pub const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

/// Completes once the daemon's stop flag turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
