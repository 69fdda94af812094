//! Parsers for the value types of flags and config fields: durations, signals, reload URLs
//! and their TLS options, served-certificate addresses, headers, listen addresses and paths. Each error says what was expected, so that the caller only has
//! to prefix the flag or field name.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Uri};
use nix::sys::signal::Signal;

use super::Findings;
pub use super::tls::TlsClient;

/// The longest duration any setting accepts: deadlines computed from it stay far from the
/// clock's range.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration such as `100ms`, `5s`, `2m` or `0`, at most `MAX_DURATION`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let shown = s.escape_debug();
    let d = humantime::parse_duration(s).map_err(|e| {
        format!(
            "'{shown}' is not a duration ({e}): write a number with a unit, like 100ms, 5s or 2m"
        )
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "'{shown}' is too long: the largest accepted value is 365days"
        ));
    }
    Ok(d)
}

/// A signal by name (`HUP`, `SIGHUP`, `hup`) or number (`1`).
pub(crate) fn signal(raw: &str) -> Result<Signal, String> {
    let t = raw.trim();
    let s = raw.escape_debug();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("'{s}' is not a signal number on Linux"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let sig = Signal::from_str(&name).map_err(|_| {
        format!(
            "'{s}' is not a signal name: use HUP, USR1, USR2, TERM, QUIT, INT, WINCH or a number"
        )
    })?;
    if matches!(
        sig,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    ) {
        return Err(format!(
            "'{s}' stops the process instead of reloading it: use HUP, USR1, USR2 or TERM"
        ));
    }
    Ok(sig)
}

/// Where and how to reach an HTTP endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as given (used only for requests; labels use [`Endpoint::label`]).
    pub uri: Uri,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// `https://`: how the connection is secured (set from the target's TLS options).
    pub tls: Option<std::sync::Arc<TlsClient>>,
}

impl Endpoint {
    /// A label value that cannot carry credentials: scheme, host, port and path, no query.
    pub fn label(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme(),
            self.host_for_url(),
            self.port,
            self.uri.path()
        )
    }

    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.is_https() { "https" } else { "http" }
    }

    /// Whether the URL is `https://`.
    pub(crate) fn is_https(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }

    /// The `Host` header value.
    pub(crate) fn host_header(&self) -> String {
        format!("{}:{}", self.host_for_url(), self.port)
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// A URL as it may appear in messages: without userinfo, query or fragment, and with control
/// characters escaped. Works on any text, URL or not.
pub(crate) fn redact_url(s: &str) -> String {
    let s = s.trim();
    let cut = s.find(['?', '#']).unwrap_or(s.len());
    let (head, rest) = s.split_at(cut);
    let head = match head.find("://") {
        Some(i) => {
            let (scheme, after) = head.split_at(i + 3);
            let end = after.find('/').unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            match authority.rfind('@') {
                Some(at) => format!("{scheme}...@{}{path}", &authority[at + 1..]),
                None => head.to_string(),
            }
        }
        None => match head.rfind('@') {
            Some(at) => format!("...@{}", &head[at + 1..]),
            None => head.to_string(),
        },
    };
    let tail = if rest.is_empty() { "" } else { "?..." };
    format!("{}{tail}", head.escape_debug())
}

/// An `http://` or `https://` URL of a reload or verify endpoint (an https one gets its TLS
/// options from the target).
pub(crate) fn endpoint(raw: &str) -> Result<Endpoint, String> {
    let s = redact_url(raw);
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a URL: write it like http://127.0.0.1:9090/-/reload"))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => {
            return Err(format!(
                "'{s}' is not an http:// or https:// URL: write it like http://127.0.0.1:9090/-/reload"
            ));
        }
    };
    let authority = uri.authority().ok_or_else(|| {
        format!("'{s}' has no host: write it like http://127.0.0.1:9090/-/reload")
    })?;
    if authority.as_str().contains('@') {
        return Err(
            "credentials in the URL are not supported (they would end up in logs and labels): \
                    use --reload-header-file 'Authorization: /path/to/file' or --reload-bearer-token-file"
                .to_string(),
        );
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(default_port);
    Ok(Endpoint {
        uri,
        host,
        port,
        tls: None,
    })
}

/// Where an app serves its certificate: `HOST:PORT` (TLS from the first byte) or
/// `postgres://HOST:PORT` (PostgreSQL's SSLRequest first).
pub(crate) fn served_cert(raw: &str, timeout: std::time::Duration) -> Result<ServedCert, String> {
    let shown = raw.escape_debug();
    let (postgres, rest) = match raw.trim().strip_prefix("postgres://") {
        Some(r) => (true, r),
        None => (false, raw.trim()),
    };
    let bad = || {
        format!(
            "'{shown}' is not HOST:PORT or postgres://HOST:PORT (write it like 127.0.0.1:8443, \
             [::1]:443 or postgres://127.0.0.1:5432)"
        )
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad());
    }
    Ok(ServedCert {
        host: host.to_string(),
        port,
        postgres,
        timeout,
    })
}

/// An HTTP method such as `POST` or `GET`.
pub(crate) fn method(raw: &str) -> Result<Method, String> {
    let s = raw.escape_debug();
    Method::from_bytes(raw.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{s}' is not an HTTP method: use POST, GET or PUT"))
}

/// An HTTP status code the reload call must answer with.
pub(crate) fn status(code: u16) -> Result<u16, String> {
    if (100..=599).contains(&code) {
        Ok(code)
    } else {
        Err(format!("{code} is not an HTTP status code (100-599)"))
    }
}

/// Headers the HTTP client sets itself or that control the connection: never taken from the
/// configuration (a second `Host` or `Content-Length` makes the request ambiguous).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "expect",
    "x-secret-reloader-fingerprint",
];

fn header_name(name: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        format!(
            "'{}' is not a valid header name",
            name.trim().escape_debug()
        )
    })?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "the {name} header is set by secret-reloader itself or controls the connection: it cannot be configured"
        ));
    }
    Ok(name)
}

/// A header `Name: /path/to/file` whose value is read from the file at every call.
pub(crate) fn header_file(s: &str) -> Result<(HeaderName, std::path::PathBuf), String> {
    let (name, path) = s
        .split_once(':')
        .ok_or_else(|| format!("'{}' is not 'Name: /path/to/file'", s.escape_debug()))?;
    let name = header_name(name)?;
    let path = path.trim();
    if path.is_empty() {
        return Err(format!(
            "the {name} header names no file: write 'Name: /path/to/file'"
        ));
    }
    Ok((name, std::path::PathBuf::from(path)))
}

/// A header `Name: value`.
pub(crate) fn header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| {
        format!(
            "'{}' is not a header: write it as 'Name: value'",
            redact_header(s)
        )
    })?;
    let name = header_name(name)?;
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
        format!("the value of header '{name}' has characters a header cannot carry")
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Header values may be credentials: error messages show only the name part.
fn redact_header(s: &str) -> String {
    match s.split_once(':') {
        Some((name, _)) => format!("{}: ...", name.escape_debug()),
        None if s.len() > 16 => "...".to_string(),
        None => s.escape_debug().to_string(),
    }
}

/// A listen address: `host:port`, `[v6]:port` or `:port` (all interfaces, as configmap-reload).
pub(crate) fn listen(raw: &str) -> Result<SocketAddr, String> {
    let t = raw.trim();
    let s = t.escape_debug();
    if let Some(port) = t.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'{s}' has no valid port: write it like 0.0.0.0:9533 or :9533"))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'{s}' has no valid port: write it like 127.0.0.1:9533"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    t.parse().map_err(|_| {
        format!("'{s}' is not an address: write it like 0.0.0.0:9533, [::]:9533 or :9533")
    })
}

/// Where the app serves the certificate of the watched files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    /// Host to connect to (sent as SNI when it is a name, not an address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// PostgreSQL: an SSLRequest before the TLS handshake.
    pub postgres: bool,
    /// Limit of one look.
    pub timeout: Duration,
}

impl ServedCert {
    /// `HOST:PORT` or `postgres://HOST:PORT`, for messages and labels.
    pub(crate) fn label(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.postgres { "postgres://" } else { "" };
        format!("{scheme}{host}:{}", self.port)
    }
}

impl Endpoint {
    /// The TLS options of an https:// endpoint (paths and choices; nothing read from the files).
    pub(crate) fn tls_summary(&self) -> serde_json::Value {
        match (self.is_https(), self.tls.as_deref()) {
            (true, Some(t)) => serde_json::json!({
                "ca_file": t.ca_file.as_deref().map(crate::text::path),
                "client_cert_file": t.client_cert_file.as_deref().map(crate::text::path),
                "server_name": t.server_name.as_deref().map(crate::text::value),
                "insecure_skip_verify": t.insecure_skip_verify,
            }),
            _ => serde_json::Value::Null,
        }
    }
}

/// Gives an https:// endpoint its TLS options (`given_as`: the flag or field, for messages).
pub(crate) fn secure(
    endpoint: &mut Endpoint,
    tls: Option<&Arc<TlsClient>>,
    given_as: &str,
    f: &mut Findings,
) {
    if !endpoint.is_https() {
        return;
    }
    let label = endpoint.label();
    match tls {
        Some(t) if t.insecure_skip_verify => f.warn(format!(
            "{given_as} {label}: the endpoint's certificate is not verified \
             (--tls-insecure-skip-verify): anything that answers on that address is trusted"
        )),
        Some(t) if t.ca_file.is_some() => {}
        _ => f.error(format!(
            "{given_as} {label}: an https:// URL needs --tls-ca-file (the image has no system CA \
             roots) or --tls-insecure-skip-verify (in the config file: the target's tls.ca_file or \
             tls.insecure_skip_verify)"
        )),
    }
    endpoint.tls = tls.cloned();
}

/// A URL given on the command line or in the environment is readable by every process of the pod
/// (`/proc/<pid>/cmdline`, `environ`): a query there may be a credential in plain sight.
pub(crate) fn warn_visible_query(url: &str, name: &str, f: &mut Findings) {
    if url.contains('?') {
        f.warn(format!(
            "{name}: the URL's query is visible to every process of the pod (/proc/<pid>/cmdline or \
             environ); if it carries a credential, send it as a header read from a file \
             (--reload-header-file) instead"
        ));
    }
}

/// `p` made absolute against the working directory and lexically cleaned (`.` dropped).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_cert_endpoints() {
        let t = std::time::Duration::from_secs(1);
        let e = served_cert("127.0.0.1:8443", t).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.postgres),
            ("127.0.0.1", 8443, false)
        );
        let e = served_cert("postgres://[::1]:5432", t).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.postgres), ("::1", 5432, true));
        assert_eq!(e.label(), "postgres://[::1]:5432");
        for bad in [
            "127.0.0.1",
            "x:0",
            ":443",
            "https://x:443",
            "x:99999",
            "a@b:1",
        ] {
            assert!(served_cert(bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        assert!(duration("fast").unwrap_err().contains("100ms"));
        assert!(duration("5").is_err());
        assert_eq!(
            duration("300000000000years").unwrap_err(),
            "'300000000000years' is too long: the largest accepted value is 365days"
        );
        assert_eq!(duration("365days").unwrap(), MAX_DURATION);
    }

    #[test]
    fn urls_in_messages_lose_credentials() {
        assert_eq!(
            redact_url("http://u:p@127.0.0.1:1/x?token=abc#f"),
            "http://...@127.0.0.1:1/x?..."
        );
        assert_eq!(redact_url("not a url ?token=abc"), "not a url ?...");
        assert_eq!(redact_url("u:p@host"), "...@host");
        assert_eq!(redact_url("http://h/\x1b[31m"), "http://h/\\u{1b}[31m");
        let err = endpoint("ftp://127.0.0.1/-/reload?token=s3cr3t").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = endpoint("ht tp://x/?token=s3cr3t").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn framing_headers_are_refused() {
        for h in [
            "Host: x",
            "content-length: 5",
            "Transfer-Encoding: chunked",
            "Connection: close",
        ] {
            assert!(
                header(h).unwrap_err().contains("cannot be configured"),
                "{h}"
            );
        }
        assert!(header_file("Host: /x").is_err());
        let (n, p) = header_file("X-Api-Key: /run/key").unwrap();
        assert_eq!((n.as_str(), p.to_str().unwrap()), ("x-api-key", "/run/key"));
    }

    #[test]
    fn signals() {
        assert_eq!(signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(signal("15").unwrap(), Signal::SIGTERM);
        assert!(signal("HUPP").unwrap_err().contains("HUPP"));
        assert!(signal("99").is_err());
        assert!(signal("STOP").unwrap_err().contains("stops"));
    }

    #[test]
    fn endpoints() {
        let e = endpoint("http://127.0.0.1:9090/-/reload?token=abc").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 9090));
        assert_eq!(e.label(), "http://127.0.0.1:9090/-/reload");
        let e = endpoint("http://[::1]/x").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 80));
        assert_eq!(e.host_header(), "[::1]:80");
        assert_eq!(endpoint("https://x/").unwrap().port, 443);
        assert_eq!(endpoint("https://x/").unwrap().label(), "https://x:443/");
        assert!(endpoint("ftp://x/").unwrap_err().contains("http://"));
        assert!(
            endpoint("http://u:p@x/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(endpoint("not a url").is_err());
    }

    #[test]
    fn headers_never_echo_values() {
        let (n, v) = header("X-Token: s3cr3t").unwrap();
        assert_eq!(n.as_str(), "x-token");
        assert_eq!(v.to_str().unwrap(), "s3cr3t");
        let err = header("Authorization Bearer s3cr3t-value-long").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen(":9533").unwrap().to_string(), "0.0.0.0:9533");
        assert_eq!(listen("127.0.0.1:0").unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(listen("[::]:9533").unwrap().to_string(), "[::]:9533");
        assert!(listen("nowhere").is_err());
    }
}
