//! The settings that are one of a few named values (`--reload-on-start auto`, `--access-policy
//! block`, ...), shared by the flags' declaration, the config file and the stages that read them.

/// Default of `--max-files`: files one version may have.
pub(crate) const DEFAULT_MAX_FILES: usize = 10_000;

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
