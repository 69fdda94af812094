//! The HTTP kind: call the app's reload endpoint. Its configuration, from the flags
//! (`--reload-url` and the `--reload-*` options) and from a config file's `"type": "http"`
//! target; [`call`] runs it; [`doctor`] checks it.

pub(crate) mod call;
pub(crate) mod doctor;
pub(crate) mod metrics;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue, PROXY_AUTHORIZATION};
use serde_json::{Value, json};

use crate::config::{Endpoint, Findings, TlsClient, parse};

/// The JSON Schema of a config file's `"type": "http"` target (`$defs.http_target` of
/// `deploy/config.schema.json`, which a test holds to it).
pub(crate) const SCHEMA: &str = include_str!("schema.json");

/// Its flags and config file fields, as `docs/reference.md` shows them (a test holds the page to
/// it).
pub(crate) const DOC: &str = include_str!("doc.md");

/// The HTTP kind's flags (their config file fields are those of a `"type": "http"` target).
#[derive(Debug, clap::Args)]
pub struct HttpFlags {
    /// Endpoint to call on change (repeatable). SECRET_RELOADER_RELOAD_URL holds a
    /// comma-separated list (`\,` for a comma in a URL).
    #[arg(long = "reload-url", visible_alias = "webhook-url", value_name = "URL")]
    pub reload_url: Vec<OsString>,

    /// HTTP method of the reload call; `http` and `signal` mean what prometheus-config-reloader's
    /// --reload-method means (a POST to the reload URL; SIGHUP to --process-name, `prometheus`
    /// by default).
    #[arg(
        long,
        visible_alias = "webhook-method",
        value_name = "METHOD",
        default_value = "POST",
        env = "SECRET_RELOADER_RELOAD_METHOD"
    )]
    pub reload_method: String,

    /// HTTP status that means the reload succeeded.
    #[arg(
        long,
        visible_alias = "webhook-status-code",
        value_name = "CODE",
        default_value_t = 200,
        env = "SECRET_RELOADER_RELOAD_EXPECTED_STATUS"
    )]
    pub reload_expected_status: u16,

    /// Extra header of the reload call, 'Name: value' (repeatable). Visible to every process of
    /// the pod: use --reload-header-file for credentials.
    #[arg(long, value_name = "HEADER", env = "SECRET_RELOADER_RELOAD_HEADER")]
    pub reload_header: Vec<String>,

    /// Extra header whose value is read from a file at every call, 'Name: /path' (repeatable).
    #[arg(
        long,
        value_name = "HEADER",
        env = "SECRET_RELOADER_RELOAD_HEADER_FILE"
    )]
    pub reload_header_file: Vec<String>,

    /// File holding a bearer token for the reload call; read at every call (it rotates too).
    #[arg(
        long,
        value_name = "PATH",
        env = "SECRET_RELOADER_RELOAD_BEARER_TOKEN_FILE"
    )]
    pub reload_bearer_token_file: Option<PathBuf>,
}

/// An HTTP reload call.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where to call.
    pub endpoint: Endpoint,
    /// Request method.
    pub method: Method,
    /// Status that means success.
    pub expected_status: u16,
    /// Extra request headers (values marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra request headers whose values are read from files at every call.
    pub header_files: Vec<(HeaderName, PathBuf)>,
    /// Bearer token, read at every call.
    pub bearer_token_file: Option<PathBuf>,
    /// Limit on the whole call, connection included.
    pub timeout: Duration,
}

impl HttpConfig {
    /// The target's name when none is given: the URL without query or userinfo.
    pub(crate) fn default_name(&self) -> String {
        self.endpoint.label()
    }

    /// What `/status` shows: header names, never their values or the token.
    pub(crate) fn summary(&self) -> Value {
        json!({
            "url": self.endpoint.label(),
            "tls": self.endpoint.tls_summary(),
            "method": self.method.as_str(),
            "expected_status": self.expected_status,
            "headers": self.headers.iter().map(|(n, _)| n.as_str())
                .chain(self.header_files.iter().map(|(n, _)| n.as_str()))
                .collect::<Vec<_>>(),
            "bearer_token": self.bearer_token_file.is_some(),
            "timeout": humantime::format_duration(self.timeout).to_string(),
        })
    }
}

/// The HTTP targets of the command line: one per reload URL (`reload_urls`: the flag's values or
/// its environment variable's, after the other tools' defaults), with `--reload-timeout` and the
/// `--tls-*` options.
pub(crate) fn from_flags(
    args: &HttpFlags,
    reload_urls: &[String],
    timeout: Duration,
    tls: Option<&Arc<TlsClient>>,
    f: &mut Findings,
) -> Vec<HttpConfig> {
    let mut out = Vec::new();
    let (headers, header_files) = HeaderSources {
        inline: &args.reload_header,
        files: &args.reload_header_file,
        bearer_token_file: args.reload_bearer_token_file.as_deref(),
        names: [
            "--reload-header",
            "--reload-header-file",
            "--reload-bearer-token-file",
        ],
    }
    .build(f);
    // prometheus-config-reloader's `http` is a POST; its `signal` makes no HTTP call.
    let method = match crate::config::compat_flags::reload_method(&args.reload_method) {
        Some(_) => parse::method("POST"),
        None => parse::method(&args.reload_method),
    }
    .map_err(|e| f.error(format!("--reload-method: {e}")));
    let status = parse::status(args.reload_expected_status)
        .map_err(|e| f.error(format!("--reload-expected-status: {e}")));
    if reload_urls.is_empty()
        && (!args.reload_header.is_empty()
            || !args.reload_header_file.is_empty()
            || args.reload_bearer_token_file.is_some())
    {
        f.error(
            "--reload-header, --reload-header-file and --reload-bearer-token-file need --reload-url",
        );
    }
    for url in reload_urls {
        parse::warn_visible_query(url, "--reload-url", f);
        match parse::endpoint(url) {
            Ok(mut endpoint) => {
                parse::secure(&mut endpoint, tls, "--reload-url", f);
                if let (Ok(method), Ok(expected_status)) = (&method, &status) {
                    out.push(HttpConfig {
                        endpoint,
                        method: method.clone(),
                        expected_status: *expected_status,
                        headers: headers.clone(),
                        header_files: header_files.clone(),
                        bearer_token_file: args.reload_bearer_token_file.clone(),
                        timeout,
                    });
                }
            }
            Err(e) => f.error(format!("--reload-url: {e}")),
        }
    }
    out
}

/// A config file's `"type": "http"` target: its own fields and those every target has.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTarget {
    /// Where to call.
    pub url: String,
    /// The request's method.
    pub method: Option<String>,
    /// The status that means success.
    pub expected_status: Option<u16>,
    /// Extra headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Headers whose values are read from files at every call.
    #[serde(default)]
    pub header_files: std::collections::BTreeMap<String, PathBuf>,
    /// A bearer token read at every call.
    pub bearer_token_file: Option<PathBuf>,
    /// Limit of one call.
    pub timeout: Option<String>,
    /// The target's name (its `target` label).
    pub name: Option<String>,
    /// Probed after each reload.
    pub verify_url: Option<String>,
    /// Text the probe's answer must contain.
    pub verify_contains: Option<String>,
    /// Conditions on the probe's answer read as JSON.
    pub verify_json: Option<Vec<String>>,
    /// Where the app serves the watched certificate.
    pub verify_served_cert: Option<String>,
    /// TLS options of its https:// URLs.
    pub tls: Option<crate::config::tls::FileTls>,
}

/// The HTTP target of a config file's fields (`timeout`: the field's or the group's, already
/// parsed; `at`: the target's field path, for messages; `tls`: its TLS options).
pub(crate) fn from_file(
    t: FileTarget,
    timeout: Option<Duration>,
    at: &str,
    tls: Option<&Arc<TlsClient>>,
    f: &mut Findings,
) -> Option<HttpConfig> {
    let endpoint = parse::endpoint(&t.url)
        .map_err(|e| f.error(format!("{at}url: {e}")))
        .ok()
        .map(|mut e| {
            parse::secure(&mut e, tls, &format!("{at}url"), f);
            e
        });
    let method = parse::method(t.method.as_deref().unwrap_or("POST"))
        .map_err(|e| f.error(format!("{at}method: {e}")))
        .ok();
    let expected_status = parse::status(t.expected_status.unwrap_or(200))
        .map_err(|e| f.error(format!("{at}expected_status: {e}")))
        .ok();
    let inline: Vec<String> = t.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let files: Vec<String> = t
        .header_files
        .iter()
        .map(|(k, p)| format!("{k}: {}", p.display()))
        .collect();
    let (headers, header_files) = HeaderSources {
        inline: &inline,
        files: &files,
        bearer_token_file: t.bearer_token_file.as_deref(),
        names: [
            &format!("{at}headers"),
            &format!("{at}header_files"),
            &format!("{at}bearer_token_file"),
        ],
    }
    .build(f);
    Some(HttpConfig {
        endpoint: endpoint?,
        method: method?,
        expected_status: expected_status?,
        headers,
        header_files,
        bearer_token_file: t.bearer_token_file,
        timeout: timeout?,
    })
}

/// Headers with their values.
type Headers = Vec<(HeaderName, HeaderValue)>;
/// Headers with the files their values are read from.
type HeaderFiles = Vec<(HeaderName, PathBuf)>;

/// The extra headers of an HTTP target: inline ones, ones read from files, and the bearer token
/// file; problems and warnings go to `f`, each prefixed with `at` names.
struct HeaderSources<'a> {
    pub inline: &'a [String],
    pub files: &'a [String],
    pub bearer_token_file: Option<&'a std::path::Path>,
    /// Names of the three settings in messages (`--reload-header`, ... or file fields).
    pub names: [&'a str; 3],
}

impl HeaderSources<'_> {
    pub(crate) fn build(&self, f: &mut Findings) -> (Headers, HeaderFiles) {
        let [inline_name, file_name, token_name] = self.names;
        let mut headers = Vec::new();
        for h in self.inline {
            match parse::header(h) {
                Ok((name, value)) => {
                    if name == AUTHORIZATION || name == PROXY_AUTHORIZATION {
                        f.warn(format!(
                            "{inline_name}: the {name} header's value is visible to every process of the pod \
                             (/proc/<pid>/cmdline or environ); put it in a file and use {file_name} or \
                             {token_name} instead"
                        ));
                    }
                    headers.push((name, value));
                }
                Err(e) => f.error(format!("{inline_name}: {e}")),
            }
        }
        let mut from_files = Vec::new();
        for h in self.files {
            match parse::header_file(h) {
                Ok(pair) => from_files.push(pair),
                Err(e) => f.error(format!("{file_name}: {e}")),
            }
        }
        let authorization = headers
            .iter()
            .map(|(n, _)| n)
            .chain(from_files.iter().map(|(n, _)| n))
            .any(|n| *n == AUTHORIZATION);
        if authorization && self.bearer_token_file.is_some() {
            f.error(format!(
                "{token_name} and an Authorization header ({inline_name} or {file_name}) would both set \
                 Authorization: give only one"
            ));
        }
        (headers, from_files)
    }
}
