//! The signal kind: signal the app's process in the shared PID namespace. Its configuration,
//! from the flags (`--signal`, `--process-name`, `--process-cmdline`, `--pid-file`,
//! `--signal-all`) and from a config file's `"type": "signal"` target; [`send`] runs it;
//! [`doctor`] checks it. An app that took its keys as environment variables is restarted
//! instead ([`super::restart`]).

pub(crate) mod doctor;
pub(crate) mod send;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::config::compat_flags;
use crate::config::{Findings, parse};
use crate::process::Selector;

/// The JSON Schema of a config file's `"type": "signal"` target (`$defs.signal_target` of
/// `deploy/config.schema.json`, which a test holds to it).
pub(crate) const SCHEMA: &str = include_str!("schema.json");

/// Its flags and config file fields, as `docs/reference.md` shows them (a test holds the page to
/// it).
pub(crate) const DOC: &str = include_str!("doc.md");

/// The signal kind's flags.
#[derive(Debug, clap::Args)]
pub struct SignalFlags {
    /// Signal sent to the target process (HUP, USR1, TERM, ... or a number); `none` for an app
    /// that took the keys as environment variables (--consumed-as env): its environment is
    /// compared and reported, nothing is sent.
    #[arg(long, value_name = "NAME", env = "SECRET_RELOADER_SIGNAL")]
    pub signal: Option<String>,

    /// Target process by name (comm or `argv[0]` basename) in the shared PID namespace.
    #[arg(
        long,
        visible_alias = "process-executable-name",
        value_name = "NAME",
        env = "SECRET_RELOADER_PROCESS_NAME"
    )]
    pub process_name: Option<String>,

    /// Target process by a regular expression on its command line.
    #[arg(long, value_name = "REGEX", env = "SECRET_RELOADER_PROCESS_CMDLINE")]
    pub process_cmdline: Option<String>,

    /// Target process by the pid written in this file. Trusted only while the process it names
    /// started before the file was last written and is of --app-uid; with --process-name or
    /// --process-cmdline beside it, that process must match them too
    #[arg(long, value_name = "PATH", env = "SECRET_RELOADER_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Signal every matching process, not only the oldest one whose parent does not match.
    #[arg(long, env = "SECRET_RELOADER_SIGNAL_ALL")]
    pub signal_all: bool,

    /// When a signal counts as applied: `signalled` (once sent and verified), or
    /// `workers-replaced` (also once every worker of the process started after the change: for
    /// apps that reload by replacing their workers, as nginx, HAProxy, gunicorn do)
    #[arg(long, value_name = "WHEN", env = "SECRET_RELOADER_APPLIED_WHEN")]
    pub applied_when: Option<String>,

    /// With --applied-when workers-replaced: how long the old workers may take to exit; after
    /// it the target is reported stale with them named, and not signalled again [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse::duration,
          env = "SECRET_RELOADER_WORKER_DRAIN_TIMEOUT")]
    pub worker_drain_timeout: Option<Duration>,
}

/// When a signal target counts as holding the version it was signalled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedWhen {
    /// Once the signal is sent (and the verifications pass): apps that reload in place
    /// (PostgreSQL, Prometheus). Their workers are counted for information.
    Signalled,
    /// Also once every worker started after the change: apps that reload by starting new
    /// workers while the old ones finish their connections.
    WorkersReplaced,
}

impl AppliedWhen {
    /// The flag's and field's value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AppliedWhen::Signalled => "signalled",
            AppliedWhen::WorkersReplaced => "workers-replaced",
        }
    }

    fn parse(raw: &str) -> Result<AppliedWhen, String> {
        match raw.trim() {
            "signalled" => Ok(AppliedWhen::Signalled),
            "workers-replaced" => Ok(AppliedWhen::WorkersReplaced),
            other => Err(format!(
                "'{}' is not signalled or workers-replaced",
                crate::text::value(other)
            )),
        }
    }
}

/// How long old workers may take to exit by default (`--worker-drain-timeout`).
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// A signal to the target process.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// The signal; `None` for `--signal none` (`"signal": "none"`): nothing is ever sent, the
    /// process's environment is only compared and reported (a group consumed as env only, see
    /// [`crate::action::restart`]).
    pub signal: Option<Signal>,
    /// How the process is found at every reload.
    pub selector: Selector,
    /// Signal every match instead of the one top-level match.
    pub all: bool,
    /// When a signal counts as applied.
    pub applied_when: AppliedWhen,
    /// With [`AppliedWhen::WorkersReplaced`]: how long old workers may take to exit.
    pub drain_timeout: Duration,
}

impl SignalConfig {
    /// The target's name when none is given: `signal:` and the process it selects.
    pub(crate) fn default_name(&self) -> String {
        format!("signal:{}", self.selector.short())
    }

    /// What `/status` shows.
    pub(crate) fn summary(&self) -> Value {
        json!({
            "signal": self.signal.map_or("none", |s| s.as_str()),
            "selector": self.selector.summary(),
            "signal_all": self.all,
            "applied_when": self.applied_when.as_str(),
            "worker_drain_timeout": (self.applied_when == AppliedWhen::WorkersReplaced)
                .then(|| humantime::format_duration(self.drain_timeout).to_string()),
        })
    }
}

/// The signal target of the command line, if its flags name a process.
pub(crate) fn from_flags(
    args: &SignalFlags,
    signal_method: bool,
    f: &mut Findings,
) -> Option<SignalConfig> {
    let selector = selector(
        process_name(args, signal_method),
        args.process_cmdline.as_deref(),
        args.pid_file.as_deref(),
        "--",
        f,
    );
    match (selector, &args.signal) {
        (Some(selector), sig) => {
            let sig = sig.as_deref().unwrap_or("HUP");
            let signal = signal_or_none(sig).map_err(|e| f.error(format!("--signal: {e}")));
            let when = applied_when(
                args.applied_when.as_deref(),
                args.worker_drain_timeout,
                "",
                ["--applied-when", "--worker-drain-timeout"],
                f,
            );
            if let (Ok(signal), Some((applied_when, drain_timeout))) = (signal, when) {
                return Some(SignalConfig {
                    signal,
                    selector,
                    all: args.signal_all,
                    applied_when,
                    drain_timeout,
                });
            }
        }
        (None, Some(_)) => f.error(
            "--signal needs a target process: add --process-name, --process-cmdline or --pid-file",
        ),
        (None, None) if args.signal_all => {
            f.error("--signal-all needs --process-name or --process-cmdline")
        }
        (None, None) if args.applied_when.is_some() || args.worker_drain_timeout.is_some() => f
            .error(
                "--applied-when and --worker-drain-timeout are about a signal target's workers: \
                 add --process-name, --process-cmdline or --pid-file",
            ),
        (None, None) => {}
    }
    None
}

/// When a signal counts as applied, and the drain timeout; `prefix` and the two names say
/// where they come from (flags, or a config file's target), for messages; `None` after an error.
fn applied_when(
    when: Option<&str>,
    drain: Option<Duration>,
    prefix: &str,
    [when_name, drain_name]: [&str; 2],
    f: &mut Findings,
) -> Option<(AppliedWhen, Duration)> {
    let when = match when.map(AppliedWhen::parse).transpose() {
        Ok(w) => w.unwrap_or(AppliedWhen::Signalled),
        Err(e) => {
            f.error(format!("{prefix}{when_name}: {e}"));
            return None;
        }
    };
    match (when, drain) {
        (AppliedWhen::Signalled, Some(_)) => {
            f.error(format!(
                "{prefix}{drain_name} is the time old workers get with {when_name} \
                 workers-replaced: add it, or leave {drain_name} out"
            ));
            None
        }
        (_, Some(d)) if d.is_zero() => {
            f.error(format!(
                "{prefix}{drain_name}: 0 would report every reload stale at once: give old \
                 workers time to finish their connections (default 5m)"
            ));
            None
        }
        (w, d) => Some((w, d.unwrap_or(DRAIN_TIMEOUT))),
    }
}

/// A signal by name or number, or `none` (`None`: nothing is sent, see [`SignalConfig`]).
fn signal_or_none(raw: &str) -> Result<Option<Signal>, String> {
    if raw.trim().eq_ignore_ascii_case(NONE) {
        return Ok(None);
    }
    parse::signal(raw).map(Some)
}

/// The `--signal` value of a target that sends nothing.
pub(crate) const NONE: &str = "none";

/// The process a signal target selects: the flags', or prometheus-config-reloader's default
/// with `--reload-method=signal` (`signal_method`).
fn process_name(args: &SignalFlags, signal_method: bool) -> Option<&str> {
    match &args.process_name {
        Some(n) => Some(n),
        None if signal_method && args.process_cmdline.is_none() && args.pid_file.is_none() => {
            Some(compat_flags::PROMETHEUS_PROCESS)
        }
        None => None,
    }
}

/// A config file's `"type": "signal"` target: its own fields and those every target has.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTarget {
    /// The signal.
    pub signal: Option<String>,
    /// The app's process by name.
    pub process_name: Option<String>,
    /// The app's process by command line.
    pub process_cmdline: Option<String>,
    /// The app's process by pid file.
    pub pid_file: Option<PathBuf>,
    /// Every match.
    #[serde(default)]
    pub signal_all: bool,
    /// When a signal counts as applied.
    pub applied_when: Option<String>,
    /// How long old workers may take to exit.
    pub worker_drain_timeout: Option<String>,
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

/// The signal target of a config file's fields (`at`: the target's field path, for messages).
pub(crate) fn from_file(t: &FileTarget, at: &str, f: &mut Findings) -> Option<SignalConfig> {
    let (name, cmdline) = (t.process_name.as_deref(), t.process_cmdline.as_deref());
    let sel = selector(name, cmdline, t.pid_file.as_deref(), at, f);
    if sel.is_none()
        && t.process_name.is_none()
        && t.process_cmdline.is_none()
        && t.pid_file.is_none()
    {
        f.error(format!(
            "{at}: a signal target needs process_name, process_cmdline or pid_file"
        ));
    }
    let signal = signal_or_none(t.signal.as_deref().unwrap_or("HUP"))
        .map_err(|e| f.error(format!("{at}signal: {e}")))
        .ok();
    let drain = match t
        .worker_drain_timeout
        .as_deref()
        .map(crate::config::parse::duration)
    {
        Some(Err(e)) => {
            f.error(format!("{at}worker_drain_timeout: {e}"));
            return None;
        }
        Some(Ok(d)) => Some(d),
        None => None,
    };
    let (applied_when, drain_timeout) = applied_when(
        t.applied_when.as_deref(),
        drain,
        at,
        ["applied_when", "worker_drain_timeout"],
        f,
    )?;
    Some(SignalConfig {
        signal: signal?,
        selector: sel?,
        all: t.signal_all,
        applied_when,
        drain_timeout,
    })
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
        Some(p) => Some(Selector::PidFile(parse::absolute(p), matcher.map(Box::new))),
        None => matcher,
    }
}
