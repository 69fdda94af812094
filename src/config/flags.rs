//! The daemon's own command-line flags turned into the `default` watch group's actions and
//! settings. Every error names the flag.

use std::path::{Component, Path, PathBuf};

use super::{Action, ExecAction, HttpAction, Selector, SignalAction, Verify, parse};
use crate::cli::RunArgs;
use crate::identity::Identity;

/// Whether any flag that makes an action was given (valid or not).
pub(crate) fn any_action_flag(args: &RunArgs) -> bool {
    !args.reload_url.is_empty()
        || !args.exec.is_empty()
        || args.signal.is_some()
        || args.process_name.is_some()
        || args.process_cmdline.is_some()
        || args.pid_file.is_some()
}

/// The actions described by the command-line flags.
pub(crate) fn cli_actions(args: &RunArgs, errs: &mut Vec<String>) -> Vec<Action> {
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

/// The app identity declared with `--app-uid`, `--app-gid` and `--app-groups`.
pub(crate) fn declared_identity(
    uid: Option<u32>,
    gid: Option<u32>,
    groups: &[u32],
    at: &str,
    names: [&str; 3],
    errs: &mut Vec<String>,
) -> Option<Identity> {
    match (uid, gid) {
        (Some(uid), Some(gid)) => Some(Identity {
            uid,
            gid,
            groups: groups.to_vec(),
        }),
        (None, None) if groups.is_empty() => None,
        (None, None) => {
            errs.push(format!(
                "{at}{} needs {} and {}",
                names[2], names[0], names[1]
            ));
            None
        }
        _ => {
            errs.push(format!(
                "{at}{} and {} go together (the app's runAsUser and runAsGroup)",
                names[0], names[1]
            ));
            None
        }
    }
}

/// The verification of a reload: `url` probed, `contains` looked for in the answer.
pub(crate) fn verify(
    url: Option<&str>,
    contains: Option<&str>,
    timeout: std::time::Duration,
    names: [&str; 2],
    errs: &mut Vec<String>,
) -> Option<Verify> {
    match (url, contains) {
        (Some(url), contains) => match parse::endpoint(url) {
            Ok(endpoint) => Some(Verify {
                endpoint,
                contains: contains.map(str::to_string),
                timeout,
            }),
            Err(e) => {
                errs.push(format!("{}: {e}", names[0]));
                None
            }
        },
        (None, Some(_)) => {
            errs.push(format!("{} needs {}", names[1], names[0]));
            None
        }
        (None, None) => None,
    }
}
