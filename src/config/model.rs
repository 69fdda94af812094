//! The validated configuration the daemon runs with: what the input layer (flags, environment,
//! the JSON file) produces and every stage after it reads. Nothing here parses; see
//! [`super::build`](crate::config::Config::from_args).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use nix::sys::signal::Signal;

use super::parse::Endpoint;
use crate::process::Selector;
use crate::process::identity::Identity;
use crate::scan::fingerprint::FingerprintKey;

/// Name of the watch group formed by `--watch` and the action flags.
pub const CLI_GROUP: &str = "default";

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch groups: paths watched together and the targets reloaded when their content changes.
    /// Shared, not copied, with the tasks that serve them.
    pub groups: Vec<Arc<GroupConfig>>,
    /// Address of the admin server (metrics, probes, status).
    pub listen: SocketAddr,
    /// Who may read `/status` besides the pod itself.
    pub status_token_file: Option<PathBuf>,
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
    /// After how long a filesystem call that has not returned is reported.
    pub fs_stall_timeout: Duration,
    /// Where what each target applied is kept across restarts.
    pub state_file: Option<PathBuf>,
    /// Mount point of the PID namespace's procfs.
    pub proc_root: PathBuf,
    /// Other tools' metric series exported too.
    pub compat_metrics: super::compat::CompatMetrics,
    /// `--splay`, when given.
    pub splay: Option<Splay>,
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
    /// Most files a version may have; more make it incomplete.
    pub max_files: usize,
    /// Follow symlinks inside a watched directory whose target lies outside it.
    pub follow_external_symlinks: bool,
    /// How the app takes the content: reading the files, or as environment variables.
    pub consumed_as: ConsumedAs,
    /// Targets reloaded on a change of this group's content.
    pub targets: Vec<TargetConfig>,
}

/// One thing to reload, and how persistently.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique name: the `target` label of the metrics.
    pub name: String,
    /// What a reload does.
    pub action: ActionConfig,
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
    /// The certificate the app serves, compared with the one on disk after each reload and at
    /// each resync; the reload counts only when they are the same.
    pub served_cert: Option<ServedCert>,
    /// `--splay`: how long the first reaction to a change waits (zero: none).
    pub splay_offset: Duration,
}

/// `--splay`: the window, where the pod's identity came from, and this pod's offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splay {
    /// The window, `[0, window)`.
    pub window: Duration,
    /// The variable the identity was read from.
    pub identity_from: String,
    /// This pod's offset.
    pub offset: Duration,
}

/// Where the app serves the certificate of the watched files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    /// Host to connect to (sent as SNI when it is a name, not an address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// PostgreSQL: an SSLRequest before the TLS handshake.
    pub postgres: bool,
    /// Limit of one look.
    pub timeout: Duration,
}

impl ServedCert {
    /// `HOST:PORT` or `postgres://HOST:PORT`, for messages and labels.
    pub fn label(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.postgres { "postgres://" } else { "" };
        format!("{scheme}{host}:{}", self.port)
    }
}

impl TargetConfig {
    /// Whether an https:// call of the target (reload or verify) accepts any certificate.
    pub fn tls_insecure_skip_verify(&self) -> bool {
        let insecure = |e: &crate::config::Endpoint| {
            e.is_https() && e.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)
        };
        matches!(&self.action, ActionConfig::Http(h) if insecure(&h.endpoint))
            || self.verify.as_ref().is_some_and(|v| insecure(&v.endpoint))
    }

    /// `http`, `signal` or `exec`.
    pub fn kind(&self) -> &'static str {
        match self.action {
            ActionConfig::Http(_) => "http",
            ActionConfig::Signal(_) => "signal",
            ActionConfig::Exec(_) => "exec",
        }
    }
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
pub enum ActionConfig {
    /// Call an HTTP endpoint.
    Http(HttpConfig),
    /// Signal a process in the shared PID namespace.
    Signal(SignalConfig),
    /// Run a command.
    Exec(ExecConfig),
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

/// A signal to the target process.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// The signal.
    pub signal: Signal,
    /// How the process is found at every reload.
    pub selector: Selector,
    /// Signal every match instead of the one top-level match.
    pub all: bool,
}

/// A command run on change.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Limit on its run time.
    pub timeout: Duration,
}

/// When to reload a target whose process may hold an older version at start-up.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ReloadOnStart {
    /// Reload once when the target process started before the current content appeared.
    Auto,
    /// Always reload once at start.
    Always,
    /// Never reload at start; only changes seen while running cause reloads.
    Never,
}

/// What to do with a new version the app cannot read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AccessPolicy {
    /// Reload anyway, and report.
    Warn,
    /// Do not reload it into the app; report, and reload once it is readable.
    Block,
}

/// How the app takes a watch group's content.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ConsumedAs {
    /// It reads the files (a reload makes it read them again).
    #[default]
    Files,
    /// It was given the keys as environment variables at its start (`envFrom`): only a restart
    /// of its container applies a new version; the daemon compares the process's environment
    /// with the files.
    Env,
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text (`logfmt`, prometheus-config-reloader's name, is accepted).
    #[value(alias = "logfmt")]
    Text,
    /// One JSON object per line.
    Json,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Only what an operator must act on.
    Error,
    /// Also what an operator should look at.
    Warn,
    /// Also every reload and change (default).
    Info,
    /// Also scans and decisions.
    Debug,
    /// Everything, including raw filesystem events (`all`, prometheus-config-reloader's name, is
    /// accepted).
    #[value(alias = "all")]
    Trace,
}
