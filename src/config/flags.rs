//! The daemon's own command-line flags turned into the `default` watch group's actions and
//! settings. Every error names the flag.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue, PROXY_AUTHORIZATION};

use super::cli::RunArgs;
use super::{
    ActionConfig, Endpoint, ExecConfig, Findings, HttpConfig, SignalConfig, TlsClient, Verify,
    compat, parse,
};
use crate::process::Selector;
use crate::process::identity::Identity;

/// Values of a repeatable flag, or else the list in its environment variable: comma-separated,
/// `\,` for a comma inside a value and `\\` for a backslash. A flag's value is always one value,
/// commas included (a path or a URL query may hold one).
pub(crate) fn list(flag_values: &[OsString], var: &str) -> Vec<OsString> {
    if !flag_values.is_empty() {
        return flag_values.to_vec();
    }
    match std::env::var_os(var) {
        None => Vec::new(),
        Some(v) => split_escaped(v.as_bytes())
            .into_iter()
            .map(OsString::from_vec)
            .collect(),
    }
}

/// [`list`] for values that must be text (URLs).
pub(crate) fn text_list(
    flag_values: &[OsString],
    var: &str,
    flag: &str,
    f: &mut Findings,
) -> Vec<String> {
    list(flag_values, var)
        .into_iter()
        .filter_map(|v| match v.into_string() {
            Ok(s) => Some(s),
            Err(_) => {
                f.error(format!("{flag}: a value is not valid UTF-8"));
                None
            }
        })
        .collect()
}

/// Splits at unescaped commas; empty items are dropped (a trailing comma is harmless).
fn split_escaped(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = s.iter().copied();
    while let Some(c) = bytes.next() {
        match c {
            b'\\' => match bytes.next() {
                Some(n @ (b',' | b'\\')) => cur.push(n),
                Some(n) => cur.extend([b'\\', n]),
                None => cur.push(b'\\'),
            },
            b',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|v| !v.trim_ascii().is_empty());
    out
}

/// prometheus-config-reloader's flags that have no counterpart, and its default reload URL when
/// its flags are used without a target.
pub(crate) fn prometheus_config_reloader(
    args: &RunArgs,
    reload_urls: &mut Vec<String>,
    f: &mut Findings,
) {
    if args.config_file.is_some() || args.config_envsubst_file.is_some() {
        f.error(
            "--config-file and --config-envsubst-file (prometheus-config-reloader's environment \
             substitution) are not supported: secret-reloader never writes files. Mount the \
             configuration where the app reads it and --watch its directory; move secrets into \
             files of a Secret volume that the configuration names (password_file, \
             credentials_file, tls_config), and --watch that volume too",
        );
    }
    if args.web_config_file.is_some() {
        f.error(
            "--web-config-file (TLS and authentication of the metrics endpoint) is not supported: \
             the admin port serves plain HTTP and never shows secret content; restrict it with a \
             NetworkPolicy, and /status with --status-token-file",
        );
    }
    if args.runtimeinfo_url.is_some() {
        f.warn(
            "--runtimeinfo-url is not used: a signal counts as delivered when the process handles \
             it; give --verify-url to check the app's state after a reload",
        );
    }
    if args.retry_interval.is_some() {
        f.warn(
            "--retry-interval is not used: failed reloads are retried with exponential backoff \
             from 250ms up to --retry-backoff-max",
        );
    }
    let method = compat::reload_method(&args.reload_method);
    if method == Some(compat::ReloadMethod::Signal) {
        if !reload_urls.is_empty() {
            f.warn("--reload-url is not used with --reload-method=signal");
            reload_urls.clear();
        }
        return;
    }
    if args.dialects.prometheus_config_reloader
        && reload_urls.is_empty()
        && !any_action_flag(args, reload_urls)
    {
        f.warn(format!(
            "no --reload-url: calling {} (prometheus-config-reloader's default)",
            compat::PROMETHEUS_RELOAD_URL
        ));
        reload_urls.push(compat::PROMETHEUS_RELOAD_URL.to_string());
    }
}

/// The process a signal target selects: the flags', or prometheus-config-reloader's default
/// with `--reload-method=signal`.
fn process_name(args: &RunArgs) -> Option<&str> {
    let signal_method =
        compat::reload_method(&args.reload_method) == Some(compat::ReloadMethod::Signal);
    match &args.process_name {
        Some(n) => Some(n),
        None if signal_method && args.process_cmdline.is_none() && args.pid_file.is_none() => {
            Some(compat::PROMETHEUS_PROCESS)
        }
        None => None,
    }
}

/// Whether any flag that makes an action was given (valid or not).
pub(crate) fn any_action_flag(args: &RunArgs, reload_urls: &[String]) -> bool {
    compat::reload_method(&args.reload_method) == Some(compat::ReloadMethod::Signal)
        || !reload_urls.is_empty()
        || !args.exec.is_empty()
        || args.signal.is_some()
        || args.process_name.is_some()
        || args.process_cmdline.is_some()
        || args.pid_file.is_some()
}

/// Headers with their values.
pub(crate) type Headers = Vec<(HeaderName, HeaderValue)>;
/// Headers with the files their values are read from.
pub(crate) type HeaderFiles = Vec<(HeaderName, PathBuf)>;

/// The extra headers of an HTTP target: inline ones, ones read from files, and the bearer token
/// file; problems and warnings go to `f`, each prefixed with `at` names.
pub(crate) struct HeaderSources<'a> {
    pub inline: &'a [String],
    pub files: &'a [String],
    pub bearer_token_file: Option<&'a Path>,
    /// Names of the three settings in messages (`--reload-header`, ... or file fields).
    pub names: [&'a str; 3],
}

impl HeaderSources<'_> {
    pub fn build(&self, f: &mut Findings) -> (Headers, HeaderFiles) {
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

/// The actions described by the command-line flags.
pub(crate) fn cli_actions(
    args: &RunArgs,
    reload_urls: &[String],
    tls: Option<&Arc<TlsClient>>,
    f: &mut Findings,
) -> Vec<ActionConfig> {
    let mut actions = Vec::new();
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
    let method = match compat::reload_method(&args.reload_method) {
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
        warn_visible_query(url, "--reload-url", f);
        match parse::endpoint(url) {
            Ok(mut endpoint) => {
                secure(&mut endpoint, tls, "--reload-url", f);
                if let (Ok(method), Ok(expected_status)) = (&method, &status) {
                    actions.push(ActionConfig::Http(HttpConfig {
                        endpoint,
                        method: method.clone(),
                        expected_status: *expected_status,
                        headers: headers.clone(),
                        header_files: header_files.clone(),
                        bearer_token_file: args.reload_bearer_token_file.clone(),
                        timeout: args.reload_timeout,
                    }));
                }
            }
            Err(e) => f.error(format!("--reload-url: {e}")),
        }
    }
    let selector = selector(
        process_name(args),
        args.process_cmdline.as_deref(),
        args.pid_file.as_deref(),
        "--",
        f,
    );
    match (selector, &args.signal) {
        (Some(selector), sig) => {
            let sig = sig.as_deref().unwrap_or("HUP");
            match parse::signal(sig) {
                Ok(signal) => actions.push(ActionConfig::Signal(SignalConfig {
                    signal,
                    selector,
                    all: args.signal_all,
                })),
                Err(e) => f.error(format!("--signal: {e}")),
            }
        }
        (None, Some(_)) => f.error(
            "--signal needs a target process: add --process-name, --process-cmdline or --pid-file",
        ),
        (None, None) if args.signal_all => {
            f.error("--signal-all needs --process-name or --process-cmdline")
        }
        (None, None) => {}
    }
    for cmd in &args.exec {
        match exec_argv(cmd) {
            Ok(argv) => actions.push(ActionConfig::Exec(ExecConfig {
                argv,
                timeout: args.reload_timeout,
            })),
            Err(e) => f.error(format!("--exec: {e}")),
        }
    }
    actions
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

/// Splits a command with shell-style quoting (no shell runs it).
pub(crate) fn exec_argv(cmd: &str) -> Result<Vec<String>, String> {
    match shlex::split(cmd) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        Some(_) => Err("the command is empty".into()),
        None => Err(format!("'{}' has unbalanced quotes", cmd.escape_debug())),
    }
}

/// The target process's selector: a name or a command line, or a pid file (whose process must
/// also match the name or command line when one is given beside it); `prefix` is `--` for flags
/// and a field path for the file.
pub(crate) fn selector(
    name: Option<&str>,
    cmdline: Option<&str>,
    pid_file: Option<&Path>,
    prefix: &str,
    f: &mut Findings,
) -> Option<Selector> {
    let field = |n: &str| {
        if prefix == "--" {
            format!("--{}", n.replace('_', "-"))
        } else {
            format!("{prefix}{n}")
        }
    };
    if name.is_some() && cmdline.is_some() {
        f.error(format!(
            "{} and {} each select the target process: give only one (either may be given \
             beside {}, which its process must then match)",
            field("process_name"),
            field("process_cmdline"),
            field("pid_file")
        ));
        return None;
    }
    let matcher = if let Some(n) = name {
        if n.is_empty() || n.contains('/') || n.contains('\0') {
            f.error(format!(
                "{}: '{}' is not a process name (no slashes, not empty)",
                field("process_name"),
                n.escape_debug()
            ));
            return None;
        }
        Some(Selector::Name(n.to_string()))
    } else if let Some(r) = cmdline {
        match regex_lite::Regex::new(r) {
            Ok(re) => Some(Selector::Cmdline(re)),
            Err(e) => {
                f.error(format!(
                    "{}: '{}' is not a regular expression: {e}",
                    field("process_cmdline"),
                    r.escape_debug()
                ));
                return None;
            }
        }
    } else {
        None
    };
    match pid_file {
        Some(p) => Some(Selector::PidFile(absolute(p), matcher.map(Box::new))),
        None => matcher,
    }
}

/// Absolute, lexically cleaned watch paths (symlinks are left alone: they matter here).
pub(crate) fn watch_paths(paths: &[PathBuf], field: &str, f: &mut Findings) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        if p.as_os_str().is_empty() {
            f.error(format!("{field}: an empty path"));
            continue;
        }
        let p = absolute(p);
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
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

/// The app identity declared with `--app-uid`, `--app-gid` and `--app-groups`.
pub(crate) fn declared_identity(
    uid: Option<u32>,
    gid: Option<u32>,
    groups: &[u32],
    at: &str,
    names: [&str; 3],
    f: &mut Findings,
) -> Option<Identity> {
    match (uid, gid) {
        (Some(uid), Some(gid)) => Some(Identity {
            uid,
            gid,
            groups: groups.to_vec(),
        }),
        (None, None) if groups.is_empty() => None,
        (None, None) => {
            f.error(format!(
                "{at}{} needs {} and {}",
                names[2], names[0], names[1]
            ));
            None
        }
        _ => {
            f.error(format!(
                "{at}{} and {} go together (the app's runAsUser and runAsGroup)",
                names[0], names[1]
            ));
            None
        }
    }
}

/// The TLS options of the command line's https:// URLs (`--tls-*`), checked.
pub(crate) fn cli_tls(args: &RunArgs, f: &mut Findings) -> Option<Arc<TlsClient>> {
    let tls = TlsClient {
        ca_file: args.tls_ca_file.clone(),
        client_cert_file: args.tls_client_cert_file.clone(),
        client_key_file: args.tls_client_key_file.clone(),
        server_name: args.tls_server_name.clone(),
        insecure_skip_verify: args.tls_insecure_skip_verify,
    };
    if tls == TlsClient::default() {
        return None;
    }
    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
        f.error("--tls-client-cert-file and --tls-client-key-file go together (mTLS needs both)");
    }
    if tls.insecure_skip_verify && tls.ca_file.is_some() {
        f.warn("--tls-ca-file is not used: --tls-insecure-skip-verify accepts any certificate");
    }
    Some(Arc::new(tls))
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

/// The verification of a reload: `url` probed, `contains` looked for in the answer.
pub(crate) fn verify(
    url: Option<&str>,
    contains: Option<&str>,
    timeout: std::time::Duration,
    names: [&str; 2],
    f: &mut Findings,
) -> Option<Verify> {
    match (url, contains) {
        (Some(url), contains) => match parse::endpoint(url) {
            Ok(endpoint) => Some(Verify {
                endpoint,
                contains: contains.map(str::to_string),
                timeout,
            }),
            Err(e) => {
                f.error(format!("{}: {e}", names[0]));
                None
            }
        },
        (None, Some(_)) => {
            f.error(format!("{} needs {}", names[1], names[0]));
            None
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_lists_split_at_unescaped_commas() {
        let split = |s: &str| -> Vec<String> {
            split_escaped(s.as_bytes())
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect()
        };
        assert_eq!(split("a,b"), ["a", "b"]);
        assert_eq!(split(r"a\,b,c"), ["a,b", "c"]);
        assert_eq!(split(r"a\\,b"), [r"a\", "b"]);
        assert_eq!(split(r"x\y,"), [r"x\y"]);
        assert!(split("").is_empty());
    }

    #[test]
    fn a_query_on_the_command_line_is_warned_about_and_a_plain_url_is_not() {
        use clap::Parser;
        let load = |url: &str| {
            let cli = crate::config::cli::Cli::try_parse_from([
                "secret-reloader",
                "--watch",
                "/tmp",
                "--reload-url",
                url,
                "--verify-url",
                url,
            ])
            .unwrap();
            crate::config::Config::load(&cli.run).unwrap().warnings
        };
        let warned = load("http://127.0.0.1:1/-/reload?token=abc");
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(
            warned
                .iter()
                .any(|w| w.starts_with("--reload-url: the URL's query is visible")),
            "{warned:?}"
        );
        assert!(
            warned
                .iter()
                .any(|w| w.starts_with("--verify-url: the URL's query")),
            "{warned:?}"
        );
        assert!(warned.iter().all(|w| !w.contains("abc")), "{warned:?}");
        assert!(load("http://127.0.0.1:1/-/reload").is_empty());
    }
}
