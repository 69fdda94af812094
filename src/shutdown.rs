//! SIGTERM and SIGINT as a future.
//!
//! Kubernetes sends SIGTERM to start a graceful shutdown; Ctrl-C sends SIGINT. signal-hook writes
//! to a socket pair from the signal handler, and the future completes when it becomes readable.

use std::future::Future;
use std::io;
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Installs the handlers now; the returned future completes at the first SIGTERM or SIGINT. Await
/// it inside a tokio runtime.
pub fn termination() -> io::Result<impl Future<Output = ()>> {
    let (read, write) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(SIGTERM, write.try_clone()?)?;
    signal_hook::low_level::pipe::register(SIGINT, write)?;
    read.set_nonblocking(true)?;
    Ok(async move {
        match tokio::net::UnixStream::from_std(read) {
            Ok(stream) => {
                let _ = stream.readable().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for SIGTERM; the process must be killed to stop");
                std::future::pending::<()>().await;
            }
        }
    })
}

/// Completes once the daemon's stop flag turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
