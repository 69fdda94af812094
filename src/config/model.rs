//! The validated configuration the daemon runs with: what the input layer (flags, environment,
//! the JSON file) produces and every stage after it reads. Nothing here parses; see
//! [`super::build`](crate::config::Config::from_args).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::compat_flags::CompatMetrics;
use super::json_check::JsonCheck;
use super::parse::{Endpoint, ServedCert};
use super::values::{AccessPolicy, ConsumedAs, LogFormat, LogLevel, ReloadOnStart};
use crate::action::ActionConfig;
use crate::process::identity::Identity;
use crate::scan::fingerprint::FingerprintKey;

/// Name of the watch group formed by `--watch` and the action flags.
pub(crate) const CLI_GROUP: &str = "default";

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
    pub compat_metrics: CompatMetrics,
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

impl TargetConfig {
    /// Whether an https:// call of the target (reload or verify) accepts any certificate.
    pub(crate) fn tls_insecure_skip_verify(&self) -> bool {
        let insecure = |e: &crate::config::Endpoint| {
            e.is_https() && e.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)
        };
        self.action.endpoint().is_some_and(insecure)
            || self.verify.as_ref().is_some_and(|v| insecure(&v.endpoint))
    }

    /// Its action's kind.
    pub(crate) fn kind(&self) -> crate::action::Kind {
        self.action.kind()
    }
}

/// Verification of a reload.
#[derive(Debug, Clone)]
pub struct Verify {
    /// Probed with GET; 2xx expected.
    pub endpoint: Endpoint,
    /// Text the answer must contain.
    pub contains: Option<String>,
    /// Conditions on the answer read as JSON (`--verify-json`), each of which must hold.
    pub json: Vec<JsonCheck>,
    /// Limit of one probe.
    pub timeout: Duration,
}
