//! Flags, environment and the JSON config file → one validated [`Config`].
//!
//! Every problem is collected before giving up, and each message names the flag or field it is
//! about and what to do, so that one run of the program shows an operator everything to fix
//! (exit code 2).

pub mod file;
mod flags;
pub mod parse;
mod summary;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{AccessPolicy, Cli, LogFormat, LogLevel, OnOff, ReloadOnStart, RunArgs};
use crate::fingerprint::FingerprintKey;
use crate::identity::Identity;
use clap::Parser;
pub(crate) use flags::{exec_argv, selector, watch_paths};
use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use nix::sys::signal::Signal;
pub use parse::Endpoint;

/// Name of the watch group formed by `--watch` and the action flags.
pub const CLI_GROUP: &str = "default";

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch groups: paths watched together and the targets reloaded when their content changes.
    /// Shared, not copied, with the tasks that serve them.
    pub groups: Vec<std::sync::Arc<GroupConfig>>,
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
    /// Where what each target applied is kept across restarts.
    pub state_file: Option<PathBuf>,
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
    /// The app's identity as declared (`--app-uid`/`--app-gid`); the process's wins when found.
    pub app: Option<Identity>,
    /// What to do with a version the app cannot read.
    pub access_policy: AccessPolicy,
    /// Hold back versions whose PEM material is not usable.
    pub consistency_check: bool,
    /// How long an inconsistent version is held back before it is reported as an error.
    pub consistency_timeout: Duration,
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
    /// Probe after each reload; the reload counts only when it passes.
    pub verify: Option<Verify>,
}

/// Verification of a reload.
#[derive(Debug, Clone)]
pub struct Verify {
    /// Probed with GET; 2xx expected.
    pub endpoint: Endpoint,
    /// Text the answer must contain.
    pub contains: Option<String>,
    /// Limit of one probe.
    pub timeout: Duration,
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
    pub verify: Option<Verify>,
}

/// Group settings taken from the flags; the config file may override them per group.
#[derive(Debug, Clone)]
pub(crate) struct GroupDefaults {
    pub debounce: Duration,
    pub debounce_max: Duration,
    pub app: Option<Identity>,
    pub access_policy: AccessPolicy,
    pub consistency_check: bool,
    pub consistency_timeout: Duration,
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
        Config::build(args, true, None)
    }

    /// Validates the text of a config file with default flags (fuzzing, tools).
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(["secret-reloader", "--config", "(inline)"])
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        Config::build(&cli.run, true, Some(text))
    }

    /// As [`Config::from_args`] for the one-shot report, which may look at paths without any
    /// action.
    pub fn for_doctor(args: &RunArgs) -> Result<Config, ConfigError> {
        Config::build(args, false, None)
    }

    fn build(
        args: &RunArgs,
        require_action: bool,
        inline: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut errs = Vec::new();
        let verify = flags::verify(
            args.verify_url.as_deref(),
            args.verify_contains.as_deref(),
            args.reload_timeout,
            ["--verify-url", "--verify-contains"],
            &mut errs,
        );
        let defaults = TargetDefaults {
            min_reload_interval: args.min_reload_interval,
            reload_on_start: args.reload_on_start,
            retries: args.reload_retries,
            retry_backoff_max: args.retry_backoff_max,
            timeout: args.reload_timeout,
            verify,
        };
        let group_defaults = GroupDefaults {
            debounce: args.debounce,
            debounce_max: args.debounce_max,
            app: flags::declared_identity(
                args.app_uid,
                args.app_gid,
                &args.app_groups,
                "",
                ["--app-uid", "--app-gid", "--app-groups"],
                &mut errs,
            ),
            access_policy: args.access_policy,
            consistency_check: args.consistency_check == OnOff::On,
            consistency_timeout: args.consistency_timeout,
        };
        let mut groups = Vec::new();
        let cli_actions = flags::cli_actions(args, &mut errs);
        if !args.watch.is_empty() || !cli_actions.is_empty() {
            if args.watch.is_empty() {
                errs.push("the action flags need something to watch: add --watch PATH".into());
            }
            if require_action && !flags::any_action_flag(args) {
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
                app: group_defaults.app.clone(),
                access_policy: group_defaults.access_policy,
                consistency_check: group_defaults.consistency_check,
                consistency_timeout: group_defaults.consistency_timeout,
                targets,
            });
        }
        if let Some(path) = &args.config {
            groups.extend(match inline {
                Some(text) => file::parse(
                    &path.display().to_string(),
                    text,
                    &group_defaults,
                    &defaults,
                    &mut errs,
                ),
                None => file::load(path, &group_defaults, &defaults, &mut errs),
            });
        }
        check_access_policy(&groups, &mut errs);
        if groups.is_empty() && errs.is_empty() {
            errs.push(
                "nothing to watch: give --watch PATH with an action, or --config FILE".into(),
            );
        }
        if args.debounce_max < args.debounce {
            errs.push("--debounce-max must not be shorter than --debounce".into());
        }
        if let Some(p) = args.poll_interval
            && p < Duration::from_millis(10)
        {
            errs.push("--poll-interval must be at least 10ms".into());
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
                groups: groups.into_iter().map(std::sync::Arc::new).collect(),
                listen,
                log_format: args.log_format,
                log_level: args.log_level,
                resync_interval: (!args.resync_interval.is_zero()).then_some(args.resync_interval),
                poll_interval: args.poll_interval,
                fingerprint_key,
                fingerprint_key_shared,
                shutdown_grace: args.shutdown_grace,
                state_file: args.state_file.clone(),
                proc_root: args.proc_root.clone(),
            }),
            _ => Err(ConfigError(errs)),
        }
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
        verify: d.verify.clone(),
    }
}

/// `--access-policy block` needs to know who the app is.
fn check_access_policy(groups: &[GroupConfig], errs: &mut Vec<String>) {
    for g in groups {
        let knows_app = g.app.is_some()
            || g.targets
                .iter()
                .any(|t| matches!(t.action, Action::Signal(_)));
        if g.access_policy == AccessPolicy::Block && !knows_app {
            errs.push(format!(
                "watch group '{}': access policy block needs the app's identity: give --app-uid and --app-gid \
                 (app_uid/app_gid in the config file) or a signal target whose process it can be read from",
                g.name
            ));
        }
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
