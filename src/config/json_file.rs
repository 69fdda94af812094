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
//! The same text may come inline (`--config-json`, a sidecar whose groups are in its arguments).
//! Unknown fields are errors (a typo must not silently turn a setting off), and every message
//! names the file (or `--config-json`) and the field path, like `groups[1].targets[0].url`.

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

/// A target: its kind's own declaration of its fields (each denies unknown ones), chosen by
/// `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum FileTarget {
    Http(http::FileTarget),
    Signal(signal::FileTarget),
    Exec(exec::FileTarget),
}

/// The fields every kind of target has.
struct Common<'a> {
    name: &'a Option<String>,
    verify_url: Option<&'a str>,
    verify_contains: Option<&'a str>,
    verify_json: Option<&'a [String]>,
    verify_served_cert: Option<&'a str>,
    tls: Option<&'a super::tls::FileTls>,
}

/// The fields every kind's declaration repeats, read the same way for each.
macro_rules! common {
    ($t:expr) => {
        Common {
            name: &$t.name,
            verify_url: $t.verify_url.as_deref(),
            verify_contains: $t.verify_contains.as_deref(),
            verify_json: $t.verify_json.as_deref(),
            verify_served_cert: $t.verify_served_cert.as_deref(),
            tls: $t.tls.as_ref(),
        }
    };
}

impl FileTarget {
    /// The fields every kind has.
    fn common(&self) -> Common<'_> {
        match self {
            FileTarget::Http(t) => common!(t),
            FileTarget::Signal(t) => common!(t),
            FileTarget::Exec(t) => common!(t),
        }
    }

    /// The target's own TLS options, or the flags' (`at`: where it is, for messages).
    fn tls(
        &self,
        defaults: Option<&std::sync::Arc<TlsClient>>,
        at: &str,
        f: &mut Findings,
    ) -> Option<std::sync::Arc<TlsClient>> {
        match self.common().tls {
            None => defaults.cloned(),
            Some(t) => Some(t.client(at, f)),
        }
    }

    /// `verify_served_cert`, which every kind of target has.
    fn served_cert(&self) -> Option<&str> {
        self.common().verify_served_cert
    }

    /// The verification fields every kind of target has.
    fn verify(&self) -> (Option<&str>, Option<&str>, Option<&[String]>) {
        let c = self.common();
        (c.verify_url, c.verify_contains, c.verify_json)
    }
}

/// Validates the text of a config file; `source` (`--config FILE` or `--config-json`) begins
/// every message.
pub(crate) fn parse(
    source: &str,
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
                f.error(format!("{source}: {field}{}", e.into_inner()));
                return Vec::new();
            }
        };
    if file.groups.is_empty() {
        f.error(format!(
            "{source}: groups is empty: describe at least one watch group"
        ));
    }
    file.groups
        .into_iter()
        .enumerate()
        .map(|(gi, g)| {
            let at = format!("{source}: groups[{gi}]");
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
    if t.verify().2.is_some_and(<[String]>::is_empty) {
        f.error(format!(
            "{at}verify_json is empty: list conditions ('/data/ready == true') or leave it out"
        ));
    }
    let verify = match t.verify() {
        (None, None, None) => group_defaults.verify.clone(),
        (url, contains, json) => flags::verify(
            url,
            contains,
            json.unwrap_or_default(),
            group_defaults.timeout,
            [
                &format!("{at}verify_url"),
                &format!("{at}verify_contains"),
                &format!("{at}verify_json"),
            ],
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

/// The action of a target: its kind's own fields, read by the kind; and its name.
fn file_target(
    t: FileTarget,
    at: &str,
    d: &TargetDefaults,
    f: &mut Findings,
) -> Option<(Option<String>, ActionConfig)> {
    let timeout = |v: &Option<String>, f: &mut Findings| match v {
        None => Some(d.timeout),
        Some(s) => parse::duration(s)
            .map_err(|e| f.error(format!("{at}timeout: {e}")))
            .ok(),
    };
    let name = t.common().name.clone();
    let action = match t {
        FileTarget::Http(t) => {
            let timeout = timeout(&t.timeout, f);
            ActionConfig::Http(http::from_file(t, timeout, at, d.tls.as_ref(), f)?)
        }
        FileTarget::Signal(t) => ActionConfig::Signal(signal::from_file(&t, at, f)?),
        FileTarget::Exec(t) => {
            let timeout = timeout(&t.timeout, f);
            ActionConfig::Exec(exec::from_file(t.command, timeout, at, f)?)
        }
    };
    Some((name, action))
}
