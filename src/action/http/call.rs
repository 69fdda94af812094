//! The HTTP action at run time: call the app's reload endpoint (Prometheus `/-/reload`, custom
//! services) through the daemon's client ([`crate::client`]).
//!
//! The connection is kept when the endpoint keeps it alive, and used again for the next reload
//! (no connection setup on the reload path); a kept connection the endpoint has closed is
//! replaced. The bearer token file and header files are read at every call, because they rotate
//! too.

use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};

use super::HttpConfig;
use super::metrics::CallFailure;
use crate::action::{ActionError, Outcome};
use crate::client::{Kept, build, connect, drain, tls_identity};
use crate::group::Version;
use crate::{files, text};

/// Largest token or header file read.
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// The HTTP action of one target.
pub(crate) struct HttpAction {
    /// Where and how to call.
    cfg: HttpConfig,
    /// The connection of the last call, when the endpoint kept it alive.
    kept: Option<Kept>,
    /// The status the last call was answered with (`None`: no answer).
    answered: Option<u16>,
}

impl HttpAction {
    /// An action for `cfg`.
    pub(crate) fn new(cfg: HttpConfig) -> Self {
        HttpAction {
            cfg,
            kept: None,
            answered: None,
        }
    }

    /// The last call's status (`None`: no answer), and why an attempt that did not succeed
    /// (`ok` false) failed.
    pub(crate) fn answered(&self, ok: bool) -> (Option<u16>, Option<CallFailure>) {
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
    pub(crate) async fn call(&mut self, version: &Version) -> Result<Outcome, ActionError> {
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
