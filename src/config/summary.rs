//! The configuration in force, as `/status` shows it: no header values, no URL queries, no
//! credentials, and every path escaped (see [`crate::text`]), so that any configuration renders.

use serde_json::{Value, json};

use super::{Config, GroupConfig, TargetConfig};
use crate::text;

fn dur(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// The configuration in force, as shown by `/status`.
    pub(crate) fn summary(&self) -> Value {
        json!({
            "groups": self.groups.iter().map(|g| g.summary()).collect::<Vec<_>>(),
            "listen": self.listen.to_string(),
            "resync_interval": self.resync_interval.map(dur),
            "poll_interval": self.poll_interval.map(dur),
            "fs_stall_timeout": dur(self.fs_stall_timeout),
            "fingerprint_key": match (self.fingerprint_key_shared, self.state_file.is_some()) {
                (true, _) => "file",
                (false, true) => "random, kept in the state file",
                (false, false) => "random per process",
            },
            "status_token": self.status_token_file.is_some(),
            "state_file": self.state_file.is_some(),
            "compat_metrics": self.compat_metrics,
            "splay": self.splay.as_ref().map(|s| json!({
                "window": dur(s.window),
                "identity_from": s.identity_from,
                "offset": dur(s.offset),
                "offset_ms": s.offset.as_millis() as u64,
            })),
        })
    }
}

impl GroupConfig {
    fn summary(&self) -> Value {
        json!({
            "name": self.name,
            "watch": self.paths.iter().map(|p| text::path(p)).collect::<Vec<_>>(),
            "debounce": dur(self.debounce),
            "debounce_max": dur(self.debounce_max),
            "app_identity": self.app,
            "access_policy": self.access_policy,
            "consistency_check": self.consistency_check,
            "consistency_timeout": dur(self.consistency_timeout),
            "max_files": self.max_files,
            "follow_external_symlinks": self.follow_external_symlinks,
            "consumed_as": self.consumed_as,
            "targets": self.targets.iter().map(TargetConfig::summary).collect::<Vec<_>>(),
        })
    }
}

impl TargetConfig {
    fn summary(&self) -> Value {
        let action = self.action.summary();
        json!({
            "name": text::value(&self.name),
            "action": action,
            "verify": self.verify.as_ref().map(|v| json!({
                "url": v.endpoint.label(),
                "tls": v.endpoint.tls_summary(),
                "contains": v.contains.is_some(),
                "json": v.json.iter().map(|c| text::value(&c.to_string())).collect::<Vec<_>>(),
            })),
            "verify_served_cert": self.served_cert.as_ref().map(|s| s.label()),
            "min_reload_interval": dur(self.min_reload_interval),
            "reload_on_start": self.reload_on_start,
            "retries": self.retries,
        })
    }
}
