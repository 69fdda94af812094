//! The command line: flags, their `SECRET_RELOADER_*` environment variables and the aliases that
//! make secret-reloader a drop-in for configmap-reload and prometheus-config-reloader (see
//! `compat_flags`).
//!
//! This module only describes and parses; `config` turns the parsed flags into a validated
//! [`Config`](crate::config::Config), and every error there names the flag it is about.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::compat_flags::{CompatMetric, Dialects};
use super::parse::duration;
use super::{AccessPolicy, ConsumedAs, LogFormat, LogLevel, OnOff, ReloadOnStart};

/// Watch mounted Kubernetes secrets and make the app apply every rotation.
#[derive(Debug, Parser)]
#[command(name = "secret-reloader", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// One-shot commands; without one, the daemon runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the daemon.
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// Parses the process's command line (usage errors exit 2 with clap's message), noting which
    /// other tools' flags it uses.
    pub fn from_env() -> Cli {
        let argv: Vec<OsString> = std::env::args_os().collect();
        Cli::parse_from(&argv).noting(&argv)
    }

    /// Parses `argv` (the program name first) as [`Cli::from_env`] does.
    pub(crate) fn try_from_argv<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        Cli::try_parse_from(&argv).map(|cli| cli.noting(&argv))
    }

    fn noting(mut self, argv: &[OsString]) -> Cli {
        let dialects = Dialects::of(argv);
        self.run.dialects = dialects;
        if let Some(Command::Doctor(d)) = &mut self.command {
            d.run.dialects = dialects;
        }
        self
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Self-contained local demonstration: a kubelet-style volume, an app that reloads on SIGHUP,
    /// a rotation every few seconds and the daemon reloading it, with measured latency.
    Demo(DemoArgs),
    /// One-shot report of the live state: identities, watched paths and whether the app can
    /// read them, targets and whether they are reachable and fresh. Exit 1 when it finds a problem.
    Doctor(Box<DoctorArgs>),
    /// The demonstration app (also used by the tests): holds a credential, reloads it on SIGHUP
    /// and reports which version it holds.
    #[command(hide = true)]
    DemoApp(DemoAppArgs),
    /// Writes a new version of a volume directory exactly as kubelet's atomic writer does (used by
    /// the CI scripts): every KEY=FILE into a new timestamped directory, `..data` renamed to it.
    #[command(hide = true)]
    KubeletWrite(KubeletWriteArgs),
}

/// Flags of the daemon (and of the one-shot reports built on the same configuration).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// File or directory to watch (repeatable). SECRET_RELOADER_WATCH holds a comma-separated
    /// list (`\,` for a comma in a path).
    #[arg(
        short = 'w',
        long = "watch",
        visible_aliases = ["volume-dir", "watched-dir"],
        value_name = "PATH"
    )]
    pub watch: Vec<OsString>,

    /// Quiet period before acting on writers without a commit point (kubelet's `..data` swap
    /// skips it).
    #[arg(long, visible_alias = "delay-interval", value_name = "DURATION", default_value = "100ms",
          value_parser = duration, env = "SECRET_RELOADER_DEBOUNCE")]
    pub debounce: Duration,

    /// Cap on the total wait of the quiet period while events keep arriving.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration,
          env = "SECRET_RELOADER_DEBOUNCE_MAX")]
    pub debounce_max: Duration,

    /// Safety net: rescan everything at this interval even without events (0: never).
    #[arg(long, visible_alias = "watch-interval", value_name = "DURATION", default_value = "2m",
          value_parser = duration, env = "SECRET_RELOADER_RESYNC_INTERVAL")]
    pub resync_interval: Duration,

    /// Poll at this interval instead of using inotify (network filesystems).
    #[arg(long, value_name = "DURATION", value_parser = duration,
          env = "SECRET_RELOADER_POLL_INTERVAL")]
    pub poll_interval: Option<Duration>,

    /// Reload at start when the target may hold an older version.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "SECRET_RELOADER_RELOAD_ON_START"
    )]
    pub reload_on_start: ReloadOnStart,

    /// Storm protection: at most one action per target per interval; changes in between coalesce.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration,
          env = "SECRET_RELOADER_MIN_RELOAD_INTERVAL")]
    pub min_reload_interval: Duration,

    /// The http kind's flags.
    #[command(flatten)]
    pub http: crate::action::http::HttpFlags,

    /// Time limit of one reload action (HTTP call or command), connection included.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration,
          env = "SECRET_RELOADER_RELOAD_TIMEOUT")]
    pub reload_timeout: Duration,

    /// Fleets: delay the first reaction to a change by an offset in [0, DURATION) derived from
    /// the pod's identity (--splay-identity-env), so that replicas watching one Secret spread
    /// their reloads. Default: none.
    #[arg(long, value_name = "DURATION", value_parser = duration, env = "SECRET_RELOADER_SPLAY")]
    pub splay: Option<Duration>,

    /// Environment variable naming the pod for --splay (e.g. POD_NAME from the downward API);
    /// HOSTNAME falls back to the kernel's hostname, which Kubernetes sets to the pod's name.
    #[arg(
        long,
        value_name = "VAR",
        default_value = "HOSTNAME",
        env = "SECRET_RELOADER_SPLAY_IDENTITY_ENV"
    )]
    pub splay_identity_env: String,

    /// Retries per version after the first failed attempt; then the version is reported failed
    /// until the next change or resync. Default: retry until it lands.
    #[arg(
        long,
        visible_alias = "webhook-retries",
        value_name = "N",
        env = "SECRET_RELOADER_RELOAD_RETRIES"
    )]
    pub reload_retries: Option<u32>,

    /// Cap of the exponential backoff between failed attempts.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration,
          env = "SECRET_RELOADER_RETRY_BACKOFF_MAX")]
    pub retry_backoff_max: Duration,

    /// The signal kind's flags.
    #[command(flatten)]
    pub signal: crate::action::signal::SignalFlags,

    /// The exec kind's flags.
    #[command(flatten)]
    pub exec: crate::action::exec::ExecFlags,

    /// URL probed after each reload (2xx expected); the target counts as reloaded only when it
    /// passes.
    #[arg(long, value_name = "URL", env = "SECRET_RELOADER_VERIFY_URL")]
    pub verify_url: Option<String>,

    /// Where the app serves the watched certificate, HOST:PORT (TLS) or postgres://HOST:PORT:
    /// after each reload and at each resync the certificate served there must be the one on disk
    /// for the reload to count.
    #[arg(
        long,
        value_name = "ENDPOINT",
        env = "SECRET_RELOADER_VERIFY_SERVED_CERT"
    )]
    pub verify_served_cert: Option<String>,

    /// CA bundle (PEM) an https:// reload or verify endpoint's certificate must chain to; read
    /// again whenever it changes. The image has no system roots.
    #[arg(long, value_name = "PATH", env = "SECRET_RELOADER_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// Client certificate chain (PEM) presented to https:// endpoints (mTLS); read again whenever
    /// it changes, so it may live in a watched volume.
    #[arg(
        long,
        value_name = "PATH",
        env = "SECRET_RELOADER_TLS_CLIENT_CERT_FILE"
    )]
    pub tls_client_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-client-cert-file.
    #[arg(long, value_name = "PATH", env = "SECRET_RELOADER_TLS_CLIENT_KEY_FILE")]
    pub tls_client_key_file: Option<PathBuf>,

    /// Name the endpoint's certificate must carry, when not the URL's host (an endpoint on
    /// 127.0.0.1 whose certificate names the service).
    #[arg(long, value_name = "NAME", env = "SECRET_RELOADER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// Accept any certificate from https:// endpoints (warned at start, shown in /status and
    /// secret_reloader_tls_insecure_skip_verify).
    #[arg(long, env = "SECRET_RELOADER_TLS_INSECURE_SKIP_VERIFY")]
    pub tls_insecure_skip_verify: bool,

    /// Text the verify response must contain.
    #[arg(long, value_name = "TEXT", env = "SECRET_RELOADER_VERIFY_CONTAINS")]
    pub verify_contains: Option<String>,

    /// Condition on the verify answer read as JSON, 'POINTER OP VALUE' (repeatable): an RFC 6901
    /// pointer, ==, != or >= (numbers, RFC 3339 times), a JSON literal or $CHANGE (when the
    /// verified content changed), e.g. '/data/lastConfigTime >= $CHANGE'.
    /// SECRET_RELOADER_VERIFY_JSON holds a comma-separated list (`\,` for a comma).
    #[arg(long, value_name = "POINTER OP VALUE")]
    pub verify_json: Vec<OsString>,

    /// The app's uid (its runAsUser); default: read from the target process.
    #[arg(long, value_name = "UID", env = "SECRET_RELOADER_APP_UID")]
    pub app_uid: Option<u32>,

    /// The app's gid (its runAsGroup); default: read from the target process.
    #[arg(long, value_name = "GID", env = "SECRET_RELOADER_APP_GID")]
    pub app_gid: Option<u32>,

    /// The app's supplementary groups, such as the pod's fsGroup (comma-separated).
    #[arg(
        long,
        value_name = "GID,...",
        env = "SECRET_RELOADER_APP_GROUPS",
        value_delimiter = ','
    )]
    pub app_groups: Vec<u32>,

    /// What to do with a new version the app cannot read: warn (reload anyway) or block.
    #[arg(
        long,
        value_enum,
        default_value = "warn",
        env = "SECRET_RELOADER_ACCESS_POLICY"
    )]
    pub access_policy: AccessPolicy,

    /// How the app takes the watched keys: `files` (it reads them; a reload makes it read them
    /// again) or `env` (it was given them as environment variables with envFrom: the daemon
    /// compares its environment with the files, and a `--signal TERM` target restarts it while
    /// they differ).
    #[arg(
        long,
        value_enum,
        default_value = "files",
        env = "SECRET_RELOADER_CONSUMED_AS"
    )]
    pub consumed_as: ConsumedAs,

    /// Hold back versions whose PEM files do not parse or whose private key matches no
    /// certificate (a writer half-way through replacing them).
    #[arg(
        long,
        value_enum,
        default_value = "on",
        env = "SECRET_RELOADER_CONSISTENCY_CHECK"
    )]
    pub consistency_check: OnOff,

    /// How long an inconsistent version may be held back before it is reported as an error.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = duration,
          env = "SECRET_RELOADER_CONSISTENCY_TIMEOUT")]
    pub consistency_timeout: Duration,

    /// Most files one version of a watch group may have; more make it incomplete (held back).
    #[arg(long, value_name = "N", default_value_t = super::values::DEFAULT_MAX_FILES,
          env = "SECRET_RELOADER_MAX_FILES")]
    pub max_files: usize,

    /// Follow symlinks inside a watched directory whose target lies outside it (skipped and
    /// reported otherwise).
    #[arg(long, env = "SECRET_RELOADER_FOLLOW_EXTERNAL_SYMLINKS")]
    pub follow_external_symlinks: bool,

    /// Bearer token (in a file) that lets clients other than the pod itself read /status.
    #[arg(long, value_name = "PATH", env = "SECRET_RELOADER_STATUS_TOKEN_FILE")]
    pub status_token_file: Option<PathBuf>,

    /// Address of /metrics, /status, /healthz and /readyz.
    #[arg(
        long,
        visible_aliases = ["web.listen-address", "listen-address"],
        value_name = "ADDR",
        default_value = "0.0.0.0:9533",
        env = "SECRET_RELOADER_LISTEN"
    )]
    pub listen: String,

    /// Log line format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "SECRET_RELOADER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Log verbosity.
    #[arg(
        long,
        value_enum,
        default_value = "info",
        env = "SECRET_RELOADER_LOG_LEVEL"
    )]
    pub log_level: LogLevel,

    /// JSON file describing several watch groups, each with its own targets.
    #[arg(long, value_name = "FILE", env = "SECRET_RELOADER_CONFIG")]
    pub config: Option<PathBuf>,

    /// The content of a --config file, given inline (a sidecar whose watch groups are in its
    /// arguments, with no file to read them from); at most 128 KiB, not beside --config.
    #[arg(long, value_name = "JSON", env = "SECRET_RELOADER_CONFIG_JSON")]
    pub config_json: Option<String>,

    /// Key for the HMAC fingerprints, shared by pods so their fingerprints compare (random per
    /// process otherwise).
    #[arg(
        long,
        value_name = "PATH",
        env = "SECRET_RELOADER_FINGERPRINT_KEY_FILE"
    )]
    pub fingerprint_key_file: Option<PathBuf>,

    /// Where to record what each target applied, so that a restarted sidecar neither misses nor
    /// repeats a reload (put it on an emptyDir).
    #[arg(long, value_name = "PATH", env = "SECRET_RELOADER_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// A filesystem call (a read of a watched file, a pid file) that has not returned after this
    /// long is reported, and its group or target held until it does (a stalled FUSE or NFS
    /// server, a hung disk).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration,
          env = "SECRET_RELOADER_FS_STALL_TIMEOUT")]
    pub fs_stall_timeout: Duration,

    /// On SIGTERM, how long an action in flight may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration,
          env = "SECRET_RELOADER_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,

    /// Also export the metric series of these tools (comma-separated:
    /// prometheus-config-reloader, configmap-reload, none), so their dashboards and alerts keep
    /// working. Default: the series of the tool whose flags are used.
    #[arg(
        long,
        value_enum,
        value_name = "LIST",
        value_delimiter = ',',
        env = "SECRET_RELOADER_COMPAT_METRICS"
    )]
    pub compat_metrics: Option<Vec<CompatMetric>>,

    /// prometheus-config-reloader's environment substitution: not supported (refused with what
    /// to do instead).
    #[arg(long, value_name = "PATH", hide = true)]
    pub config_file: Option<OsString>,

    /// prometheus-config-reloader's output of the substitution: not supported.
    #[arg(long, value_name = "PATH", hide = true)]
    pub config_envsubst_file: Option<OsString>,

    /// prometheus-config-reloader's TLS and authentication of its metrics: not supported.
    #[arg(long, value_name = "PATH", hide = true)]
    pub web_config_file: Option<OsString>,

    /// prometheus-config-reloader's check of the runtime configuration: not used (warned).
    #[arg(long = "runtimeinfo-url", value_name = "URL", hide = true)]
    pub runtimeinfo_url: Option<String>,

    /// prometheus-config-reloader's fixed retry interval: not used (warned); failed reloads are
    /// retried with exponential backoff up to --retry-backoff-max.
    #[arg(long, value_name = "DURATION", hide = true)]
    pub retry_interval: Option<String>,

    /// Which other tools' flags the command line uses (set by [`Cli::from_env`]).
    #[arg(skip)]
    pub dialects: Dialects,

    /// Where the PID namespace is mounted (tests point it elsewhere).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/proc",
        hide = true,
        env = "SECRET_RELOADER_PROC_ROOT"
    )]
    pub proc_root: PathBuf,
}

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// Flags of `secret-reloader doctor`: the daemon's, plus the output format.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Do not ask a running daemon (a check before the sidecar runs): not reaching one is then
    /// no problem.
    #[arg(long)]
    pub standalone: bool,
    /// The daemon's flags: the report checks what they describe.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `secret-reloader demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Time between rotations.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = duration)]
    pub interval: Duration,
    /// Stop after this many rotations (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub rotations: Option<u32>,
    /// Address of the daemon's metrics and status during the demo.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9533")]
    pub listen: String,
}

/// Flags of the demonstration app.
#[derive(Debug, Args)]
pub struct DemoAppArgs {
    /// The credential file it holds; its first line names the version.
    #[arg(long, value_name = "PATH")]
    pub credential: PathBuf,
    /// File rewritten after every (re)load: pid, reload count, version, monotonic time.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// File the app writes its pid to.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Wait this long before installing the SIGHUP handler (a slow-starting app).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub handler_delay: Option<Duration>,
    /// Fork this many worker processes of the same name (a master and its workers).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub workers: u32,
    /// Ignore SIGHUP instead of handling it (a misconfigured app).
    #[arg(long)]
    pub ignore_hup: bool,
}

/// Flags of `secret-reloader kubelet-write`.
#[derive(Debug, Args)]
pub struct KubeletWriteArgs {
    /// The volume directory (created when missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The pod's fsGroup: the files and their version directory get this group, as kubelet gives
    /// them.
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Octal mode of every file (kubelet's defaultMode); without it, each FILE's own mode.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// The new version: each key's name in the volume and the file holding its content.
    #[arg(value_name = "KEY=FILE", required = true)]
    pub keys: Vec<String>,
}
