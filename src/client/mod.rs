//! The daemon's own HTTP(S) client: a reload call (`crate::action::http`), a verify probe
//! (`crate::reload::verify`) and the doctor's question to a running daemon.
//!
//! HTTP/1.1 with one time limit over all of an exchange (connection, request, response): a
//! hanging endpoint fails when the limit passes and never blocks a later call. A connection
//! (`Kept`) can be kept when the endpoint keeps it alive; over TLS (`tls`) only while its CA,
//! certificate and key files are unchanged.

pub(crate) mod tls;

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::config::{Endpoint, TlsClient};

/// Most of a response body read (to let the app finish writing); the rest is dropped.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;
/// A connection kept open to an endpoint.
pub(crate) struct Kept {
    /// Sends the requests.
    pub sender: SendRequest<Empty<Bytes>>,
    /// Drives the connection; aborted with it.
    driver: JoinHandle<()>,
    /// For `https://`: the TLS files as they were when the connection was made.
    pub tls: Option<tls::Identity>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The TLS files of `endpoint` as they are now (`None`: plain HTTP).
pub(crate) fn tls_identity(endpoint: &Endpoint) -> Option<tls::Identity> {
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

/// A new connection to `endpoint` (TLS for `https://`), ready for requests.
pub(crate) async fn connect(endpoint: &Endpoint) -> Result<Kept, String> {
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

/// A request of `method` to `endpoint` with `headers`, without a body.
pub(crate) fn build(
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
pub(crate) async fn drain(mut body: hyper::body::Incoming) -> Bytes {
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
pub(crate) async fn request(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    exchange(endpoint, method, headers, timeout, |body| async {
        Ok(drain(body).await)
    })
    .await
}

/// As [`request`], with the whole body up to `limit` bytes: a larger one is an error, never
/// silently cut (the doctor reads the daemon's status).
pub(crate) async fn request_limited(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    exchange(endpoint, method, headers, timeout, |mut body| async move {
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
        Ok(Bytes::from(buf))
    })
    .await
}

/// One request on a new connection, its body read by `read`, all within `timeout`.
async fn exchange<F, Fut>(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
    read: F,
) -> Result<(u16, Bytes), String>
where
    F: FnOnce(hyper::body::Incoming) -> Fut,
    Fut: std::future::Future<Output = Result<Bytes, String>>,
{
    let exchange = async {
        let mut kept = connect(endpoint).await?;
        let req = build(endpoint, &method, headers)?;
        let resp = kept
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        Ok((status, read(resp.into_body()).await?))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        format!(
            "no answer within {} (the time limit); the endpoint hangs or is overloaded",
            humantime::format_duration(timeout)
        )
    })?
}
