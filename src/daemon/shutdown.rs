//! SIGTERM and SIGINT: an orderly shutdown that always ends.
//!
//! Kubernetes sends SIGTERM to start a graceful shutdown; Ctrl-C sends SIGINT. A thread of its
//! own waits for them (signal-hook), so they are seen whatever the runtime is doing, and tells
//! the runtime. The daemon then stops its watches and gives actions in flight `--shutdown-grace`
//! to finish. Should the daemon not have ended `grace` + [`WATCHDOG_MARGIN`] after the signal (a
//! hang nothing else can end), the same thread ends the process with exit code 1; a second signal
//! ends it at once.

use std::future::Future;
use std::io;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Time beyond the grace period before the process is ended regardless.
pub const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

/// Installs the handlers now; the returned future completes at the first SIGTERM or SIGINT.
pub fn termination(grace: Duration) -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut tx = Some(tx);
            for sig in signals.forever() {
                let Some(tx) = tx.take() else {
                    eprintln!("secret-reloader: signal {sig} again: exiting at once");
                    std::process::exit(1);
                };
                let _ = tx.send(());
                let limit = grace + WATCHDOG_MARGIN;
                let _ = std::thread::Builder::new()
                    .name("shutdown-watchdog".into())
                    .spawn(move || {
                        std::thread::sleep(limit);
                        tracing::error!(after = ?limit, "the daemon did not end after the shutdown grace period: exiting");
                        eprintln!("secret-reloader: did not end {limit:?} after the signal: exiting");
                        std::process::exit(1);
                    });
            }
        })?;
    Ok(async move {
        let _ = rx.await;
    })
}

/// Completes once the daemon's stop flag turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
