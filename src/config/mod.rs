//! Flags, environment and the JSON config file → one validated [`Config`].
//!
//! Every problem is collected before giving up, and each message names the flag or field it is
//! about and what to do, so that one run of the program shows an operator everything to fix
//! (exit code 2).

pub mod file;
pub mod parse;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::cli::{Cli, LogFormat, LogLevel, ReloadOnStart, RunArgs};
use crate::fingerprint::FingerprintKey;
pub use parse::Endpoint;

/// Name of the watch group formed by `--watch` and the action flags.
pub const CLI_GROUP: &str = "default";

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch groups: paths watched together and the targets reloaded when their content changes.
    pub groups: Vec<GroupConfig>,
    /// Address of the metrics/status server.
    pub listen: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Interval of the safety-net rescan (`None`: off).
    pub resync_interval: Option<Duration>,
    /// Forced polling interval (`None`: inotify, polling only as a fallback).
    pub poll_interval: Option<Duration>,
    /// Key of the fingerprints that leave the process.
    pub fingerprint_key: FingerprintKey,
    /// Whether the key came from `--fingerprint-key-file` (comparable across pods).
    pub fingerprint_key_shared: bool,
    /// How long an action in flight may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Mount point of the PID namespace's procfs.
    pub proc_root: PathBuf,
}

/// Paths watched together, and what to reload when their content changes.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Group name: the `watch` label of the metrics.
    pub name: String,
    /// Absolute paths of watched files and directories.
    pub paths: Vec<PathBuf>,
    /// Quiet period for writers without a commit point.
    pub debounce: Duration,
    /// Cap on the total wait while events keep arriving.
    pub debounce_max: Duration,
    /// Targets reloaded on a change of this group's content.
    pub targets: Vec<TargetConfig>,
}

/// One thing to reload, and how persistently.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique name: the `target` label of the metrics.
    pub name: String,
    /// What a reload does.
    pub action: Action,
    /// At most one action per interval; changes in between coalesce.
    pub min_reload_interval: Duration,
    /// Start-up policy.
    pub reload_on_start: ReloadOnStart,
    /// Retries per version after the first failure (`None`: until it lands).
    pub retries: Option<u32>,
    /// Cap of the exponential backoff between failed attempts.
    pub retry_backoff_max: Duration,
}

/// What a reload does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Call an HTTP endpoint.
    Http(HttpAction),
    /// Signal a process in the shared PID namespace.
    Signal(SignalAction),
    /// Run a command.
    Exec(ExecAction),
}

/// An HTTP reload call.
#[derive(Debug, Clone)]
pub struct HttpAction {
    /// Where to call.
    pub endpoint: Endpoint,
    /// Request method.
    pub method: Method,
    /// Status that means success.
    pub expected_status: u16,
    /// Extra request headers (values marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bearer token, read at every call.
    pub bearer_token_file: Option<PathBuf>,
    /// Limit on the whole call, connection included.
    pub timeout: Duration,
}

/// A signal to the target process.
#[derive(Debug, Clone)]
pub struct SignalAction {
    /// The signal.
    pub signal: Signal,
    /// How the process is found at every reload.
    pub selector: Selector,
    /// Signal every match instead of the oldest top-level one.
    pub all: bool,
}

/// How the target process is found.
#[derive(Debug, Clone)]
pub enum Selector {
    /// comm or argv[0] basename.
    Name(String),
    /// Regular expression on the command line.
    Cmdline(regex_lite::Regex),
    /// Pid read from a file.
    PidFile(PathBuf),
}

/// A command run on change.
#[derive(Debug, Clone)]
pub struct ExecAction {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Limit on its run time.
    pub timeout: Duration,
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "invalid configuration: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Defaults shared by the targets of one group, taken from the flags.
#[derive(Debug, Clone)]
pub(crate) struct TargetDefaults {
    pub min_reload_interval: Duration,
    pub reload_on_start: ReloadOnStart,
    pub retries: Option<u32>,
    pub retry_backoff_max: Duration,
    pub timeout: Duration,
}

impl Config {
    /// Parses a full command line (program name first) as the binary does. Clap's own usage
    /// errors are returned as text too.
    pub fn from_argv<I, T>(argv: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(argv).map_err(|e| ConfigError(vec![e.to_string()]))?;
        Config::from_args(&cli.run)
    }

    /// Validates parsed flags (and the `--config` file they name).
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        let mut errs = Vec::new();
        let defaults = TargetDefaults {
            min_reload_interval: args.min_reload_interval,
            reload_on_start: args.reload_on_start,
            retries: args.reload_retries,
            retry_backoff_max: args.retry_backoff_max,
            timeout: args.reload_timeout,
        };
        let mut groups = Vec::new();
        let cli_actions = cli_actions(args, &mut errs);
        if !args.watch.is_empty() || !cli_actions.is_empty() {
            if args.watch.is_empty() {
                errs.push("the action flags need something to watch: add --watch PATH".into());
            }
            if !any_action_flag(args) {
                errs.push(
                    "no action given: add --reload-url URL, --process-name NAME (or \
                     --process-cmdline/--pid-file, with --signal), or --exec COMMAND"
                        .into(),
                );
            }
            let targets = cli_actions
                .into_iter()
                .map(|action| target(String::new(), action, &defaults))
                .collect();
            groups.push(GroupConfig {
                name: CLI_GROUP.to_string(),
                paths: watch_paths(&args.watch, "--watch", &mut errs),
                debounce: args.debounce,
                debounce_max: args.debounce_max,
                targets,
            });
        }
        if let Some(path) = &args.config {
            groups.extend(file::load(path, args, &defaults, &mut errs));
        }
        if groups.is_empty() && errs.is_empty() {
            errs.push(
                "nothing to watch: give --watch PATH with an action, or --config FILE".into(),
            );
        }
        if args.debounce_max < args.debounce {
            errs.push("--debounce-max must not be shorter than --debounce".into());
        }
        if let Some(p) = args.poll_interval {
            if p < Duration::from_millis(10) {
                errs.push("--poll-interval must be at least 10ms".into());
            }
        }
        check_names(&mut groups, &mut errs);
        let listen = parse::listen(&args.listen)
            .map_err(|e| errs.push(format!("--listen: {e}")))
            .ok();
        let (fingerprint_key, fingerprint_key_shared) = match &args.fingerprint_key_file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) if !bytes.trim_ascii().is_empty() => {
                    (FingerprintKey::new(bytes.trim_ascii().to_vec()), true)
                }
                Ok(_) => {
                    errs.push(format!(
                        "--fingerprint-key-file: {} is empty",
                        path.display()
                    ));
                    (FingerprintKey::new(Vec::new()), true)
                }
                Err(e) => {
                    errs.push(format!(
                        "--fingerprint-key-file: cannot read {}: {e}",
                        path.display()
                    ));
                    (FingerprintKey::new(Vec::new()), true)
                }
            },
            None => {
                match FingerprintKey::random() {
                    Ok(key) => (key, false),
                    Err(e) => {
                        errs.push(format!("cannot draw a random fingerprint key ({e}): give --fingerprint-key-file"));
                        (FingerprintKey::new(Vec::new()), false)
                    }
                }
            }
        };
        match (errs.is_empty(), listen) {
            (true, Some(listen)) => Ok(Config {
                groups,
                listen,
                log_format: args.log_format,
                log_level: args.log_level,
                resync_interval: (!args.resync_interval.is_zero()).then_some(args.resync_interval),
                poll_interval: args.poll_interval,
                fingerprint_key,
                fingerprint_key_shared,
                shutdown_grace: args.shutdown_grace,
                proc_root: args.proc_root.clone(),
            }),
            _ => Err(ConfigError(errs)),
        }
    }

    /// The configuration in force, as shown by `/status`: no header values, no URL queries.
    pub fn summary(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|g| {
                json!({
                    "name": g.name,
                    "watch": g.paths,
                    "debounce": humantime::format_duration(g.debounce).to_string(),
                    "debounce_max": humantime::format_duration(g.debounce_max).to_string(),
                    "targets": g.targets.iter().map(TargetConfig::summary).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "groups": groups,
            "listen": self.listen.to_string(),
            "resync_interval": self.resync_interval.map(|d| humantime::format_duration(d).to_string()),
            "poll_interval": self.poll_interval.map(|d| humantime::format_duration(d).to_string()),
            "fingerprint_key": if self.fingerprint_key_shared { "file" } else { "random per process" },
        })
    }
}

impl TargetConfig {
    fn summary(&self) -> Value {
        let action = match &self.action {
            Action::Http(h) => json!({
                "type": "http",
                "url": h.endpoint.label(),
                "method": h.method.as_str(),
                "expected_status": h.expected_status,
                "headers": h.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                "bearer_token_file": h.bearer_token_file,
                "timeout": humantime::format_duration(h.timeout).to_string(),
            }),
            Action::Signal(s) => json!({
                "type": "signal",
                "signal": s.signal.as_str(),
                "selector": match &s.selector {
                    Selector::Name(n) => json!({"process_name": n}),
                    Selector::Cmdline(r) => json!({"process_cmdline": r.as_str()}),
                    Selector::PidFile(p) => json!({"pid_file": p}),
                },
                "signal_all": s.all,
            }),
            Action::Exec(e) => json!({
                "type": "exec",
                "command": e.argv.first(),
                "timeout": humantime::format_duration(e.timeout).to_string(),
            }),
        };
        json!({
            "name": self.name,
            "action": action,
            "min_reload_interval": humantime::format_duration(self.min_reload_interval).to_string(),
            "reload_on_start": self.reload_on_start,
            "retries": self.retries,
        })
    }
}

/// Builds a target with the group's defaults; an empty name is derived from the action.
pub(crate) fn target(name: String, action: Action, d: &TargetDefaults) -> TargetConfig {
    let name = if name.is_empty() {
        default_name(&action)
    } else {
        name
    };
    TargetConfig {
        name,
        action,
        min_reload_interval: d.min_reload_interval,
        reload_on_start: d.reload_on_start,
        retries: d.retries,
        retry_backoff_max: d.retry_backoff_max,
    }
}

fn default_name(action: &Action) -> String {
    match action {
        Action::Http(h) => h.endpoint.label(),
        Action::Signal(s) => match &s.selector {
            Selector::Name(n) => format!("signal:{n}"),
            Selector::Cmdline(r) => format!("signal:/{}/", r.as_str()),
            Selector::PidFile(p) => format!("signal:{}", p.display()),
        },
        Action::Exec(e) => {
            let prog = e.argv.first().map(String::as_str).unwrap_or_default();
            format!("exec:{}", prog.rsplit('/').next().unwrap_or(prog))
        }
    }
}

/// Whether any flag that makes an action was given (valid or not).
fn any_action_flag(args: &RunArgs) -> bool {
    !args.reload_url.is_empty()
        || !args.exec.is_empty()
        || args.signal.is_some()
        || args.process_name.is_some()
        || args.process_cmdline.is_some()
        || args.pid_file.is_some()
}

/// The actions described by the command-line flags.
fn cli_actions(args: &RunArgs, errs: &mut Vec<String>) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut headers = Vec::new();
    for h in &args.reload_header {
        match parse::header(h) {
            Ok(h) => headers.push(h),
            Err(e) => errs.push(format!("--reload-header: {e}")),
        }
    }
    let method =
        parse::method(&args.reload_method).map_err(|e| errs.push(format!("--reload-method: {e}")));
    let status = parse::status(args.reload_expected_status)
        .map_err(|e| errs.push(format!("--reload-expected-status: {e}")));
    if args.reload_url.is_empty()
        && (!headers.is_empty() || args.reload_bearer_token_file.is_some())
    {
        errs.push("--reload-header and --reload-bearer-token-file need --reload-url".into());
    }
    for url in &args.reload_url {
        match parse::endpoint(url) {
            Ok(endpoint) => {
                if let (Ok(method), Ok(expected_status)) = (&method, &status) {
                    actions.push(Action::Http(HttpAction {
                        endpoint,
                        method: method.clone(),
                        expected_status: *expected_status,
                        headers: headers.clone(),
                        bearer_token_file: args.reload_bearer_token_file.clone(),
                        timeout: args.reload_timeout,
                    }));
                }
            }
            Err(e) => errs.push(format!("--reload-url: {e}")),
        }
    }
    let selector = selector(
        args.process_name.as_deref(),
        args.process_cmdline.as_deref(),
        args.pid_file.as_deref(),
        "--",
        errs,
    );
    match (selector, &args.signal) {
        (Some(selector), sig) => {
            let sig = sig.as_deref().unwrap_or("HUP");
            match parse::signal(sig) {
                Ok(signal) => actions.push(Action::Signal(SignalAction {
                    signal,
                    selector,
                    all: args.signal_all,
                })),
                Err(e) => errs.push(format!("--signal: {e}")),
            }
        }
        (None, Some(_)) => errs.push(
            "--signal needs a target process: add --process-name, --process-cmdline or --pid-file"
                .into(),
        ),
        (None, None) if args.signal_all => {
            errs.push("--signal-all needs --process-name or --process-cmdline".into())
        }
        (None, None) => {}
    }
    for cmd in &args.exec {
        match exec_argv(cmd) {
            Ok(argv) => actions.push(Action::Exec(ExecAction {
                argv,
                timeout: args.reload_timeout,
            })),
            Err(e) => errs.push(format!("--exec: {e}")),
        }
    }
    actions
}

/// Splits a command with shell-style quoting (no shell runs it).
pub(crate) fn exec_argv(cmd: &str) -> Result<Vec<String>, String> {
    match shlex::split(cmd) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        Some(_) => Err("the command is empty".into()),
        None => Err(format!("'{cmd}' has unbalanced quotes")),
    }
}

/// Exactly one of the three selectors; `prefix` is `--` for flags and a field path for the file.
pub(crate) fn selector(
    name: Option<&str>,
    cmdline: Option<&str>,
    pid_file: Option<&Path>,
    prefix: &str,
    errs: &mut Vec<String>,
) -> Option<Selector> {
    let field = |f: &str| {
        if prefix == "--" {
            format!("--{}", f.replace('_', "-"))
        } else {
            format!("{prefix}{f}")
        }
    };
    let given = [name.is_some(), cmdline.is_some(), pid_file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        errs.push(format!(
            "{}, {} and {} each select the target process: give only one",
            field("process_name"),
            field("process_cmdline"),
            field("pid_file")
        ));
        return None;
    }
    if let Some(n) = name {
        if n.is_empty() || n.contains('/') {
            errs.push(format!(
                "{}: '{n}' is not a process name (no slashes, not empty)",
                field("process_name")
            ));
            return None;
        }
        return Some(Selector::Name(n.to_string()));
    }
    if let Some(r) = cmdline {
        return match regex_lite::Regex::new(r) {
            Ok(re) => Some(Selector::Cmdline(re)),
            Err(e) => {
                errs.push(format!(
                    "{}: '{r}' is not a regular expression: {e}",
                    field("process_cmdline")
                ));
                None
            }
        };
    }
    pid_file.map(|p| Selector::PidFile(absolute(p)))
}

/// Absolute, lexically cleaned watch paths (symlinks are left alone: they matter here).
pub(crate) fn watch_paths(paths: &[PathBuf], field: &str, errs: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.as_os_str().is_empty() {
            errs.push(format!("{field}: an empty path"));
            continue;
        }
        let p = absolute(p);
        if !out.contains(&p) {
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

/// Group names must be unique label values; target names are made unique with a `#n` suffix.
fn check_names(groups: &mut [GroupConfig], errs: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for g in groups.iter() {
        if g.name.is_empty()
            || !g
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errs.push(format!(
                "group name '{}': use letters, digits, '-', '_' or '.'",
                g.name
            ));
        } else if !seen.insert(g.name.clone()) {
            errs.push(format!(
                "group name '{}' is used twice (the CLI group is named '{CLI_GROUP}')",
                g.name
            ));
        }
    }
    let mut names = std::collections::HashMap::<String, u32>::new();
    for t in groups.iter_mut().flat_map(|g| g.targets.iter_mut()) {
        let n = names.entry(t.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            t.name = format!("{}#{}", t.name, n);
        }
    }
}
