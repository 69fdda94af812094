//! Exec action: run a command on change; success is exit status 0.
//!
//! The command runs without a shell (the image may have none), with stdin closed, in a process
//! group of its own: when the time limit passes the whole group is killed, so a process it
//! started in the background does not outlive it. Its environment is not the sidecar's (which
//! may hold headers and URLs with credentials): only `PATH`, and `SECRET_RELOADER_TARGET`,
//! `SECRET_RELOADER_WATCH` (the target and its watch group) and `SECRET_RELOADER_FINGERPRINT`
//! (the version's keyed fingerprint), never content.
//!
//! Its output is text from another program: it never reaches the daemon's log as it is (a line
//! shaped like the daemon's own would be indistinguishable from it, an escape sequence would
//! reach the operator's terminal, 100 MB of it would fill the log). The first `KEPT` bytes of
//! each stream are kept, the rest counted and dropped, and what was kept is logged escaped, as
//! fields of one line of the daemon's own. Reading stops shortly after the command exits: a
//! process it left behind may hold its output open for good.
//!
//! What a command leaves behind becomes the child of PID 1 when it exits. When the daemon is
//! PID 1 itself (its own container without `shareProcessNamespace`), it reaps them after each
//! command (`reap_orphans`): a zombie per run would otherwise pile up for the pod's life.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::ExecConfig;
use crate::action::{ActionError, Outcome};
use crate::group::Version;
use crate::text;

/// `PATH` when the sidecar has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Bytes of each output stream kept for the log.
pub(crate) const KEPT: usize = 4096;

/// How long the output is still read once the command has exited (what it started in the
/// background may hold it open).
const DRAIN: Duration = Duration::from_millis(100);

/// The start of one output stream, and how much there was.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

impl Captured {
    /// What was kept, escaped, with a note of what was dropped.
    fn shown(&self) -> String {
        let mut s = crate::text::bytes(self.kept.trim_ascii_end());
        if self.total > self.kept.len() as u64 {
            s.push_str(&format!(
                " [… {} more bytes]",
                self.total - self.kept.len() as u64
            ));
        }
        s
    }
}

/// Reads `from` to its end, keeping the first `KEPT` bytes into `into`.
async fn capture(mut from: impl AsyncRead + Unpin, into: &mut Captured) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                into.total += n as u64;
                let room = KEPT.saturating_sub(into.kept.len());
                into.kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Commands running now (their pids): never reaped by `reap_orphans`, their own waits do.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// As PID 1, reaps the exited processes that commands left behind (not the commands that run
/// now: their own waits take their status).
pub(crate) fn reap_orphans() {
    if std::process::id() != 1 {
        return;
    }
    let running = crate::lock(&RUNNING);
    let procfs = crate::process::ProcFs::new("/proc");
    for pid in procfs.pids().unwrap_or_default() {
        if pid <= 1 || running.contains(&(pid as u32)) {
            continue;
        }
        if procfs
            .stat(pid)
            .is_ok_and(|p| p.ppid == 1 && p.state == 'Z')
        {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// The exec action of one target.
pub(crate) struct ExecAction {
    /// Command and time limit.
    cfg: ExecConfig,
    /// Target name, passed as `SECRET_RELOADER_TARGET`.
    target: String,
    /// Watch group name, passed as `SECRET_RELOADER_WATCH`.
    group: String,
}

impl ExecAction {
    /// An action for `cfg`, of target `target` in watch group `group`.
    pub(crate) fn new(cfg: ExecConfig, target: &str, group: &str) -> Self {
        ExecAction {
            cfg,
            target: target.to_string(),
            group: group.to_string(),
        }
    }

    /// Runs the command once.
    pub(crate) async fn run(&self, version: &Version) -> Result<Outcome, ActionError> {
        let prog = &self.cfg.argv[0];
        let shown = text::value(prog);
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        // Registered before it can exit: the reaper never takes a command's own status.
        let (mut child, own) = {
            let mut running = crate::lock(&RUNNING);
            let child = Command::new(prog)
                .args(&self.cfg.argv[1..])
                .env_clear()
                .env("PATH", path)
                .env("SECRET_RELOADER_TARGET", &self.target)
                .env("SECRET_RELOADER_WATCH", &self.group)
                .env("SECRET_RELOADER_FINGERPRINT", version.fingerprint.short())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::EAGAIN) {
                        crate::report::resources::exhausted(
                            crate::report::resources::Resource::Threads,
                            &e,
                        );
                    } else {
                        crate::report::resources::check(&e);
                    }
                    ActionError::Failed(format!("cannot run {shown}: {e}"))
                })?;
            let own = child.id();
            running.extend(own);
            (child, own)
        };
        let group = own.map(|p| nix::unistd::Pid::from_raw(p as i32));
        let (mut out, mut err) = (Captured::default(), Captured::default());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let waited = {
            let reading = async {
                tokio::join!(
                    async {
                        if let Some(s) = stdout {
                            capture(s, &mut out).await
                        }
                    },
                    async {
                        if let Some(s) = stderr {
                            capture(s, &mut err).await
                        }
                    },
                )
            };
            tokio::pin!(reading);
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            let (waited, read) = tokio::select! {
                r = tokio::time::timeout_at(deadline, child.wait()) => (r, false),
                // Output read to its end first; the exit follows.
                _ = &mut reading => (tokio::time::timeout_at(deadline, child.wait()).await, true),
            };
            if waited.is_err()
                && let Some(g) = group
            {
                let _ = nix::sys::signal::killpg(g, nix::sys::signal::Signal::SIGKILL);
            }
            if !read {
                let _ = tokio::time::timeout(DRAIN, &mut reading).await;
            }
            waited
        };
        crate::lock(&RUNNING).retain(|p| Some(*p) != own);
        reap_orphans();
        let limit = humantime::format_duration(self.cfg.timeout);
        let result = match waited {
            Ok(Ok(status)) if status.success() => Ok(Outcome::Done(format!("{shown} exited 0"))),
            Ok(Ok(status)) => Err(ActionError::Failed(format!(
                "{shown} failed: {status} (its output is in the log)"
            ))),
            Ok(Err(e)) => Err(ActionError::Failed(format!("cannot wait for {shown}: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                Err(ActionError::Failed(format!(
                    "{shown} did not finish within {limit} (the time limit): killed with its process group"
                )))
            }
        };
        if out.total > 0 || err.total > 0 {
            let (stdout, stderr) = (out.shown(), err.shown());
            if result.is_ok() {
                tracing::info!(command = %shown, %stdout, %stderr, stdout_bytes = out.total, stderr_bytes = err.total, "command output");
            } else {
                tracing::warn!(command = %shown, %stdout, %stderr, stdout_bytes = out.total, stderr_bytes = err.total, "command output");
            }
        }
        result
    }
}
