//! What the flags give every target and every group unless the config file says otherwise, and
//! a target built with them.

use std::time::Duration;

use super::parse::{ServedCert, TlsClient};
use super::values::{AccessPolicy, ConsumedAs, ReloadOnStart};
use super::{TargetConfig, Verify};
use crate::process::identity::Identity;

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
