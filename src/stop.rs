//! The daemon's stop flag, as every task holds it: a `watch` receiver that turns true once, when
//! the daemon shuts down. A leaf: the tasks learn that they must stop without knowing the
//! daemon that stops them (mini-redis's `Shutdown` is the model).

use tokio::sync::watch;

/// Completes once the stop flag turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
