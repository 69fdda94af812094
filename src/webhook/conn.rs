//! One connection of the webhook's listeners, from the TLS handshake to its end, with the
//! timers that keep a slow or silent client from holding it:
//!
//! - the TLS handshake must end within [`HANDSHAKE_TIMEOUT`];
//! - a request head must arrive within [`HEAD_TIMEOUT`] of its first byte;
//! - a connection idle between requests is closed after [`IDLE_TIMEOUT`], longer than the API
//!   server's own idle timeout (90 s, Go's `IdleConnTimeout` as Kubernetes sets it): the client
//!   closes first, so a review is never sent on a connection the webhook is closing (Go does not
//!   send a POST again on another connection);
//! - the body's time is the review's own (`super::server`).
//!
//! hyper's `header_read_timeout` would bound the head and the idle time with one figure, so the
//! head is timed here instead: [`Watched`] notes when the first byte after a response arrives.
//! The connection's slot in [`Connections`] is busy while a request is answered (never evicted
//! then); idle (a handshake, a head on its way, keep-alive) it may be closed to make room.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::lock;
use crate::report::metrics::{DropReason, WebhookMetrics};
use crate::report::server::Connections;

/// Time for a TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a request head, from its first byte.
pub(crate) const HEAD_TIMEOUT: Duration = crate::report::server::HEADER_TIMEOUT;
/// Time a connection may stay idle between requests.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a connection stands, for its timers.
#[derive(Debug)]
pub(crate) struct Clock {
    stand: Mutex<Stand>,
    /// Told when a head starts: its deadline is sooner than the idle one being waited for.
    head_started: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Stand {
    /// A request is being answered.
    busy: bool,
    /// The connection's start, or the end of its last answer.
    since: Instant,
    /// When the first byte of the next request head arrived.
    head_from: Option<Instant>,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            stand: Mutex::new(Stand {
                busy: false,
                since: Instant::now(),
                head_from: None,
            }),
            head_started: Notify::new(),
        }
    }

    /// A request's head was read: its answer starts.
    pub(crate) fn answering(&self) {
        let mut s = lock(&self.stand);
        s.busy = true;
        s.head_from = None;
    }

    /// The answer was given.
    pub(crate) fn answered(&self) {
        let mut s = lock(&self.stand);
        s.busy = false;
        s.since = Instant::now();
    }

    fn bytes_arrived(&self) {
        let mut s = lock(&self.stand);
        if !s.busy && s.head_from.is_none() {
            s.head_from = Some(Instant::now());
            self.head_started.notify_one();
        }
    }

    /// When the connection is to be closed unless something happens (none while answering).
    fn deadline(&self) -> Option<Instant> {
        let s = *lock(&self.stand);
        match (s.busy, s.head_from) {
            (true, _) => None,
            (false, Some(from)) => Some(from + HEAD_TIMEOUT),
            (false, None) => Some(s.since + IDLE_TIMEOUT),
        }
    }
}

/// A stream whose reads tell the [`Clock`] that a request head has started.
pub(crate) struct Watched<S> {
    pub(crate) inner: S,
    pub(crate) clock: Arc<Clock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection's task holds: its slot, what closes it, the stop flag.
pub(crate) struct Guard {
    pub(crate) id: u64,
    /// Notified when the slot is taken for a newcomer.
    pub(crate) close: Arc<Notify>,
    pub(crate) conns: Arc<Mutex<Connections>>,
    pub(crate) metrics: Arc<WebhookMetrics>,
    /// Set when the webhook stops.
    pub(crate) stop: watch::Receiver<bool>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.conns).remove(self.id);
        self.metrics.open_delta(-1);
    }
}

impl Guard {
    /// Runs `work` (a handshake) unless it takes longer than [`HANDSHAKE_TIMEOUT`], the slot is
    /// taken or the webhook stops (each: `None`, counted when it is the connection's fault).
    pub(crate) async fn handshake<T>(
        &mut self,
        work: impl Future<Output = io::Result<T>>,
    ) -> Option<T> {
        let close = self.close.clone();
        tokio::select! {
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, work) => match r {
                Ok(Ok(t)) => Some(t),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    self.metrics.dropped(DropReason::Error);
                    None
                }
                Err(_) => {
                    self.metrics.dropped(DropReason::HeaderTimeout);
                    None
                }
            },
            _ = close.notified() => None,
            _ = stopped(&mut self.stop) => None,
        }
    }

    /// Drives the HTTP connection `conn` to its end: closed when its slot is taken, when a head
    /// or the idle time runs past its limit, gracefully (the answer in progress given) when the
    /// webhook stops.
    pub(crate) async fn drive<C>(&mut self, conn: C, clock: &Clock)
    where
        C: Future<Output = hyper::Result<()>> + Graceful,
    {
        tokio::pin!(conn);
        let close = self.close.clone();
        let mut stopping = false;
        loop {
            let deadline = clock.deadline();
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        let why = if e.is_parse_too_large() {
                            DropReason::HeaderTooLarge
                        } else {
                            DropReason::Error
                        };
                        self.metrics.dropped(why);
                        tracing::debug!(error = %e, "webhook connection ended with an error");
                    }
                    return;
                }
                _ = close.notified() => return,
                _ = clock.head_started.notified() => {}
                _ = stopped(&mut self.stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful();
                }
                _ = expiry => {
                    if clock.deadline().is_some_and(|d| d <= Instant::now()) {
                        self.metrics.dropped(DropReason::HeaderTimeout);
                        return;
                    }
                }
            }
        }
    }
}

/// Completes once the webhook stops (at once when the flag's sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A connection that can be told to end after the answer in progress.
pub(crate) trait Graceful {
    /// Ends the connection once the answer in progress (if any) is given.
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_head_and_answer_have_their_own_deadlines() {
        let clock = Clock::new();
        let idle = clock.deadline().unwrap();
        assert!(idle >= Instant::now() + IDLE_TIMEOUT - Duration::from_secs(1));
        clock.bytes_arrived();
        let head = clock.deadline().unwrap();
        assert!(head <= Instant::now() + HEAD_TIMEOUT && head < idle);
        // More bytes of the same head do not move it.
        clock.bytes_arrived();
        assert_eq!(clock.deadline(), Some(head));
        clock.answering();
        clock.bytes_arrived(); // the body: the review's own time bounds it
        assert_eq!(clock.deadline(), None);
        clock.answered();
        let next = clock.deadline().unwrap();
        assert!(next >= Instant::now() + IDLE_TIMEOUT - Duration::from_secs(1));
    }
}
