//! The exec kind: run a command. Its configuration, from the flags (`--exec`, repeatable) and
//! from a config file's `"type": "exec"` target; [`run`] runs it; [`doctor`] checks it.

pub(crate) mod doctor;
pub(crate) mod run;

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Findings;

/// The JSON Schema of a config file's `"type": "exec"` target (`$defs.exec_target` of
/// `deploy/config.schema.json`, which a test holds to it).
pub(crate) const SCHEMA: &str = include_str!("schema.json");

/// Its flags and config file fields, as `docs/reference.md` shows them (a test holds the page to
/// it).
pub(crate) const DOC: &str = include_str!("doc.md");

/// The exec kind's flags.
#[derive(Debug, clap::Args)]
pub struct ExecFlags {
    /// Command run on change, 'CMD ARGS' (shell-style quoting, no shell); success is exit 0.
    #[arg(long, value_name = "COMMAND", env = "SECRET_RELOADER_EXEC")]
    pub exec: Vec<String>,
}

/// A command run on change.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Limit on its run time.
    pub timeout: Duration,
}

impl ExecConfig {
    /// The target's name when none is given: `exec:` and the program's file name.
    pub(crate) fn default_name(&self) -> String {
        let prog = self.argv.first().map(String::as_str).unwrap_or_default();
        format!("exec:{}", prog.rsplit('/').next().unwrap_or(prog))
    }

    /// What `/status` shows: the program, never its arguments (they may carry credentials).
    pub(crate) fn summary(&self) -> Value {
        json!({
            "command": self.argv.first().map(|c| crate::text::value(c)),
            "timeout": humantime::format_duration(self.timeout).to_string(),
        })
    }
}

/// The command targets of the command line, one per `--exec`.
pub(crate) fn from_flags(args: &ExecFlags, timeout: Duration, f: &mut Findings) -> Vec<ExecConfig> {
    let mut out = Vec::new();
    for cmd in &args.exec {
        match exec_argv(cmd) {
            Ok(argv) => out.push(ExecConfig { argv, timeout }),
            Err(e) => f.error(format!("--exec: {e}")),
        }
    }
    out
}

/// A config file's `"type": "exec"` target: its own fields and those every target has.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTarget {
    /// The command.
    pub command: Command,
    /// Its time limit.
    pub timeout: Option<String>,
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

/// A config file's command: one shell-style string or an argument list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum Command {
    /// `"command": "nginx -s reload"`.
    Line(String),
    /// `"command": ["nginx", "-s", "reload"]`.
    Argv(Vec<String>),
}

/// The command target of a config file's fields (`at`: the target's field path; `timeout`: the
/// field's or the group's, already parsed).
pub(crate) fn from_file(
    command: Command,
    timeout: Option<Duration>,
    at: &str,
    f: &mut Findings,
) -> Option<ExecConfig> {
    let argv = match command {
        Command::Line(line) => exec_argv(&line),
        Command::Argv(argv) if argv.is_empty() => Err("the command is empty".to_string()),
        Command::Argv(argv) => Ok(argv),
    }
    .map_err(|e| f.error(format!("{at}command: {e}")))
    .ok();
    Some(ExecConfig {
        argv: argv?,
        timeout: timeout?,
    })
}

/// Splits a command with shell-style quoting (no shell runs it).
pub(crate) fn exec_argv(cmd: &str) -> Result<Vec<String>, String> {
    match shlex::split(cmd) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        Some(_) => Err("the command is empty".into()),
        None => Err(format!("'{}' has unbalanced quotes", cmd.escape_debug())),
    }
}
