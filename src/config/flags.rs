//! The daemon's own command-line flags turned into the `default` watch group's actions and
//! settings. Every error names the flag.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;

use super::cli::RunArgs;
use super::{Findings, TlsClient, Verify, compat_flags, parse};
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
    let method = compat_flags::reload_method(&args.http.reload_method);
    if method == Some(compat_flags::ReloadMethod::Signal) {
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
            compat_flags::PROMETHEUS_RELOAD_URL
        ));
        reload_urls.push(compat_flags::PROMETHEUS_RELOAD_URL.to_string());
    }
}

/// Whether any flag that makes an action was given (valid or not).
pub(crate) fn any_action_flag(args: &RunArgs, reload_urls: &[String]) -> bool {
    compat_flags::reload_method(&args.http.reload_method)
        == Some(compat_flags::ReloadMethod::Signal)
        || !reload_urls.is_empty()
        || !args.exec.exec.is_empty()
        || args.signal.signal.is_some()
        || args.signal.process_name.is_some()
        || args.signal.process_cmdline.is_some()
        || args.signal.pid_file.is_some()
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
        let p = parse::absolute(p);
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
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

/// The verification of a reload: `url` probed, `contains` looked for in the answer, `json`'s
/// conditions on it (`names`: the three flags or fields, for messages).
pub(crate) fn verify(
    url: Option<&str>,
    contains: Option<&str>,
    json: &[String],
    timeout: std::time::Duration,
    names: [&str; 3],
    f: &mut Findings,
) -> Option<Verify> {
    let json_given = !json.is_empty();
    let json: Vec<_> = json
        .iter()
        .filter_map(|expr| {
            super::json_check::parse(expr)
                .map_err(|e| {
                    f.error(format!(
                        "{} '{}': {}",
                        names[2],
                        crate::text::value(expr),
                        crate::text::value(&e)
                    ));
                })
                .ok()
        })
        .collect();
    match (url, contains) {
        (Some(url), contains) => match parse::endpoint(url) {
            Ok(endpoint) => Some(Verify {
                endpoint,
                contains: contains.map(str::to_string),
                json,
                timeout,
            }),
            Err(e) => {
                f.error(format!("{}: {e}", names[0]));
                None
            }
        },
        (None, contains) => {
            // `--verify-url`, or a file's `verify_url` without the path already said.
            let url = names[0].rsplit(['.', ' ']).next().unwrap_or(names[0]);
            for (given, name) in [(contains.is_some(), names[1]), (json_given, names[2])] {
                if given {
                    f.error(format!(
                        "{name} needs {url}: the URL whose answer it checks"
                    ));
                }
            }
            None
        }
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
