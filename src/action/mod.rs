//! The action kinds: what a target does to make its app apply a version. Each kind is one
//! folder that owns all of it:
//!
//! - `http`: call the app's reload endpoint; `signal`: signal its process in the shared PID
//!   namespace; `exec`: run a command; `restart`: for an app that took its keys as
//!   environment variables, restart it with a signal once its environment differs from the
//!   files (a mode of the signal kind, kept apart);
//! - in each: `mod.rs` its flags and its config file target as declared, the validated
//!   configuration built from either (each error naming its flag or field), its name and its
//!   `/status` summary; the run-time action (`call.rs`, `send.rs`, `run.rs`); `doctor.rs` its
//!   checks; `metrics.rs` its own series; `schema.json` and `doc.md`.
//!
//! Everything else knows kinds only through [`Kind`], [`ActionConfig`] and `Action`, whose
//! matches are exhaustive: a new kind is a folder, a variant of each of the three, one flatten
//! line in `config::cli` and one variant of `config::json_file`'s target enum; the compiler
//! names every match that must learn it. ARCHITECTURE.md has the recipe.

pub(crate) mod exec;
pub(crate) mod http;
pub(crate) mod outcome;
pub(crate) mod restart;
pub(crate) mod runtime;
pub(crate) mod signal;

pub(crate) use outcome::{ActionError, Outcome};
pub(crate) use runtime::Action;

use std::sync::Arc;

use serde_json::Value;

use crate::process::Selector;

/// The kinds of action, as they are named in `/status`, the metrics and the doctor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An HTTP call.
    Http,
    /// A signal to a process.
    Signal,
    /// A command.
    Exec,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Http, Kind::Signal, Kind::Exec];

    /// Its flags and config file fields as a Markdown table: its folder's `doc.md`.
    pub fn doc(self) -> &'static str {
        match self {
            Kind::Http => http::DOC,
            Kind::Signal => signal::DOC,
            Kind::Exec => exec::DOC,
        }
    }

    /// The JSON Schema of a config file's target of this kind: its folder's `schema.json`.
    pub fn schema(self) -> &'static str {
        match self {
            Kind::Http => http::SCHEMA,
            Kind::Signal => signal::SCHEMA,
            Kind::Exec => exec::SCHEMA,
        }
    }

    /// `http`, `signal` or `exec`: the config file's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Signal => "signal",
            Kind::Exec => "exec",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reload does, validated.
#[derive(Debug, Clone)]
pub enum ActionConfig {
    /// Call an HTTP endpoint.
    Http(http::HttpConfig),
    /// Signal a process in the shared PID namespace.
    Signal(signal::SignalConfig),
    /// Run a command.
    Exec(exec::ExecConfig),
}

impl ActionConfig {
    /// Its kind.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            ActionConfig::Http(_) => Kind::Http,
            ActionConfig::Signal(_) => Kind::Signal,
            ActionConfig::Exec(_) => Kind::Exec,
        }
    }

    /// The target's name when none is given.
    pub(crate) fn default_name(&self) -> String {
        match self {
            ActionConfig::Http(h) => h.default_name(),
            ActionConfig::Signal(s) => s.default_name(),
            ActionConfig::Exec(e) => e.default_name(),
        }
    }

    /// What `/status` shows of it (never a header value, a token or a query).
    pub(crate) fn summary(&self) -> Value {
        let mut v = match self {
            ActionConfig::Http(h) => h.summary(),
            ActionConfig::Signal(s) => s.summary(),
            ActionConfig::Exec(e) => e.summary(),
        };
        if let Value::Object(o) = &mut v {
            o.insert("type".into(), self.kind().as_str().into());
        }
        v
    }

    /// The process the action selects, when it has one (a signal target).
    pub(crate) fn selector(&self) -> Option<&Selector> {
        match self {
            ActionConfig::Signal(s) => Some(&s.selector),
            ActionConfig::Http(_) | ActionConfig::Exec(_) => None,
        }
    }

    /// Whether its attempts are HTTP calls, whose answers have series of their own.
    pub(crate) fn makes_calls(&self) -> bool {
        match self {
            ActionConfig::Http(_) => true,
            ActionConfig::Signal(_) | ActionConfig::Exec(_) => false,
        }
    }

    /// The endpoint it calls, when it has one (an HTTP target).
    pub(crate) fn endpoint(&self) -> Option<&crate::config::Endpoint> {
        match self {
            ActionConfig::Http(h) => Some(&h.endpoint),
            ActionConfig::Signal(_) | ActionConfig::Exec(_) => None,
        }
    }
}

/// The actions the command line describes: an HTTP call per reload URL (`reload_urls`: the
/// flag's values or its variable's, after the other tools' defaults; `tls`: the `--tls-*`
/// options), the signal, a command per `--exec`.
pub(crate) fn from_flags(
    args: &crate::config::cli::RunArgs,
    reload_urls: &[String],
    tls: Option<&Arc<crate::config::TlsClient>>,
    f: &mut crate::config::Findings,
) -> Vec<ActionConfig> {
    let timeout = args.reload_timeout;
    // prometheus-config-reloader's `--reload-method=signal`: SIGHUP to `prometheus` by default.
    let signal_method = crate::config::compat_flags::reload_method(&args.http.reload_method)
        == Some(crate::config::compat_flags::ReloadMethod::Signal);
    let mut out: Vec<ActionConfig> = http::from_flags(&args.http, reload_urls, timeout, tls, f)
        .into_iter()
        .map(ActionConfig::Http)
        .collect();
    out.extend(signal::from_flags(&args.signal, signal_method, f).map(ActionConfig::Signal));
    out.extend(
        exec::from_flags(&args.exec, timeout, f)
            .into_iter()
            .map(ActionConfig::Exec),
    );
    out
}
