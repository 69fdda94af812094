//! The webhook's listeners: HTTPS on `--listen` (`POST /mutate`, and `/healthz`, `/readyz`,
//! `/metrics`), plain HTTP on `--admin-listen` (only those three), on one current-thread
//! runtime. A review costs well under a millisecond of CPU and waits on nothing but its client,
//! so one thread serves any number of them; `/healthz` is answered by that same thread, which
//! makes it a true liveness probe.
//!
//! Bounds (a webhook's port is reachable from the pod network):
//!
//! - connections: at most [`MAX_CONNECTIONS`] on HTTPS, `report::server::MAX_CONNECTIONS` on
//!   the admin port; a new one closes the longest idle one, never one being answered
//!   (`report::server::Connections`, shared with the daemon's admin server); the timers of
//!   each connection are `super::conn`'s;
//! - a request head: 8 KiB (431 beyond) and 64 headers;
//! - a review's body: [`MAX_BODY`] (3 MiB, the API server's largest object; 413 beyond, from
//!   `Content-Length` before reading, or once read past it), within [`BODY_TIMEOUT`] (408), and
//!   every body being read counts against [`BODY_BUDGET`] (503 when full): memory stays bounded
//!   whatever clients send. A 408, 413 or 503 closes the connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::conn::{Clock, Guard, Watched, stopped};
use super::review;
use crate::inject::InjectFlags;
use crate::lock;
use crate::report::metrics::{DropReason, ReviewResult, WebhookMetrics};
use crate::report::server::{Connections, MAX_HEADER_BYTES, failed_accept, reply, text};

/// Most connections open at once on the HTTPS listener.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Largest review body.
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;
/// Time for a review's body, from its head.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of bodies being read at once, every connection's together.
pub(crate) const BODY_BUDGET: usize = 32 * 1024 * 1024;
/// Time in-flight reviews have to end after SIGTERM.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every connection shares.
pub(crate) struct Shared {
    /// What gets injected.
    pub flags: InjectFlags,
    pub metrics: Arc<WebhookMetrics>,
    /// [`BODY_BUDGET`], in KiB.
    pub budget: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn new(flags: InjectFlags, metrics: Arc<WebhookMetrics>) -> Shared {
        Shared {
            flags,
            metrics,
            budget: Arc::new(Semaphore::new(BODY_BUDGET / 1024)),
        }
    }
}

/// Serves `listener` until `stop` is set (with TLS through `tls`, which also serves `/mutate`),
/// then gives the connections [`SHUTDOWN_GRACE`] to end.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = match tls {
        Some(_) => MAX_CONNECTIONS,
        None => crate::report::server::MAX_CONNECTIONS,
    };
    let conns = Arc::new(Mutex::new(Connections::new(limit)));
    let mut tasks = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    failed_accept(&e, &conns, || shared.metrics.dropped(DropReason::Capacity)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let admitted = lock(&conns).admit(|| shared.metrics.dropped(DropReason::Capacity));
        let Some((id, close)) = admitted else {
            continue;
        };
        shared.metrics.open_delta(1);
        let guard = Guard {
            id,
            close,
            conns: conns.clone(),
            metrics: shared.metrics.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(connection(stream, peer, tls.clone(), shared.clone(), guard));
    }
    drop(listener);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period: closed");
        tasks.abort_all();
    }
}

/// One connection, from its handshake (with `tls`) to its end.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut guard: Guard,
) {
    match tls {
        Some(acceptor) => {
            if let Some(stream) = guard.handshake(acceptor.accept(stream)).await {
                http(stream, peer, true, shared, guard).await;
            }
        }
        None => http(stream, peer, false, shared, guard).await,
    }
}

/// HTTP/1.1 over `io`; `/mutate` only when `reviews`.
async fn http<S>(io: S, peer: SocketAddr, reviews: bool, shared: Arc<Shared>, mut guard: Guard)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let clock = Arc::new(Clock::new());
    let io = Watched {
        inner: io,
        clock: clock.clone(),
    };
    let (clock2, conns, id) = (clock.clone(), guard.conns.clone(), guard.id);
    let svc = service_fn(move |req: Request<Incoming>| {
        let (clock, conns, shared) = (clock2.clone(), conns.clone(), shared.clone());
        async move {
            clock.answering();
            lock(&conns).set_busy(id, true);
            let resp = route(req, peer, reviews, &shared).await;
            lock(&conns).set_busy(id, false);
            clock.answered();
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The head is timed by `Clock` (hyper's timer would be the idle time's too).
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) * 2)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(64)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    guard.drive(conn, &clock).await;
}

async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    reviews: bool,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let probe = req.method() == Method::GET || req.method() == Method::HEAD;
    match req.uri().path() {
        "/mutate" if reviews && req.method() == Method::POST => mutate(req, peer, shared).await,
        "/mutate" if reviews => text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n"),
        _ if !probe => text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // The webhook listens only once its certificate loaded.
        "/readyz" => text(StatusCode::OK, "ready: the serving certificate is loaded\n"),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.encode(),
        ),
        _ if reviews => text(
            StatusCode::NOT_FOUND,
            "not found: POST /mutate, or GET /healthz, /readyz, /metrics\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

/// `POST /mutate`: the body read within its bounds, the review answered, counted and logged.
async fn mutate(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let refuse = |result: ReviewResult, status: StatusCode, why: &str| {
        shared.metrics.review(result, started.elapsed());
        tracing::warn!(%peer, result = result_str(result), "review refused: {why}");
        let body = format!("{why} (the API server applies the webhook's failurePolicy)\n");
        closing(reply(status, "text/plain; charset=utf-8", body))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse(
            ReviewResult::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE,
        );
    }
    // A body without a length may be as large as allowed.
    let kib = declared
        .map_or(MAX_BODY, |n| n as usize)
        .div_ceil(1024)
        .max(1) as u32;
    let Ok(_permit) = shared.budget.clone().try_acquire_many_owned(kib) else {
        return refuse(ReviewResult::Busy, StatusCode::SERVICE_UNAVAILABLE, BUSY);
    };
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(
                ReviewResult::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                TOO_LARGE,
            );
        }
        Ok(Err(_)) => return refuse(ReviewResult::Malformed, StatusCode::BAD_REQUEST, BROKEN),
        Err(_) => return refuse(ReviewResult::Timeout, StatusCode::REQUEST_TIMEOUT, SLOW),
    };
    let answer = review::answer(&body, |pod| crate::inject::pod(pod, &shared.flags));
    drop(body);
    shared.metrics.review(answer.result, started.elapsed());
    let a = &answer.about;
    let result = result_str(answer.result);
    match answer.result {
        ReviewResult::Injected => tracing::info!(
            namespace = %a.namespace, name = %a.name, dry_run = a.dry_run, "sidecar injected"
        ),
        ReviewResult::Unchanged => tracing::debug!(
            namespace = %a.namespace, name = %a.name, dry_run = a.dry_run, "pod not to be injected"
        ),
        ReviewResult::Malformed => tracing::warn!(
            %peer, result, "review refused: {}", answer.why.as_deref().unwrap_or("")
        ),
        _ => tracing::warn!(
            %peer, result, kind = %a.kind, namespace = %a.namespace, name = %a.name,
            dry_run = a.dry_run, why = answer.why.as_deref().unwrap_or(""),
            "review answered without a patch"
        ),
    }
    if answer.status == StatusCode::OK {
        reply(answer.status, "application/json", answer.body)
    } else {
        reply(answer.status, "text/plain; charset=utf-8", answer.body)
    }
}

const TOO_LARGE: &str = "AdmissionReview larger than 3 MiB";
const BUSY: &str = "too many review bodies being read at once";
const BROKEN: &str = "the request body could not be read";
const SLOW: &str = "the request body did not arrive within 10 s";

fn result_str(r: ReviewResult) -> &'static str {
    use crate::report::metrics::Label;
    r.as_str()
}

/// `resp` with `Connection: close` (its body may not have been read).
fn closing(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}
