//! The admin server on `--listen`, on its own thread with its own small runtime, so that nothing
//! on the reload path delays a probe and nothing on the admin port delays a reload:
//!
//! - `GET /metrics` — Prometheus text format;
//! - `GET /healthz` — liveness: 200 when the daemon's runtime answers within 2 s (it never waits
//!   on an app, a file or the network, so a failure means the daemon itself is wedged);
//! - `GET /readyz`  — readiness: 200 once every watch group was scanned and watched (a latch,
//!   never cleared: an app's failing reloads do not make the sidecar unready);
//! - `GET /startupz` — startup (a native sidecar's startup probe, which holds the app container
//!   back): 200 once every watched path is there, complete, not held back, and readable by the
//!   app's identity when it is known; 503 with the first reason before (the reason itself only
//!   to whom `/status` is shown). Not a latch: it follows the files;
//! - `GET /status`  — the JSON status document, served to the pod itself (a loopback peer) or to
//!   a client with the `--status-token-file` bearer token; 403 otherwise.
//!
//! The port is reachable from the pod network, so it is bounded: at most `MAX_CONNECTIONS`
//! connections (a new one closes the longest idle one, never one whose request is being answered:
//! a probe always gets in and gets its answer, and a slow client cannot hold the port), a request
//! head must arrive within `HEADER_TIMEOUT` (which is also the idle keep-alive timeout) and fit
//! in `MAX_HEADER_BYTES`. Every early close is counted (`admin_connections_dropped_total{reason}`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, mpsc, oneshot};

use super::metrics::{DropReason, Metrics};
use super::status::Board;
use crate::{files, lock};

/// Most connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Time for a request head to arrive, from the connection's start or the previous response.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head.
pub(crate) const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Time the daemon's runtime has to answer a liveness probe.
pub(crate) const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the daemon's runtime whether it is alive: each probe sends a reply channel that a task
/// on that runtime answers at once.
#[derive(Clone)]
pub struct Liveness(mpsc::Sender<oneshot::Sender<()>>);

impl Liveness {
    /// A liveness channel and the task that answers it (spawn it on the daemon's runtime).
    pub fn new() -> (Liveness, impl std::future::Future<Output = ()> + Send) {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<()>>(64);
        let responder = async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(());
            }
        };
        (Liveness(tx), responder)
    }

    async fn check(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.0.try_send(tx).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(LIVENESS_TIMEOUT, rx).await, Ok(Ok(())))
    }
}

/// What the admin server serves.
#[derive(Clone)]
pub struct Admin {
    /// The status board.
    pub board: Arc<Board>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The daemon's runtime, for liveness.
    pub liveness: Liveness,
    /// Bearer token file for `/status` from outside the pod.
    pub status_token_file: Option<PathBuf>,
}

/// The running admin server.
pub(crate) struct AdminHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminHandle {
    /// Stops the server and waits (briefly) for its thread.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the server on its own thread; `ended` is told if it stops by itself.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    admin: Admin,
    ended: oneshot::Sender<String>,
) -> std::io::Result<AdminHandle> {
    listener.set_nonblocking(true)?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ended.send(format!("the admin server's runtime cannot start: {e}"));
                    return;
                }
            };
            let result = runtime.block_on(serve(listener, admin, stop_rx));
            if let Err(e) = result {
                let _ = ended.send(e);
            }
        })?;
    Ok(AdminHandle {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Open connections of a listener bounded to `limit`: when to close which. Shared with the
/// webhook's listeners (`crate::webhook`).
pub(crate) struct Connections {
    /// Most connections open at once.
    limit: usize,
    next: u64,
    /// By id.
    open: BTreeMap<u64, Slot>,
}

/// One open connection.
struct Slot {
    /// Last activity: accepted, or a response sent.
    at: Instant,
    /// A request is being answered (a probe waiting for the runtime's ping): never evicted then,
    /// or a flood of new connections could close every probe before its answer.
    busy: bool,
    close: Arc<Notify>,
}

impl Connections {
    /// None open yet; at most `limit` at once.
    pub(crate) fn new(limit: usize) -> Connections {
        Connections {
            limit,
            next: 0,
            open: BTreeMap::new(),
        }
    }

    /// Closes the connection idle the longest (never one answering a request); whether there was
    /// one.
    pub(crate) fn evict_oldest_idle(&mut self) -> bool {
        let oldest_idle = self
            .open
            .iter()
            .filter(|(_, slot)| !slot.busy)
            .min_by_key(|(_, slot)| slot.at)
            .map(|(&id, _)| id);
        match oldest_idle.and_then(|id| self.open.remove(&id)) {
            Some(slot) => {
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// A slot for a new connection (its id, and what closes it): at once below the limit, else
    /// in place of the longest idle one (`at_capacity` is called: a connection is dropped);
    /// `None` when every slot answers a request right now (the newcomer is closed).
    pub(crate) fn admit(&mut self, at_capacity: impl FnOnce()) -> Option<(u64, Arc<Notify>)> {
        if self.open.len() >= self.limit {
            at_capacity();
            if !self.evict_oldest_idle() {
                return None;
            }
        }
        self.next += 1;
        let id = self.next;
        let close = Arc::new(Notify::new());
        let slot = Slot {
            at: Instant::now(),
            busy: false,
            close: close.clone(),
        };
        self.open.insert(id, slot);
        Some((id, close))
    }

    /// The connection `id` starts (`true`) or ends (`false`) answering a request.
    pub(crate) fn set_busy(&mut self, id: u64, busy: bool) {
        if let Some(slot) = self.open.get_mut(&id) {
            slot.busy = busy;
            if !busy {
                slot.at = Instant::now();
            }
        }
    }

    /// The connection `id` ended: its slot is free.
    pub(crate) fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }
}

async fn serve(
    listener: std::net::TcpListener,
    admin: Admin,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| format!("the admin listener cannot be used: {e}"))?;
    let conns = Arc::new(Mutex::new(Connections::new(MAX_CONNECTIONS)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) * 2)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(64)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    failed_accept(&e, &conns, || admin.metrics.admin.dropped(DropReason::Capacity)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let admitted = lock(&conns).admit(|| admin.metrics.admin.dropped(DropReason::Capacity));
        let Some((id, close)) = admitted else {
            drop(stream);
            continue;
        };
        admin.metrics.admin.open_delta(1);
        spawn_connection(&builder, stream, peer, (id, close), &admin, &conns);
        // Let the new connection read its request before the next accept may evict it.
        tokio::task::yield_now().await;
    }
}

/// After an accept that failed: out of descriptors, an idle connection makes room (so that a
/// probe gets in; `dropped` counts it), and the loop backs off briefly instead of spinning.
/// Recorded (and logged once per episode) as the process running out.
pub(crate) async fn failed_accept(
    e: &std::io::Error,
    conns: &Mutex<Connections>,
    dropped: impl FnOnce(),
) {
    if !crate::report::resources::check(e) {
        tracing::debug!(error = %e, "cannot accept a connection");
    }
    if lock(conns).evict_oldest_idle() {
        dropped();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves the connection `stream` from `peer` in its slot (`id`, and what closes it) until it
/// ends or is closed; its slot is given back then.
fn spawn_connection(
    builder: &hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    (id, close): (u64, Arc<Notify>),
    admin: &Admin,
    conns: &Arc<Mutex<Connections>>,
) {
    let (admin2, conns2) = (admin.clone(), conns.clone());
    let svc = service_fn(move |req: Request<Incoming>| {
        let (admin, conns) = (admin2.clone(), conns2.clone());
        async move {
            lock(&conns).set_busy(id, true);
            let resp = respond(&admin, req.method(), req.uri().path(), req.headers(), peer).await;
            lock(&conns).set_busy(id, false);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let (metrics, conns2) = (admin.metrics.clone(), conns.clone());
    tokio::spawn(async move {
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = close.notified() => Ok(()),
        };
        if let Err(e) = result {
            let why = if e.is_timeout() {
                DropReason::HeaderTimeout
            } else if e.is_parse_too_large() {
                DropReason::HeaderTooLarge
            } else {
                DropReason::Error
            };
            metrics.admin.dropped(why);
            tracing::debug!(error = %e, "admin connection ended with an error");
        }
        lock(&conns2).remove(id);
        metrics.admin.open_delta(-1);
    });
}

/// The response to one request (the routing, apart from the connection handling).
pub async fn respond(
    admin: &Admin,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            admin.metrics.encode(),
        ),
        "/healthz" if admin.liveness.check().await => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not alive: the daemon's runtime did not answer within 2s\n",
        ),
        "/readyz" if admin.board.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first scan or the watches are not done\n",
        ),
        "/startupz" => match admin.board.startup_blocker() {
            None => text(
                StatusCode::OK,
                "started: every watched path is there for the app\n",
            ),
            // The reason names paths, uids and modes: shown to whom /status is shown.
            Some(why) if status_allowed(admin, headers, peer) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("not started: {why}\n"),
            ),
            Some(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not started: a watched path is missing, held back or unreadable by the app (details: \
                 /startupz or /status from the pod, or the sidecar's log)\n",
            ),
        },
        "/status" if status_allowed(admin, headers, peer) => reply(
            StatusCode::OK,
            "application/json",
            admin.board.render() + "\n",
        ),
        "/status" => text(
            StatusCode::FORBIDDEN,
            "forbidden: /status is served to the pod itself (127.0.0.1, ::1) or with the bearer token \
             of --status-token-file\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /status, /healthz, /readyz or /startupz\n",
        ),
    }
}

/// `/status` tells who runs as whom and what is watched: the pod itself, or a token holder.
fn status_allowed(admin: &Admin, headers: &HeaderMap, peer: SocketAddr) -> bool {
    if peer.ip().to_canonical().is_loopback() {
        return true;
    }
    let Some(path) = &admin.status_token_file else {
        return false;
    };
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    // Read at every request: the token rotates too.
    match files::read_limited(path, 64 * 1024) {
        Ok(token) => {
            let token = token.trim_ascii();
            !token.is_empty() && constant_time_eq(token, given.trim_ascii())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read --status-token-file: /status refused to clients outside the pod");
            false
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.to_string())
}

/// An answer of `content_type`.
pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}
