//! Building the configuration: the flags' defaults for targets and groups, the command line's
//! own group, the config file's groups, and the checks across them. Every problem is collected
//! into one [`Findings`] before giving up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cli::RunArgs;
use super::defaults::{GroupDefaults, TargetDefaults, target};
use super::{
    AccessPolicy, CLI_GROUP, Config, ConfigError, Findings, GroupConfig, Loaded, OnOff, Splay,
    TlsClient, compat_flags, files, flags, json_file, parse, watch_paths,
};
use crate::scan::fingerprint::FingerprintKey;

/// Largest key, config and token files read.
const SMALL_FILE_LIMIT: u64 = 64 * 1024;
/// Largest config file read.
const CONFIG_FILE_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest `--config-json` text: what Linux lets one argument or environment variable hold
/// (`MAX_ARG_STRLEN`, 32 pages). A longer text cannot have come through `exec`; a caller of the
/// library gets the same bound.
const CONFIG_JSON_LIMIT: usize = 128 * 1024;

/// Builds the configuration from `args` (and the `--config` file they name, or the
/// `--config-json` text they hold); `require_action`: the daemon's flags must name an action (the
/// doctor's need not).
pub(super) fn build(args: &RunArgs, require_action: bool) -> Result<Loaded, ConfigError> {
    let mut f = Findings::default();
    let mut reload_urls = flags::text_list(
        &args.http.reload_url,
        "SECRET_RELOADER_RELOAD_URL",
        "--reload-url",
        &mut f,
    );
    flags::prometheus_config_reloader(args, &mut reload_urls, &mut f);
    let tls = flags::cli_tls(args, &mut f);
    let splay = args
        .splay
        .filter(|w| !w.is_zero())
        .and_then(|window| splay(window, &args.splay_identity_env, &mut f));
    let defaults = target_defaults(args, tls.as_ref(), splay.as_ref(), &mut f);
    let group_defaults = group_defaults(args, &mut f);
    let mut groups = Vec::new();
    groups.extend(cli_group(
        args,
        &reload_urls,
        require_action,
        (&defaults, &group_defaults),
        &mut f,
    ));
    groups.extend(file_groups(args, &group_defaults, &defaults, &mut f));
    check_access_policy(&groups, &mut f);
    crate::action::restart::check_groups(&groups, &mut f);
    if groups.is_empty() && f.errors.is_empty() {
        f.error(
            "nothing to watch: give --watch PATH with an action, or --config FILE (or \
             --config-json TEXT)",
        );
    }
    check_limits(args, &mut f);
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

/// What the flags give every target: intervals, retries, the verification (`--verify-url`
/// with the `--tls-*` options `tls`), the served certificate, this pod's `splay` offset.
fn target_defaults(
    args: &RunArgs,
    tls: Option<&Arc<TlsClient>>,
    splay: Option<&Splay>,
    f: &mut Findings,
) -> TargetDefaults {
    if let Some(url) = &args.verify_url {
        parse::warn_visible_query(url, "--verify-url", f);
    }
    let json = flags::text_list(
        &args.verify_json,
        "SECRET_RELOADER_VERIFY_JSON",
        "--verify-json",
        f,
    );
    let mut verify = flags::verify(
        args.verify_url.as_deref(),
        args.verify_contains.as_deref(),
        &json,
        args.reload_timeout,
        ["--verify-url", "--verify-contains", "--verify-json"],
        f,
    );
    if let Some(v) = &mut verify {
        parse::secure(&mut v.endpoint, tls, "--verify-url", f);
    }
    TargetDefaults {
        splay_offset: splay.map_or(Duration::ZERO, |s| s.offset),
        min_reload_interval: args.min_reload_interval,
        reload_on_start: args.reload_on_start,
        retries: args.reload_retries,
        retry_backoff_max: args.retry_backoff_max,
        timeout: args.reload_timeout,
        verify,
        tls: tls.cloned(),
        served_cert: args.verify_served_cert.as_deref().and_then(|e| {
            parse::served_cert(e, args.reload_timeout)
                .map_err(|e| f.error(format!("--verify-served-cert: {e}")))
                .ok()
        }),
    }
}

/// What the flags give every group: quiet periods, the app's identity, the checks and limits.
fn group_defaults(args: &RunArgs, f: &mut Findings) -> GroupDefaults {
    GroupDefaults {
        debounce: args.debounce,
        debounce_max: args.debounce_max,
        app: flags::declared_identity(
            args.app_uid,
            args.app_gid,
            &args.app_groups,
            "",
            ["--app-uid", "--app-gid", "--app-groups"],
            f,
        ),
        access_policy: args.access_policy,
        consistency_check: args.consistency_check == OnOff::On,
        consistency_timeout: args.consistency_timeout,
        max_files: args.max_files,
        follow_external_symlinks: args.follow_external_symlinks,
        consumed_as: args.consumed_as,
    }
}

/// The group the command line describes (`--watch` and the action flags), when it describes
/// one.
fn cli_group(
    args: &RunArgs,
    reload_urls: &[String],
    require_action: bool,
    (defaults, group_defaults): (&TargetDefaults, &GroupDefaults),
    f: &mut Findings,
) -> Option<GroupConfig> {
    let watch = flags::list(&args.watch, "SECRET_RELOADER_WATCH")
        .into_iter()
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    let actions = crate::action::from_flags(args, reload_urls, defaults.tls.as_ref(), f);
    if watch.is_empty() && actions.is_empty() {
        return None;
    }
    if watch.is_empty() {
        f.error("the action flags need something to watch: add --watch PATH");
    }
    if require_action && !flags::any_action_flag(args, reload_urls) {
        f.error(
            "no action given: add --reload-url URL, --process-name NAME (or \
             --process-cmdline/--pid-file, with --signal), or --exec COMMAND",
        );
    }
    let targets = actions
        .into_iter()
        .map(|action| target(String::new(), action, defaults))
        .collect();
    Some(GroupConfig {
        name: CLI_GROUP.to_string(),
        paths: watch_paths(&watch, "--watch", f),
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
    })
}

/// The groups of the config file `--config` names, or of the text `--config-json` holds: the
/// same parser, whose messages name the file or `--config-json`.
fn file_groups(
    args: &RunArgs,
    group_defaults: &GroupDefaults,
    defaults: &TargetDefaults,
    f: &mut Findings,
) -> Vec<GroupConfig> {
    match (&args.config, &args.config_json) {
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            f.error(
                "--config and --config-json both describe the watch groups: give only one \
                 (--config FILE for a file, --config-json TEXT for its content inline)",
            );
            Vec::new()
        }
        (None, Some(text)) if text.len() > CONFIG_JSON_LIMIT => {
            f.error(format!(
                "--config-json holds more than {} KiB, the most one argument or environment \
                 variable can hold: put the groups into a file (a ConfigMap) and give --config FILE",
                CONFIG_JSON_LIMIT / 1024
            ));
            Vec::new()
        }
        (None, Some(text)) => json_file::parse("--config-json", text, group_defaults, defaults, f),
        (Some(path), None) => config_file(path, group_defaults, defaults, f),
    }
}

/// The groups of the config file at `path`.
fn config_file(
    path: &Path,
    group_defaults: &GroupDefaults,
    defaults: &TargetDefaults,
    f: &mut Findings,
) -> Vec<GroupConfig> {
    let shown = path.display().to_string();
    match files::read_limited(path, CONFIG_FILE_LIMIT) {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let source = format!("--config {shown}");
                json_file::parse(&source, text, group_defaults, defaults, f)
            }
            Err(_) => {
                f.error(format!("--config: {shown} is not UTF-8 text"));
                Vec::new()
            }
        },
        Err(e) => {
            f.error(format!("--config: cannot read {shown}: {e}"));
            Vec::new()
        }
    }
}

/// The flags' own limits and orders.
fn check_limits(args: &RunArgs, f: &mut Findings) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::Cli;

    /// Two groups, a signal target and an exec target, as an injected sidecar's argument.
    const TWO_GROUPS: &str = r#"{"groups": [
        {"name": "tls", "watch": ["/etc/tls"],
         "targets": [{"type": "signal", "process_name": "nginx"}]},
        {"name": "creds", "watch": ["/etc/creds"], "debounce": "200ms",
         "targets": [{"type": "exec", "command": ["/bin/true"]}]}
    ]}"#;

    fn load(argv: &[&str]) -> Result<Config, Vec<String>> {
        let cli =
            Cli::try_from_argv(std::iter::once("secret-reloader").chain(argv.iter().copied()))
                .map_err(|e| vec![e.to_string()])?;
        Config::from_args(&cli.run).map_err(|e| e.0)
    }

    fn shape(c: &Config) -> Vec<(String, Vec<String>, Duration)> {
        c.groups
            .iter()
            .map(|g| {
                let targets = g.targets.iter().map(|t| t.name.clone()).collect();
                (g.name.clone(), targets, g.debounce)
            })
            .collect()
    }

    #[test]
    fn config_json_is_the_config_file_given_inline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, TWO_GROUPS).unwrap();
        let from_file = load(&["--config", file.to_str().unwrap()]).unwrap();
        let inline = load(&["--config-json", TWO_GROUPS]).unwrap();
        assert_eq!(shape(&inline), shape(&from_file));
        assert_eq!(
            shape(&inline),
            [
                (
                    "tls".into(),
                    vec!["signal:nginx".into()],
                    Duration::from_millis(100)
                ),
                (
                    "creds".into(),
                    vec!["exec:true".into()],
                    Duration::from_millis(200)
                ),
            ]
        );
        // Flags beside it form one more group, as beside a file.
        let both = load(&[
            "--config-json",
            TWO_GROUPS,
            "--watch",
            "/x",
            "--exec",
            "true",
        ])
        .unwrap();
        assert_eq!(both.groups.len(), 3);
        // The doctor takes it as the daemon does.
        let cli = Cli::try_from_argv(["secret-reloader", "--config-json", TWO_GROUPS]).unwrap();
        assert_eq!(
            shape(&Config::for_doctor(&cli.run).unwrap()),
            shape(&inline)
        );
    }

    #[test]
    fn config_json_errors_are_the_files_naming_config_json() {
        let bad = r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"exec","command":"true"},{"type":"http","url":"gopher://x"}]}]}"#;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.json");
        std::fs::write(&file, bad).unwrap();
        let shown = file.display().to_string();
        let from_file = load(&["--config", &shown]).unwrap_err();
        let inline = load(&["--config-json", bad]).unwrap_err();
        assert!(
            inline[0].starts_with("--config-json: groups[0].targets[1].url"),
            "{inline:?}"
        );
        let renamed: Vec<String> = from_file
            .iter()
            .map(|e| e.replace(&format!("--config {shown}"), "--config-json"))
            .collect();
        assert_eq!(inline, renamed);
        for (text, want) in [
            ("{ \"groups\": [ }", "--config-json: "),
            ("{\"groups\": []}", "--config-json: groups is empty"),
            (
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"http","urll":"x"}]}]}"#,
                "unknown field `urll`",
            ),
        ] {
            let e = load(&["--config-json", text]).unwrap_err();
            assert!(e.iter().any(|e| e.contains(want)), "{text}: {e:?}");
        }
    }

    #[test]
    fn config_json_and_config_are_exclusive_and_config_json_is_bounded() {
        let e = load(&["--config", "/etc/x.json", "--config-json", TWO_GROUPS]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("--config and --config-json") && e[0].contains("only one"),
            "{e:?}"
        );
        // Valid JSON past the bound: refused before it is parsed.
        let padded = format!("{}{}", TWO_GROUPS, " ".repeat(CONFIG_JSON_LIMIT));
        let e = load(&["--config-json", &padded]).unwrap_err();
        assert!(
            e[0].contains("--config-json holds more than 128 KiB")
                && e[0].contains("--config FILE"),
            "{e:?}"
        );
        let at_the_bound = format!(
            "{TWO_GROUPS}{}",
            " ".repeat(CONFIG_JSON_LIMIT - TWO_GROUPS.len())
        );
        assert_eq!(
            load(&["--config-json", &at_the_bound])
                .unwrap()
                .groups
                .len(),
            2
        );
    }
}
