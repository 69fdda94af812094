//! Exec action: run a command on change; success is exit status 0.
//!
//! The command runs without a shell (the image may have none), with stdin closed and its output
//! going to the sidecar's own stdout/stderr. It is killed when the time limit passes. Its
//! environment carries the group name and the keyed fingerprint of the version, never content.

use std::process::Stdio;

use tokio::process::Command;

use super::{ActionError, Outcome};
use crate::config::ExecAction;
use crate::scanner::Version;

/// The exec action of one target.
pub struct ExecActor {
    /// Command and time limit.
    cfg: ExecAction,
    /// Watch group name, passed as `SECRET_RELOADER_WATCH`.
    group: String,
}

impl ExecActor {
    /// An actor for `cfg` in watch group `group`.
    pub fn new(cfg: ExecAction, group: &str) -> Self {
        ExecActor {
            cfg,
            group: group.to_string(),
        }
    }

    /// Runs the command once.
    pub async fn run(&self, version: &Version) -> Result<Outcome, ActionError> {
        let prog = &self.cfg.argv[0];
        let mut child = Command::new(prog)
            .args(&self.cfg.argv[1..])
            .env("SECRET_RELOADER_WATCH", &self.group)
            .env("SECRET_RELOADER_FINGERPRINT", version.fingerprint.short())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ActionError::Failed(format!("cannot run {prog}: {e}")))?;
        let shown = humantime::format_duration(self.cfg.timeout);
        match tokio::time::timeout(self.cfg.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(Outcome::Done(format!("{prog} exited 0"))),
            Ok(Ok(status)) => Err(ActionError::Failed(format!("{prog} failed: {status}"))),
            Ok(Err(e)) => Err(ActionError::Failed(format!("cannot wait for {prog}: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                Err(ActionError::Failed(format!(
                    "{prog} did not finish within {shown} (the time limit): killed"
                )))
            }
        }
    }
}
