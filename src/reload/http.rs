//! HTTP action: call the app's reload endpoint (Prometheus `/-/reload`, custom services).
//!
//! One connection per call, HTTP/1.1, and one time limit over all of it (connect, request,
//! response): a hanging endpoint fails the attempt when the limit passes and never blocks a later
//! reload. The bearer token file is read at every call, because it rotates too.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{ActionError, Outcome};
use crate::config::{Endpoint, HttpAction};
use crate::scanner::Version;

/// Most of a response body read (to let the app finish writing); the rest is dropped.
const BODY_LIMIT: usize = 64 * 1024;

/// The HTTP action of one target.
pub struct HttpActor {
    /// Where and how to call.
    cfg: HttpAction,
}

impl HttpActor {
    /// An actor for `cfg`.
    pub fn new(cfg: HttpAction) -> Self {
        HttpActor { cfg }
    }

    /// Makes the reload call for `version`. The call names the version by its keyed fingerprint
    /// (`X-Secret-Reloader-Fingerprint`), so that the app's logs can tell which one it loaded.
    pub async fn call(&self, version: &Version) -> Result<Outcome, ActionError> {
        let c = &self.cfg;
        let mut headers = c.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&version.fingerprint.short()) {
            headers.push((HeaderName::from_static("x-secret-reloader-fingerprint"), v));
        }
        if let Some(path) = &c.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                ActionError::Failed(format!(
                    "cannot read --reload-bearer-token-file {}: {e}",
                    path.display()
                ))
            })?;
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                    ActionError::Failed(format!(
                        "the bearer token in {} has characters a header cannot carry",
                        path.display()
                    ))
                })?;
            value.set_sensitive(true);
            headers.push((AUTHORIZATION, value));
        }
        let label = c.endpoint.label();
        let (status, _) = request(&c.endpoint, c.method.clone(), &headers, c.timeout)
            .await
            .map_err(|e| ActionError::Failed(format!("{} {label}: {e}", c.method)))?;
        if status == c.expected_status {
            Ok(Outcome::Done(format!(
                "{} {label} answered {status}",
                c.method
            )))
        } else {
            Err(ActionError::Failed(format!(
                "{} {label} answered {status}, expected {} (--reload-expected-status)",
                c.method, c.expected_status
            )))
        }
    }
}

/// One HTTP/1.1 request with an overall time limit; returns the status and up to 64 KiB of body.
pub async fn request(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(hyper::header::HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let shown = humantime::format_duration(timeout);
    tokio::time::timeout(timeout, request_inner(endpoint, method, headers))
        .await
        .map_err(|_| {
            format!(
                "no answer within {shown} (the time limit); the endpoint hangs or is overloaded"
            )
        })?
}

async fn request_inner(
    endpoint: &Endpoint,
    method: Method,
    headers: &[(hyper::header::HeaderName, HeaderValue)],
) -> Result<(u16, Bytes), String> {
    let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", endpoint.host, endpoint.port))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let path = endpoint
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut req = Request::builder().method(method.clone()).uri(path);
    req = req.header(HOST, endpoint.host_header()).header(
        USER_AGENT,
        concat!("secret-reloader/", env!("CARGO_PKG_VERSION")),
    );
    if method == Method::POST || method == Method::PUT {
        req = req.header(CONTENT_LENGTH, "0");
    }
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
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
        Ok((status, Bytes::from(buf)))
    }
    .await;
    driver.abort();
    result
}
