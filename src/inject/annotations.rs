//! The pod template's `secret-reloader.io/*` annotations: what the pod's spec cannot say (the
//! process to signal when the image's entrypoint is not in the spec, a reload URL, how to group
//! volumes), each validated with the daemon's own parsers, so that an injected sidecar never fails
//! on a value the injector accepted. An unknown annotation of the prefix is an error: a typo must
//! not be silently ignored.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Layout;
use crate::config::parse;

/// The annotations' prefix.
pub const PREFIX: &str = "secret-reloader.io/";
/// `"true"`: inject this pod (`"false"`: never, even with `--all`).
pub const INJECT: &str = "secret-reloader.io/inject";
/// Written by the injector: what it changed, to take it out again (`--remove`, re-injection).
pub const INJECTED: &str = "secret-reloader.io/injected";
/// Written by the injector: mounts that kubelet never updates (`subPath`), hence not watched.
pub const UNWATCHED: &str = "secret-reloader.io/unwatched";

/// What the annotations ask, validated.
#[derive(Debug, Default, Clone)]
pub(crate) struct Wishes {
    pub(crate) container: Option<String>,
    pub(crate) app_uid: Option<u32>,
    pub(crate) app_gid: Option<u32>,
    pub(crate) process_name: Option<String>,
    /// How the app is told, and what is checked after.
    pub(crate) action: ActionWishes,
    /// Group name → volume names (`groups`).
    pub(crate) groups: BTreeMap<String, Vec<String>>,
    pub(crate) layout: Option<Layout>,
}

/// The annotations about the action, each as written (validated by the daemon's parser), passed
/// to the sidecar's configuration as they are.
#[derive(Debug, Default, Clone)]
pub(crate) struct ActionWishes {
    pub(crate) signal: Option<String>,
    pub(crate) reload_url: Option<String>,
    pub(crate) verify_url: Option<String>,
    pub(crate) verify_served_cert: Option<String>,
    pub(crate) splay: Option<String>,
    pub(crate) restart_on_env_change: bool,
    /// `--verify-json` conditions, one per line of the annotation.
    pub(crate) verify_json: Vec<String>,
    pub(crate) applied_when: Option<String>,
    pub(crate) worker_drain_timeout: Option<String>,
}

/// The annotations a user writes, with what each takes (the `--help` of the annotations).
pub(crate) const KNOWN: &[(&str, &str)] = &[
    ("inject", "\"true\" or \"false\""),
    (
        "container",
        "the app container's name, when the pod has several",
    ),
    (
        "app-uid",
        "the app's uid, when runAsUser is not declared (it comes from the image)",
    ),
    ("app-gid", "the app's gid, when runAsGroup is not declared"),
    (
        "process-name",
        "the app's process name (default: the file name of command[0])",
    ),
    ("signal", "the reload signal (default HUP)"),
    ("reload-url", "call this URL instead of signalling"),
    ("verify-url", "probed after each reload"),
    (
        "verify-json",
        "conditions on the verify URL's JSON answer, one per line: '/data/reloadConfigSuccess == true'",
    ),
    (
        "applied-when",
        "workers-replaced: applied once every worker started after the reload (nginx, HAProxy, gunicorn)",
    ),
    (
        "worker-drain-timeout",
        "with applied-when workers-replaced: how long old workers may run (default 5m)",
    ),
    (
        "verify-served-cert",
        "HOST:PORT or postgres://HOST:PORT where the app serves the certificate",
    ),
    (
        "splay",
        "spread the first reaction over this duration (fleets)",
    ),
    (
        "restart-on-env-change",
        "\"true\": restart the app (SIGTERM) when a Secret it took as environment variables changes",
    ),
    (
        "groups",
        "watch groups of several volumes: 'name=vol1,vol2;other=vol3'",
    ),
    ("layout", "native or classic"),
];

/// Whether the template asks to be injected: `Some(true)`/`Some(false)` when annotated.
pub(crate) fn inject_asked(
    annotations: Option<&Map<String, Value>>,
) -> Result<Option<bool>, String> {
    match annotations.and_then(|a| a.get(INJECT)) {
        None => Ok(None),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(v) => Err(format!(
            "annotation {INJECT} is {}: write \"true\" or \"false\" (quoted: annotations are strings)",
            shown(v)
        )),
    }
}

/// Reads and validates every `secret-reloader.io/*` annotation; all errors at once.
pub(crate) fn read(annotations: Option<&Map<String, Value>>) -> Result<Wishes, Vec<String>> {
    let mut w = Wishes::default();
    let mut errors = Vec::new();
    let Some(map) = annotations else {
        return Ok(w);
    };
    for (key, value) in map {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if key == INJECTED || key == UNWATCHED {
            continue;
        }
        let Value::String(v) = value else {
            errors.push(format!(
                "annotation {key} is {}: annotations are strings (quote the value)",
                shown(value)
            ));
            continue;
        };
        if let Err(e) = one(&mut w, name, v) {
            errors.push(format!("annotation {}: {e}", crate::text::value(key)));
        }
    }
    if errors.is_empty() {
        Ok(w)
    } else {
        Err(errors)
    }
}

fn one(w: &mut Wishes, name: &str, v: &str) -> Result<(), String> {
    let text = || Some(v.trim().to_string());
    match name {
        "inject" => {}
        "container" => w.container = text(),
        "app-uid" => w.app_uid = Some(id(v)?),
        "app-gid" => w.app_gid = Some(id(v)?),
        "process-name" => {
            if v.trim().is_empty() || v.contains('/') {
                return Err(
                    "write the process's name (its comm or argv[0]'s file name), without a path"
                        .into(),
                );
            }
            w.process_name = text();
        }
        "signal" => {
            parse::signal(v)?;
            w.action.signal = text();
        }
        "reload-url" => {
            parse::endpoint(v)?;
            w.action.reload_url = text();
        }
        "verify-url" => {
            parse::endpoint(v)?;
            w.action.verify_url = text();
        }
        "verify-served-cert" => {
            parse::served_cert(v, std::time::Duration::from_secs(1))?;
            w.action.verify_served_cert = text();
        }
        "splay" => {
            parse::duration(v)?;
            w.action.splay = text();
        }
        "verify-json" => {
            w.action.verify_json = v
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| crate::config::json_check::parse(l).map(|_| l.to_string()))
                .collect::<Result<_, _>>()?;
            if w.action.verify_json.is_empty() {
                return Err("write one condition per line: '/data/ready == true'".into());
            }
        }
        "applied-when" => {
            if !matches!(v.trim(), "signalled" | "workers-replaced") {
                return Err(format!(
                    "'{}' is not signalled or workers-replaced",
                    crate::text::value(v)
                ));
            }
            w.action.applied_when = text();
        }
        "worker-drain-timeout" => {
            parse::duration(v)?;
            w.action.worker_drain_timeout = text();
        }
        "restart-on-env-change" => {
            w.action.restart_on_env_change = match v {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(format!(
                        "'{}' is not \"true\" or \"false\"",
                        crate::text::value(v)
                    ));
                }
            }
        }
        "groups" => w.groups = groups(v)?,
        "layout" => {
            w.layout = Some(match v {
                "native" => Layout::Native,
                "classic" => Layout::Classic,
                _ => {
                    return Err(format!(
                        "'{}' is not native or classic",
                        crate::text::value(v)
                    ));
                }
            })
        }
        _ => {
            let names: Vec<_> = KNOWN.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown annotation (a typo?): the known ones are {PREFIX}{{{}}}",
                names.join(",")
            ));
        }
    }
    Ok(())
}

/// A uid or gid.
fn id(v: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n < u32::MAX)
        .ok_or_else(|| format!("'{}' is not a uid/gid (a number)", crate::text::value(v)))
}

/// `name=vol1,vol2;other=vol3`.
fn groups(v: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for part in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            format!(
                "'{}' is not NAME=VOLUME[,VOLUME...]: write it like 'web=tls,config;db=db-cert'",
                crate::text::value(part)
            )
        };
        let (name, vols) = part.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let vols: Vec<String> = vols
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if name.is_empty() || vols.is_empty() || !label_like(name) {
            return Err(bad());
        }
        for vol in &vols {
            if !seen.insert(vol.clone()) {
                return Err(format!(
                    "volume '{}' is in two groups: a volume belongs to one",
                    crate::text::value(vol)
                ));
            }
        }
        if out.insert(name.to_string(), vols).is_some() {
            return Err(format!(
                "group '{}' is named twice",
                crate::text::value(name)
            ));
        }
    }
    Ok(out)
}

/// Letters, digits, `-`, `_`, `.`: what a group's name (a metric label) should be.
pub(crate) fn label_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    crate::text::value(&s.chars().take(60).collect::<String>())
}
