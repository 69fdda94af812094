//! The input layer: flags, environment and the JSON config file → one validated [`Config`].
//!
//! Every problem is collected before giving up, and each message names the flag or field it is
//! about and what to do, so that one run of the program shows an operator everything to fix
//! (exit code 2). Values that may carry credentials (header values, URL queries and userinfo)
//! never appear in a message.

mod build;
pub mod cli;
pub(crate) mod compat_flags;
mod defaults;
mod findings;
mod flags;
pub(crate) mod json_check;
mod json_file;
mod model;
pub(crate) mod parse;
pub(crate) mod rfc3339;
mod summary;
pub(crate) mod tls;
mod values;

use clap::Parser;

use crate::files;
use build::build;
use cli::{Cli, RunArgs};
pub(crate) use defaults::{GroupDefaults, TargetDefaults, target};
pub(crate) use findings::Findings;
pub(crate) use flags::watch_paths;
pub use json_check::{JsonCheck, JsonOp, JsonWant};
pub use model::*;
pub(crate) use parse::{Endpoint, ServedCert, TlsClient};
pub use values::*;

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

    /// Validates parsed flags (and the `--config` file they name, or `--config-json`).
    pub(crate) fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        Config::load(args).map(|l| l.config)
    }

    /// As `Config::from_args`, with the warnings the daemon logs at start.
    pub fn load(args: &RunArgs) -> Result<Loaded, ConfigError> {
        build(args, true)
    }

    /// Validates the text of a config file with default flags, as `--config-json` gives it
    /// (fuzzing, tools).
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let mut cli = Cli::try_parse_from(["secret-reloader"])
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        cli.run.config = None;
        cli.run.config_json = Some(text.to_string());
        build(&cli.run, true).map(|l| l.config)
    }

    /// As `Config::from_args` for the one-shot report, which may look at paths without any
    /// action.
    pub fn for_doctor(args: &RunArgs) -> Result<Config, ConfigError> {
        build(args, false).map(|l| l.config)
    }
}
