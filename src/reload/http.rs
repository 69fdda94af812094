//! HTTP action: call the app's reload endpoint (Prometheus `/-/reload`, custom services).
//!
//! HTTP/1.1 with one time limit over all of a call (connection, request, response): a hanging
//! endpoint fails the attempt when the limit passes and never blocks a later reload. The
//! connection is kept when the endpoint keeps it alive, and used again for the next reload (no
//! connection setup on the reload path); a kept connection the endpoint has closed is replaced.
//! The bearer token file and header files are read at every call, because they rotate too.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{ActionError, Outcome, tls};
use crate::config::{Endpoint, HttpConfig, TlsClient};
use crate::group::Version;
use crate::report::metrics::CallFailure;
use crate::{files, text};

/// Most of a response body read (to let the app finish writing); the rest is dropped.
const BODY_LIMIT: usize = 64 * 1024;
/// Largest token or header file read.
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// A connection kept open to an endpoint.
struct Kept {
    sender: SendRequest<Empty<Bytes>>,
    /// Drives the connection; aborted with it.
    driver: JoinHandle<()>,
    /// For `https://`: the TLS files as they were when the connection was made.
    tls: Option<tls::Identity>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The HTTP action of one target.
pub struct HttpAction {
    /// Where and how to call.
    cfg: HttpConfig,
    /// The connection of the last call, when the endpoint kept it alive.
    kept: Option<Kept>,
    /// The status the last call was answered with (`None`: no answer).
    answered: Option<u16>,
}

impl HttpAction {
    /// An action for `cfg`.
    pub fn new(cfg: HttpConfig) -> Self {
        HttpAction {
            cfg,
            kept: None,
            answered: None,
        }
    }

    /// The last call's status (`None`: no answer), and why an attempt that did not succeed
    /// (`ok` false) failed.
    pub fn answered(&self, ok: bool) -> (Option<u16>, Option<CallFailure>) {
        let failure = match self.answered {
            _ if ok => None,
            None => Some(CallFailure::NoAnswer),
            Some(s) if s != self.cfg.expected_status => Some(CallFailure::Status),
            Some(_) => Some(CallFailure::Verification),
        };
        (self.answered, failure)
    }

    /// The extra headers of a call: configured ones, files read now, the bearer token, and the
    /// version's keyed fingerprint (`X-Secret-Reloader-Fingerprint`, so that the app's logs can
    /// tell which one it loaded).
    fn headers(&self, version: &Version) -> Result<Vec<(HeaderName, HeaderValue)>, ActionError> {
        let c = &self.cfg;
        let mut headers = c.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&version.fingerprint.short()) {
            headers.push((HeaderName::from_static("x-secret-reloader-fingerprint"), v));
        }
        let read = |path: &std::path::Path, what: &str, prefix: &str| {
            let raw = files::read_limited(path, SECRET_FILE_LIMIT).map_err(|e| {
                ActionError::Failed(format!("cannot read {what} {}: {e}", text::path(path)))
            })?;
            let trimmed = raw.trim_ascii();
            let mut value = Vec::with_capacity(prefix.len() + trimmed.len());
            value.extend_from_slice(prefix.as_bytes());
            value.extend_from_slice(trimmed);
            let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
                ActionError::Failed(format!(
                    "{what} {} holds characters a header cannot carry",
                    text::path(path)
                ))
            })?;
            value.set_sensitive(true);
            Ok::<_, ActionError>(value)
        };
        for (name, path) in &c.header_files {
            headers.push((name.clone(), read(path, "--reload-header-file", "")?));
        }
        if let Some(path) = &c.bearer_token_file {
            headers.push((
                AUTHORIZATION,
                read(path, "--reload-bearer-token-file", "Bearer ")?,
            ));
        }
        Ok(headers)
    }

    /// Makes the reload call for `version`.
    pub async fn call(&mut self, version: &Version) -> Result<Outcome, ActionError> {
        self.answered = None;
        let headers = self.headers(version)?;
        let (method, label) = (self.cfg.method.clone(), self.cfg.endpoint.label());
        let timeout = self.cfg.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let answer = {
            let exchange = self.exchange(&headers);
            tokio::pin!(exchange);
            // The first poll hands the request to the connection's task; the time limit's timer
            // is armed once that task has written it. A timer earlier than the runtime's next
            // wake costs a wakeup write of its own, which would come before the request.
            let first = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(match exchange.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => Some(r),
                    std::task::Poll::Pending => None,
                })
            })
            .await;
            match first {
                Some(r) => Ok(r),
                None => {
                    tokio::task::yield_now().await;
                    tokio::time::timeout_at(deadline, exchange).await
                }
            }
        };
        let status = match answer {
            Ok(Ok(status)) => {
                self.answered = Some(status);
                status
            }
            Ok(Err(e)) => return Err(ActionError::Failed(format!("{method} {label}: {e}"))),
            Err(_) => {
                self.kept = None;
                return Err(ActionError::Failed(format!(
                    "{method} {label}: no answer within {} (the time limit); the endpoint hangs or is overloaded",
                    humantime::format_duration(timeout)
                )));
            }
        };
        if status == self.cfg.expected_status {
            Ok(Outcome::Done(format!("{method} {label} answered {status}")))
        } else {
            Err(ActionError::Failed(format!(
                "{method} {label} answered {status}, expected {} (--reload-expected-status)",
                self.cfg.expected_status
            )))
        }
    }

    /// One request on the kept connection or a new one; the status.
    async fn exchange(&mut self, headers: &[(HeaderName, HeaderValue)]) -> Result<u16, String> {
        let reused = match self.kept.take() {
            // A kept TLS session is used again only while its CA, certificate and key files
            // are the ones it was made with.
            Some(k) if !k.sender.is_closed() && k.tls == tls_identity(&self.cfg.endpoint) => {
                Some(k)
            }
            _ => None,
        };
        let was_reused = reused.is_some();
        let mut kept = match reused {
            Some(k) => k,
            None => connect(&self.cfg.endpoint).await?,
        };
        let req = build(&self.cfg.endpoint, &self.cfg.method, headers)?;
        let resp = match kept.sender.send_request(req).await {
            Ok(r) => r,
            // The endpoint closed the kept connection before the request went out: it never saw
            // it, so one new connection is no second reload.
            Err(e) if was_reused && e.is_canceled() => {
                kept = connect(&self.cfg.endpoint).await?;
                let req = build(&self.cfg.endpoint, &self.cfg.method, headers)?;
                kept.sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("request failed: {e}"))?
            }
            Err(e) => return Err(format!("request failed: {e}")),
        };
        let status = resp.status().as_u16();
        let keep_alive = !resp
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        drain(resp.into_body()).await;
        if keep_alive && !kept.sender.is_closed() {
            self.kept = Some(kept);
        }
        Ok(status)
    }
}

fn tls_identity(endpoint: &Endpoint) -> Option<tls::Identity> {
    endpoint.tls.as_deref().map(tls::identity)
}

/// The addresses of `host`: an IP literal as it is, `localhost` as the loopback addresses
/// (RFC 6761: no lookup), any other name looked up on a worker thread (a lookup reads files
/// and may wait on a DNS server; a thread that cannot be started is an error, not an abort).
pub(crate) async fn addresses(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![(ip, port).into()]);
    }
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            (std::net::Ipv4Addr::LOCALHOST, port).into(),
            (std::net::Ipv6Addr::LOCALHOST, port).into(),
        ]);
    }
    let name = format!("{bare}:{port}");
    crate::lane::run_detached(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&name.as_str())
            .map(|a| a.collect::<Vec<_>>())
            .map_err(|e| format!("cannot resolve {name}: {e}"))
    })
    .await?
}

async fn connect(endpoint: &Endpoint) -> Result<Kept, String> {
    let addrs = addresses(&endpoint.host, endpoint.port).await?;
    let stream = TcpStream::connect(addrs.as_slice()).await.map_err(|e| {
        crate::report::resources::check(&e);
        format!("cannot connect to {}: {e}", endpoint.host_header())
    })?;
    let _ = stream.set_nodelay(true);
    if !endpoint.is_https() {
        return handshake(stream, None).await;
    }
    // Without TLS options (never past the configuration's checks), the TLS set-up says what is
    // missing.
    let none = TlsClient::default();
    let t = endpoint.tls.as_deref().unwrap_or(&none);
    // The identity first: a file replaced during the handshake makes the next call connect
    // again rather than keep a session made with the old material.
    let identity = tls::identity(t);
    let stream = tls::connect(t, &endpoint.host, stream).await?;
    handshake(stream, Some(identity)).await
}

async fn handshake<S>(stream: S, tls: Option<tls::Identity>) -> Result<Kept, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Kept {
        sender,
        driver,
        tls,
    })
}

fn build(
    endpoint: &Endpoint,
    method: &Method,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Request<Empty<Bytes>>, String> {
    let path = endpoint
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, endpoint.host_header())
        .header(
            USER_AGENT,
            concat!("secret-reloader/", env!("CARGO_PKG_VERSION")),
        );
    if method == Method::POST || method == Method::PUT {
        req = req.header(CONTENT_LENGTH, "0");
    }
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// Reads up to [`BODY_LIMIT`] of a body (what the endpoint writes before the connection can be
/// used again), and returns it.
async fn drain(mut body: hyper::body::Incoming) -> Bytes {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(&data[..data.len().min(BODY_LIMIT - buf.len())]);
        }
        if buf.len() >= BODY_LIMIT {
            break;
        }
    }
    Bytes::from(buf)
}

/// One HTTP/1.1 request on a new connection with an overall time limit; the status and the first
/// 64 KiB of the body (verification).
pub async fn request(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let mut kept = connect(endpoint).await?;
        let req = build(endpoint, &method, headers)?;
        let resp = kept
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        Ok((status, drain(resp.into_body()).await))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        format!(
            "no answer within {} (the time limit); the endpoint hangs or is overloaded",
            humantime::format_duration(timeout)
        )
    })?
}

/// As [`request`], with the whole body up to `limit` bytes: a larger one is an error, never
/// silently cut (the doctor reads the daemon's status).
pub async fn request_limited(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let mut kept = connect(endpoint).await?;
        let req = build(endpoint, &method, headers)?;
        let resp = kept
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the answer broke off: {e}"))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > limit {
                    return Err(format!("the answer is larger than {limit} bytes"));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok((status, Bytes::from(buf)))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        format!(
            "no answer within {} (the time limit); the endpoint hangs or is overloaded",
            humantime::format_duration(timeout)
        )
    })?
}
