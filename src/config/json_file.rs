//! The `--config` JSON file: several watch groups, each with its own targets.
//!
//! ```json
//! {
//!   "groups": [
//!     { "name": "tls", "watch": ["/etc/tls"],
//!       "targets": [ { "type": "signal", "process_name": "nginx" } ] },
//!     { "name": "web-config", "watch": ["/etc/prometheus"], "debounce": "200ms",
//!       "targets": [ { "type": "http", "url": "http://127.0.0.1:9090/-/reload" } ] }
//!   ]
//! }
//! ```
//!
//! Unknown fields are errors (a typo must not silently turn a setting off), and every message
//! names the file and the field path, like `groups[1].targets[0].url`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    AccessPolicy, ConsumedAs, Findings, GroupConfig, GroupDefaults, ReloadOnStart, TargetConfig,
    TargetDefaults, TlsClient, flags, parse, target, watch_paths,
};
use crate::action::{ActionConfig, exec, http, signal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    groups: Vec<FileGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    name: String,
    watch: Vec<PathBuf>,
    debounce: Option<String>,
    debounce_max: Option<String>,
    min_reload_interval: Option<String>,
    reload_on_start: Option<ReloadOnStart>,
    reload_retries: Option<u32>,
    app_uid: Option<u32>,
    app_gid: Option<u32>,
    #[serde(default)]
    app_groups: Vec<u32>,
    access_policy: Option<AccessPolicy>,
    consistency_check: Option<bool>,
    consistency_timeout: Option<String>,
    max_files: Option<usize>,
    follow_external_symlinks: Option<bool>,
    consumed_as: Option<ConsumedAs>,
    targets: Vec<FileTarget>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum FileTarget {
    Http {
        name: Option<String>,
        url: String,
        method: Option<String>,
        expected_status: Option<u16>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        header_files: BTreeMap<String, PathBuf>,
        bearer_token_file: Option<PathBuf>,
        timeout: Option<String>,
        verify_url: Option<String>,
        verify_contains: Option<String>,
        verify_served_cert: Option<String>,
        tls: Option<FileTls>,
    },
    Signal {
        name: Option<String>,
        signal: Option<String>,
        process_name: Option<String>,
        process_cmdline: Option<String>,
        pid_file: Option<PathBuf>,
        #[serde(default)]
        signal_all: bool,
        verify_url: Option<String>,
        verify_contains: Option<String>,
        verify_served_cert: Option<String>,
        tls: Option<FileTls>,
    },
    Exec {
        name: Option<String>,
        command: Command,
        timeout: Option<String>,
        verify_url: Option<String>,
        verify_contains: Option<String>,
        verify_served_cert: Option<String>,
        tls: Option<FileTls>,
    },
}

/// A target's TLS options for its https:// URLs (the `--tls-*` flags' fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

impl FileTarget {
    /// The target's own TLS options, or the flags' (`at`: where it is, for messages).
    fn tls(
        &self,
        defaults: Option<&std::sync::Arc<TlsClient>>,
        at: &str,
        f: &mut Findings,
    ) -> Option<std::sync::Arc<TlsClient>> {
        let (FileTarget::Http { tls, .. }
        | FileTarget::Signal { tls, .. }
        | FileTarget::Exec { tls, .. }) = self;
        let Some(t) = tls else {
            return defaults.cloned();
        };
        if t.client_cert_file.is_some() != t.client_key_file.is_some() {
            f.error(format!(
                "{at}tls: client_cert_file and client_key_file go together (mTLS needs both)"
            ));
        }
        Some(std::sync::Arc::new(TlsClient {
            ca_file: t.ca_file.clone(),
            client_cert_file: t.client_cert_file.clone(),
            client_key_file: t.client_key_file.clone(),
            server_name: t.server_name.clone(),
            insecure_skip_verify: t.insecure_skip_verify,
        }))
    }

    /// `verify_served_cert`, which every kind of target has.
    fn served_cert(&self) -> Option<&str> {
        match self {
            FileTarget::Http {
                verify_served_cert, ..
            }
            | FileTarget::Signal {
                verify_served_cert, ..
            }
            | FileTarget::Exec {
                verify_served_cert, ..
            } => verify_served_cert.as_deref(),
        }
    }

    /// The verification fields every kind of target has.
    fn verify(&self) -> (Option<&str>, Option<&str>) {
        match self {
            FileTarget::Http {
                verify_url,
                verify_contains,
                ..
            }
            | FileTarget::Signal {
                verify_url,
                verify_contains,
                ..
            }
            | FileTarget::Exec {
                verify_url,
                verify_contains,
                ..
            } => (verify_url.as_deref(), verify_contains.as_deref()),
        }
    }
}

/// A command as one shell-style string or as an argument list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Command {
    Line(String),
    Argv(Vec<String>),
}

/// Validates the text of a config file shown as `shown` in messages.
pub(crate) fn parse(
    shown: &str,
    text: &str,
    gd: &GroupDefaults,
    defaults: &TargetDefaults,
    f: &mut Findings,
) -> Vec<GroupConfig> {
    // The path of the offending field (`groups[0].app_uid`) goes with every parse error.
    let file: FileConfig =
        match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)) {
            Ok(file) => file,
            Err(e) => {
                let at = e.path().to_string();
                let field = if at == "." {
                    String::new()
                } else {
                    format!("{at}: ")
                };
                f.error(format!("--config {shown}: {field}{}", e.into_inner()));
                return Vec::new();
            }
        };
    if file.groups.is_empty() {
        f.error(format!(
            "--config {shown}: groups is empty: describe at least one watch group"
        ));
    }
    file.groups
        .into_iter()
        .enumerate()
        .map(|(gi, g)| {
            let at = format!("--config {shown}: groups[{gi}]");
            file_group(g, &at, gd, defaults, f)
        })
        .collect()
}

/// A group of the file (`at`: where it is, for messages), over the flags' defaults.
fn file_group(
    g: FileGroup,
    at: &str,
    gd: &GroupDefaults,
    defaults: &TargetDefaults,
    f: &mut Findings,
) -> GroupConfig {
    let mut dur = |field: &str, v: Option<String>, default| match v {
        None => default,
        Some(s) => parse::duration(&s).unwrap_or_else(|e| {
            f.error(format!("{at}.{field}: {e}"));
            default
        }),
    };
    let debounce = dur("debounce", g.debounce, gd.debounce);
    let debounce_max = dur("debounce_max", g.debounce_max, gd.debounce_max);
    let consistency_timeout = dur(
        "consistency_timeout",
        g.consistency_timeout,
        gd.consistency_timeout,
    );
    let min_reload_interval = dur(
        "min_reload_interval",
        g.min_reload_interval,
        defaults.min_reload_interval,
    );
    if debounce_max < debounce {
        f.error(format!(
            "{at}.debounce_max must not be shorter than debounce"
        ));
    }
    if g.max_files == Some(0) {
        f.error(format!("{at}.max_files must be at least 1"));
    }
    if g.watch.is_empty() {
        f.error(format!(
            "{at}.watch is empty: list the files or directories to watch"
        ));
    }
    if g.targets.is_empty() {
        f.error(format!(
            "{at}.targets is empty: add an http, signal or exec target"
        ));
    }
    let app = if g.app_uid.is_some() || g.app_gid.is_some() || !g.app_groups.is_empty() {
        flags::declared_identity(
            g.app_uid,
            g.app_gid,
            &g.app_groups,
            &format!("{at}."),
            ["app_uid", "app_gid", "app_groups"],
            f,
        )
    } else {
        gd.app.clone()
    };
    let group_defaults = TargetDefaults {
        min_reload_interval,
        reload_on_start: g.reload_on_start.unwrap_or(defaults.reload_on_start),
        retries: g.reload_retries.or(defaults.retries),
        ..defaults.clone()
    };
    let targets = g
        .targets
        .into_iter()
        .enumerate()
        .filter_map(|(ti, t)| {
            file_target_config(t, &format!("{at}.targets[{ti}]."), &group_defaults, f)
        })
        .collect();
    GroupConfig {
        name: g.name,
        paths: watch_paths(&g.watch, &format!("{at}.watch"), f),
        debounce,
        debounce_max,
        app,
        access_policy: g.access_policy.unwrap_or(gd.access_policy),
        consistency_check: g.consistency_check.unwrap_or(gd.consistency_check),
        consistency_timeout,
        max_files: g.max_files.unwrap_or(gd.max_files),
        follow_external_symlinks: g
            .follow_external_symlinks
            .unwrap_or(gd.follow_external_symlinks),
        consumed_as: g.consumed_as.unwrap_or(gd.consumed_as),
        targets,
    }
}

/// A target of a group (`at`: its field path, ending in `.`), over the group's defaults.
fn file_target_config(
    t: FileTarget,
    at: &str,
    group_defaults: &TargetDefaults,
    f: &mut Findings,
) -> Option<TargetConfig> {
    let tls = t.tls(group_defaults.tls.as_ref(), at, f);
    let verify = match t.verify() {
        (None, None) => group_defaults.verify.clone(),
        (url, contains) => flags::verify(
            url,
            contains,
            group_defaults.timeout,
            [&format!("{at}verify_url"), &format!("{at}verify_contains")],
            f,
        )
        .map(|mut v| {
            let at = format!("{at}verify_url");
            parse::secure(&mut v.endpoint, tls.as_ref(), &at, f);
            v
        }),
    };
    let served_cert = match t.served_cert() {
        None => group_defaults.served_cert.clone(),
        Some(e) => parse::served_cert(e, group_defaults.timeout)
            .map_err(|e| f.error(format!("{at}verify_served_cert: {e}")))
            .ok(),
    };
    let own = TargetDefaults {
        tls: tls.clone(),
        ..group_defaults.clone()
    };
    let (name, action) = file_target(t, at, &own, f)?;
    if let Some(n) = &name
        && (n.is_empty() || n.chars().any(char::is_control))
    {
        f.error(format!(
            "{at}name: '{}' is not a target name (not empty, no control characters)",
            crate::text::value(n)
        ));
    }
    let mut t = target(name.unwrap_or_default(), action, group_defaults);
    t.verify = verify;
    t.served_cert = served_cert;
    Some(t)
}

/// The action of a target: its kind's own fields, read by the kind.
fn file_target(
    t: FileTarget,
    at: &str,
    d: &TargetDefaults,
    f: &mut Findings,
) -> Option<(Option<String>, ActionConfig)> {
    let timeout = |v: Option<String>, f: &mut Findings| match v {
        None => Some(d.timeout),
        Some(s) => parse::duration(&s)
            .map_err(|e| f.error(format!("{at}timeout: {e}")))
            .ok(),
    };
    match t {
        FileTarget::Http {
            name,
            url,
            method,
            expected_status,
            headers,
            header_files,
            bearer_token_file,
            timeout: to,
            ..
        } => {
            let fields = http::FileFields {
                url,
                method,
                expected_status,
                headers,
                header_files,
                bearer_token_file,
                timeout: timeout(to, f),
            };
            let action = http::from_file(fields, at, d.tls.as_ref(), f)?;
            Some((name, ActionConfig::Http(action)))
        }
        FileTarget::Signal {
            name,
            signal,
            process_name,
            process_cmdline,
            pid_file,
            signal_all,
            ..
        } => {
            let fields = signal::FileFields {
                signal: signal.as_deref(),
                process_name: process_name.as_deref(),
                process_cmdline: process_cmdline.as_deref(),
                pid_file: pid_file.as_deref(),
                signal_all,
            };
            let action = signal::from_file(fields, at, f)?;
            Some((name, ActionConfig::Signal(action)))
        }
        FileTarget::Exec {
            name,
            command,
            timeout: to,
            ..
        } => {
            let command = match command {
                Command::Line(l) => exec::FileCommand::Line(l),
                Command::Argv(a) => exec::FileCommand::Argv(a),
            };
            let action = exec::from_file(command, timeout(to, f), at, f)?;
            Some((name, ActionConfig::Exec(action)))
        }
    }
}
