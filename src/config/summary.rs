//! The configuration in force, as `/status` shows it: no header values, no URL queries, no
//! credentials.

use serde_json::{Value, json};

use super::{Action, Config, GroupConfig, Selector, TargetConfig};

fn dur(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// The configuration in force, as shown by `/status`.
    pub fn summary(&self) -> Value {
        json!({
            "groups": self.groups.iter().map(|g| g.summary()).collect::<Vec<_>>(),
            "listen": self.listen.to_string(),
            "resync_interval": self.resync_interval.map(dur),
            "poll_interval": self.poll_interval.map(dur),
            "fingerprint_key": if self.fingerprint_key_shared { "file" } else { "random per process" },
        })
    }
}

impl GroupConfig {
    fn summary(&self) -> Value {
        json!({
            "name": self.name,
            "watch": self.paths,
            "debounce": dur(self.debounce),
            "debounce_max": dur(self.debounce_max),
            "app_identity": self.app,
            "access_policy": self.access_policy,
            "consistency_check": self.consistency_check,
            "consistency_timeout": dur(self.consistency_timeout),
            "targets": self.targets.iter().map(TargetConfig::summary).collect::<Vec<_>>(),
        })
    }
}

impl TargetConfig {
    fn summary(&self) -> Value {
        let action = match &self.action {
            Action::Http(h) => json!({
                "type": "http",
                "url": h.endpoint.label(),
                "method": h.method.as_str(),
                "expected_status": h.expected_status,
                "headers": h.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                "bearer_token_file": h.bearer_token_file,
                "timeout": dur(h.timeout),
            }),
            Action::Signal(s) => json!({
                "type": "signal",
                "signal": s.signal.as_str(),
                "selector": match &s.selector {
                    Selector::Name(n) => json!({"process_name": n}),
                    Selector::Cmdline(r) => json!({"process_cmdline": r.as_str()}),
                    Selector::PidFile(p) => json!({"pid_file": p}),
                },
                "signal_all": s.all,
            }),
            Action::Exec(e) => json!({
                "type": "exec",
                "command": e.argv.first(),
                "timeout": dur(e.timeout),
            }),
        };
        json!({
            "name": self.name,
            "action": action,
            "verify": self.verify.as_ref().map(|v| json!({"url": v.endpoint.label(), "contains": v.contains.is_some()})),
            "min_reload_interval": dur(self.min_reload_interval),
            "reload_on_start": self.reload_on_start,
            "retries": self.retries,
        })
    }
}
