//! Exec action: run a command on change; success is exit status 0.
//!
//! The command runs without a shell (the image may have none), with stdin closed and its output
//! going to the sidecar's own stdout/stderr. It is killed when the time limit passes. Its
//! environment is not the sidecar's (which may hold headers and URLs with credentials): only
//! `PATH`, and `SECRET_RELOADER_TARGET`, `SECRET_RELOADER_WATCH` (the target and its watch
//! group) and `SECRET_RELOADER_FINGERPRINT` (the version's keyed fingerprint), never content.

use std::process::Stdio;

use tokio::process::Command;

use super::{ActionError, Outcome};
use crate::config::ExecConfig;
use crate::group::Version;
use crate::text;

/// `PATH` when the sidecar has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The exec action of one target.
pub struct ExecAction {
    /// Command and time limit.
    cfg: ExecConfig,
    /// Target name, passed as `SECRET_RELOADER_TARGET`.
    target: String,
    /// Watch group name, passed as `SECRET_RELOADER_WATCH`.
    group: String,
}

impl ExecAction {
    /// An action for `cfg`, of target `target` in watch group `group`.
    pub fn new(cfg: ExecConfig, target: &str, group: &str) -> Self {
        ExecAction {
            cfg,
            target: target.to_string(),
            group: group.to_string(),
        }
    }

    /// Runs the command once.
    pub async fn run(&self, version: &Version) -> Result<Outcome, ActionError> {
        let prog = &self.cfg.argv[0];
        let shown = text::value(prog);
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let mut child = Command::new(prog)
            .args(&self.cfg.argv[1..])
            .env_clear()
            .env("PATH", path)
            .env("SECRET_RELOADER_TARGET", &self.target)
            .env("SECRET_RELOADER_WATCH", &self.group)
            .env("SECRET_RELOADER_FINGERPRINT", version.fingerprint.short())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ActionError::Failed(format!("cannot run {shown}: {e}")))?;
        let limit = humantime::format_duration(self.cfg.timeout);
        match tokio::time::timeout(self.cfg.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(Outcome::Done(format!("{shown} exited 0"))),
            Ok(Ok(status)) => Err(ActionError::Failed(format!("{shown} failed: {status}"))),
            Ok(Err(e)) => Err(ActionError::Failed(format!("cannot wait for {shown}: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                Err(ActionError::Failed(format!(
                    "{shown} did not finish within {limit} (the time limit): killed"
                )))
            }
        }
    }
}
