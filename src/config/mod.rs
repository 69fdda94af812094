//! The input layer: flags, environment and the JSON config file → one validated [`Config`].
//!
//! Every problem is collected before giving up, and each message names the flag or field it is
//! about and what to do, so that one run of the program shows an operator everything to fix
//! (exit code 2). Values that may carry credentials (header values, URL queries and userinfo)
//! never appear in a message.

pub mod cli;
pub mod compat_flags;
mod findings;
mod flags;
mod json_file;
mod model;
pub mod parse;
mod summary;
mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::files;
use crate::process::identity::Identity;
use crate::scan::fingerprint::FingerprintKey;
use cli::{Cli, RunArgs};
pub(crate) use findings::Findings;
pub(crate) use flags::watch_paths;
pub use model::*;
pub use parse::{Endpoint, ServedCert, TlsClient};
pub use values::*;

/// Largest key, config and token files read.
const SMALL_FILE_LIMIT: u64 = 64 * 1024;
/// Largest config file read.
const CONFIG_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// A valid configuration and what is worth a warning about it (logged once at start).
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Risky but valid choices, each with what to do instead.
    pub warnings: Vec<String>,
}

/// Defaults shared by the targets of one group, taken from the flags.
#[derive(Debug, Clone)]
pub(crate) struct TargetDefaults {
    pub min_reload_interval: Duration,
    pub reload_on_start: ReloadOnStart,
    pub retries: Option<u32>,
    pub retry_backoff_max: Duration,
    pub timeout: Duration,
    pub verify: Option<Verify>,
    /// TLS options of https:// URLs (`--tls-*`).
    pub tls: Option<std::sync::Arc<TlsClient>>,
    /// `--verify-served-cert`.
    pub served_cert: Option<ServedCert>,
    /// `--splay`: this pod's offset.
    pub splay_offset: Duration,
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
    pub max_files: usize,
    pub follow_external_symlinks: bool,
    pub consumed_as: ConsumedAs,
}

impl Config {
    /// Parses a full command line (program name first) as the binary does. Clap's own usage
    /// errors are returned as text too.
    pub fn from_argv<I, T>(argv: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_from_argv(argv).map_err(|e| ConfigError(vec![e.to_string()]))?;
        Config::from_args(&cli.run)
    }

    /// Validates parsed flags (and the `--config` file they name).
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        Config::load(args).map(|l| l.config)
    }

    /// As [`Config::from_args`], with the warnings the daemon logs at start.
    pub fn load(args: &RunArgs) -> Result<Loaded, ConfigError> {
        build(args, true, None)
    }

    /// Validates the text of a config file with default flags (fuzzing, tools).
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(["secret-reloader", "--config", "(inline)"])
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        build(&cli.run, true, Some(text)).map(|l| l.config)
    }

    /// As [`Config::from_args`] for the one-shot report, which may look at paths without any
    /// action.
    pub fn for_doctor(args: &RunArgs) -> Result<Config, ConfigError> {
        build(args, false, None).map(|l| l.config)
    }
}

fn build(
    args: &RunArgs,
    require_action: bool,
    inline: Option<&str>,
) -> Result<Loaded, ConfigError> {
    let mut f = Findings::default();
    let watch = flags::list(&args.watch, "SECRET_RELOADER_WATCH")
        .into_iter()
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    let mut reload_urls = flags::text_list(
        &args.reload_url,
        "SECRET_RELOADER_RELOAD_URL",
        "--reload-url",
        &mut f,
    );
    flags::prometheus_config_reloader(args, &mut reload_urls, &mut f);
    if let Some(url) = &args.verify_url {
        parse::warn_visible_query(url, "--verify-url", &mut f);
    }
    let tls = flags::cli_tls(args, &mut f);
    let mut verify = flags::verify(
        args.verify_url.as_deref(),
        args.verify_contains.as_deref(),
        args.reload_timeout,
        ["--verify-url", "--verify-contains"],
        &mut f,
    );
    if let Some(v) = &mut verify {
        parse::secure(&mut v.endpoint, tls.as_ref(), "--verify-url", &mut f);
    }
    let splay = args
        .splay
        .filter(|w| !w.is_zero())
        .and_then(|window| splay(window, &args.splay_identity_env, &mut f));
    let defaults = TargetDefaults {
        splay_offset: splay.as_ref().map_or(Duration::ZERO, |s| s.offset),
        min_reload_interval: args.min_reload_interval,
        reload_on_start: args.reload_on_start,
        retries: args.reload_retries,
        retry_backoff_max: args.retry_backoff_max,
        timeout: args.reload_timeout,
        verify,
        tls: tls.clone(),
        served_cert: args.verify_served_cert.as_deref().and_then(|e| {
            parse::served_cert(e, args.reload_timeout)
                .map_err(|e| f.error(format!("--verify-served-cert: {e}")))
                .ok()
        }),
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
            &mut f,
        ),
        access_policy: args.access_policy,
        consistency_check: args.consistency_check == OnOff::On,
        consistency_timeout: args.consistency_timeout,
        max_files: args.max_files,
        follow_external_symlinks: args.follow_external_symlinks,
        consumed_as: args.consumed_as,
    };
    let mut groups = Vec::new();
    let cli_actions = crate::action::from_flags(args, &reload_urls, tls.as_ref(), &mut f);
    if !watch.is_empty() || !cli_actions.is_empty() {
        if watch.is_empty() {
            f.error("the action flags need something to watch: add --watch PATH");
        }
        if require_action && !flags::any_action_flag(args, &reload_urls) {
            f.error(
                "no action given: add --reload-url URL, --process-name NAME (or \
                 --process-cmdline/--pid-file, with --signal), or --exec COMMAND",
            );
        }
        let targets = cli_actions
            .into_iter()
            .map(|action| target(String::new(), action, &defaults))
            .collect();
        groups.push(GroupConfig {
            name: CLI_GROUP.to_string(),
            paths: watch_paths(&watch, "--watch", &mut f),
            debounce: args.debounce,
            debounce_max: args.debounce_max,
            app: group_defaults.app.clone(),
            access_policy: group_defaults.access_policy,
            consistency_check: group_defaults.consistency_check,
            consistency_timeout: group_defaults.consistency_timeout,
            max_files: group_defaults.max_files,
            follow_external_symlinks: group_defaults.follow_external_symlinks,
            consumed_as: group_defaults.consumed_as,
            targets,
        });
    }
    if let Some(path) = &args.config {
        groups.extend(match inline {
            Some(text) => json_file::parse(
                &path.display().to_string(),
                text,
                &group_defaults,
                &defaults,
                &mut f,
            ),
            None => match files::read_limited(path, CONFIG_FILE_LIMIT) {
                Ok(bytes) => match std::str::from_utf8(&bytes) {
                    Ok(text) => json_file::parse(
                        &path.display().to_string(),
                        text,
                        &group_defaults,
                        &defaults,
                        &mut f,
                    ),
                    Err(_) => {
                        f.error(format!("--config: {} is not UTF-8 text", path.display()));
                        Vec::new()
                    }
                },
                Err(e) => {
                    f.error(format!("--config: cannot read {}: {e}", path.display()));
                    Vec::new()
                }
            },
        });
    }
    check_access_policy(&groups, &mut f);
    crate::action::restart::check_groups(&groups, &mut f);
    if groups.is_empty() && f.errors.is_empty() {
        f.error("nothing to watch: give --watch PATH with an action, or --config FILE");
    }
    if args.debounce_max < args.debounce {
        f.error("--debounce-max must not be shorter than --debounce");
    }
    if let Some(p) = args.poll_interval
        && p < Duration::from_millis(10)
    {
        f.error("--poll-interval must be at least 10ms");
    }
    if args.max_files == 0 {
        f.error("--max-files must be at least 1");
    }
    // Below these, a daemon spends itself on its own timers (a scan or an attempt per
    // microsecond).
    let floor = Duration::from_millis(100);
    if !args.resync_interval.is_zero() && args.resync_interval < floor {
        f.error("--resync-interval must be 0 (never) or at least 100ms");
    }
    if args.retry_backoff_max < floor {
        f.error("--retry-backoff-max must be at least 100ms");
    }
    if args.fs_stall_timeout < floor {
        f.error("--fs-stall-timeout must be at least 100ms");
    }
    check_names(&mut groups, &mut f);
    let listen = parse::listen(&args.listen)
        .map_err(|e| f.error(format!("--listen: {e}")))
        .ok();
    let (fingerprint_key, fingerprint_key_shared) = fingerprint_key(args, &mut f);
    match (f.errors.is_empty(), listen) {
        (true, Some(listen)) => Ok(Loaded {
            config: Config {
                groups: groups.into_iter().map(std::sync::Arc::new).collect(),
                listen,
                status_token_file: args.status_token_file.clone(),
                log_format: args.log_format,
                log_level: args.log_level,
                resync_interval: (!args.resync_interval.is_zero()).then_some(args.resync_interval),
                poll_interval: args.poll_interval,
                fingerprint_key,
                fingerprint_key_shared,
                shutdown_grace: args.shutdown_grace,
                fs_stall_timeout: args.fs_stall_timeout,
                state_file: args.state_file.clone(),
                proc_root: args.proc_root.clone(),
                compat_metrics: compat_flags::CompatMetrics::choose(
                    args.compat_metrics.as_deref(),
                    args.dialects,
                ),
                splay,
            },
            warnings: f.warnings,
        }),
        _ => Err(ConfigError(f.errors)),
    }
}

/// `--splay WINDOW`: this pod's offset, `WINDOW · h / 2^64` with `h` the first 8 bytes (big
/// endian) of SHA-256 of the pod's identity, read from `var`.
fn splay(window: Duration, var: &str, f: &mut Findings) -> Option<Splay> {
    let from_env = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    // Kubernetes sets the kernel's hostname to the pod's name, also in images without a shell.
    let identity = from_env.or_else(|| {
        (var == "HOSTNAME")
            .then(|| {
                files::read_limited(std::path::Path::new("/proc/sys/kernel/hostname"), 256).ok()
            })
            .flatten()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    let Some(identity) = identity else {
        f.error(format!(
            "--splay needs the pod's identity, but {var} is not set: set it from the downward API \
             (env: [{{name: {var}, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]) or name \
             another variable with --splay-identity-env"
        ));
        return None;
    };
    use sha2::Digest;
    let digest = sha2::Sha256::digest(identity.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let fraction = u64::from_be_bytes(first) as f64 / 2f64.powi(64);
    Some(Splay {
        window,
        identity_from: var.to_string(),
        offset: window.mul_f64(fraction),
    })
}

fn fingerprint_key(args: &RunArgs, f: &mut Findings) -> (FingerprintKey, bool) {
    let Some(path) = &args.fingerprint_key_file else {
        return match FingerprintKey::random() {
            Ok(key) => (key, false),
            Err(e) => {
                f.error(format!(
                    "cannot draw a random fingerprint key ({e}): give --fingerprint-key-file"
                ));
                (FingerprintKey::new(Vec::new()), false)
            }
        };
    };
    match files::read_limited(path, SMALL_FILE_LIMIT) {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => {
            (FingerprintKey::new(bytes.trim_ascii().to_vec()), true)
        }
        Ok(_) => {
            f.error(format!(
                "--fingerprint-key-file: {} is empty",
                path.display()
            ));
            (FingerprintKey::new(Vec::new()), true)
        }
        Err(e) => {
            f.error(format!(
                "--fingerprint-key-file: cannot read {}: {e}",
                path.display()
            ));
            (FingerprintKey::new(Vec::new()), true)
        }
    }
}

/// Builds a target with the group's defaults; an empty name is derived from the action.
pub(crate) fn target(
    name: String,
    action: crate::action::ActionConfig,
    d: &TargetDefaults,
) -> TargetConfig {
    let name = if name.is_empty() {
        action.default_name()
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
        served_cert: d.served_cert.clone(),
        splay_offset: d.splay_offset,
    }
}

/// `--access-policy block` needs to know who the app is.
fn check_access_policy(groups: &[GroupConfig], f: &mut Findings) {
    for g in groups {
        let knows_app = g.app.is_some() || g.targets.iter().any(|t| t.action.selector().is_some());
        if g.access_policy == AccessPolicy::Block && !knows_app {
            f.error(format!(
                "watch group '{}': access policy block needs the app's identity: give --app-uid and --app-gid \
                 (app_uid/app_gid in the config file) or a signal target whose process it can be read from",
                g.name
            ));
        }
    }
}

/// Group names must be unique label values; target names are made unique with a `#n` suffix.
fn check_names(groups: &mut [GroupConfig], f: &mut Findings) {
    let mut seen = std::collections::HashSet::new();
    for g in groups.iter() {
        if g.name.is_empty()
            || !g
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            f.error(format!(
                "group name '{}': use letters, digits, '-', '_' or '.'",
                g.name.escape_debug()
            ));
        } else if !seen.insert(g.name.clone()) {
            f.error(format!(
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
