//! The demonstration app: a long-lived process that holds a credential and reloads it on SIGHUP,
//! like nginx or PgBouncer do. `secret-reloader demo` runs it, and so do the tests, as a real
//! process receiving real signals.
//!
//! It reports which version it holds (the credential's first line, `version=N`; the rest of the
//! file, the secret, is never printed) on stdout and in a state file of `key=value` lines:
//! `pid`, `reloads`, `version`, `at_ns` (CLOCK_MONOTONIC when the signal arrived, so another
//! process can measure the latency).
//!
//! Options reproduce real apps' start-up: `--workers N` forks workers of the same name (a master
//! and its workers), `--handler-delay` installs the SIGHUP handler late (SIGHUP before then would
//! kill it), `--ignore-hup` ignores the signal.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{ForkResult, fork};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

pub(crate) use crate::monotonic_ns;

/// How the app behaves.
#[derive(Debug, Clone, Default)]
pub struct App {
    /// The credential file it holds; its first line names the version.
    pub credential: PathBuf,
    /// File rewritten after every (re)load: pid, reload count, version, monotonic time.
    pub state_file: Option<PathBuf>,
    /// File it writes its pid to.
    pub pid_file: Option<PathBuf>,
    /// Wait this long before installing the SIGHUP handler (a slow-starting app).
    pub handler_delay: Option<std::time::Duration>,
    /// Worker processes of the same name it forks (a master and its workers).
    pub workers: u32,
    /// Ignore SIGHUP instead of handling it (a misconfigured app).
    pub ignore_hup: bool,
}

/// Runs the app until SIGTERM/SIGINT; returns the exit code.
pub fn run(args: App) -> i32 {
    let mut worker = None;
    for i in 0..args.workers {
        // SAFETY: called before this process starts any thread, so the child is a plain copy.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Workers end with their master, as nginx's do.
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                worker = Some(i);
                break;
            }
            Ok(ForkResult::Parent { .. }) => {}
            Err(e) => {
                eprintln!("demo-app: cannot fork a worker: {e}");
                return 1;
            }
        }
    }
    if let (None, Some(pid_file)) = (worker, &args.pid_file)
        && let Err(e) = write_atomically(pid_file, &format!("{}\n", std::process::id()))
    {
        eprintln!("demo-app: cannot write {}: {e}", pid_file.display());
        return 1;
    }
    let state_file: Option<PathBuf> = args.state_file.as_ref().map(|p| match worker {
        Some(i) => PathBuf::from(format!("{}.worker{i}", p.display())),
        None => p.clone(),
    });
    let role = match worker {
        Some(i) => format!("worker {i}"),
        None => "app".to_string(),
    };
    if let Some(delay) = args.handler_delay {
        // Until the handler is installed, SIGHUP's default action ends the process.
        std::thread::sleep(delay);
    }
    let mut wanted = vec![SIGTERM, SIGINT];
    if args.ignore_hup {
        // SAFETY: replacing a disposition with SIG_IGN runs no code in signal context.
        let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };
    } else {
        wanted.push(SIGHUP);
    }
    let mut signals = match Signals::new(&wanted) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo-app: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let mut reloads = 0u64;
    report(
        &role,
        &args.credential,
        state_file.as_deref(),
        reloads,
        monotonic_ns(),
    );
    for sig in signals.forever() {
        if sig != SIGHUP {
            break;
        }
        let at = monotonic_ns();
        reloads += 1;
        report(&role, &args.credential, state_file.as_deref(), reloads, at);
    }
    0
}

/// Loads the credential and reports the version it holds.
fn report(role: &str, credential: &Path, state_file: Option<&Path>, reloads: u64, at_ns: u64) {
    let version = match std::fs::read_to_string(credential) {
        Ok(text) => text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("version="))
            .unwrap_or("unknown")
            .to_string(),
        Err(e) => format!("unreadable ({})", e.kind()),
    };
    let pid = std::process::id();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{role}: pid {pid} holds version {version} (reloads={reloads} at_ns={at_ns})"
    );
    let _ = out.flush();
    if let Some(path) = state_file {
        let text = format!("pid={pid}\nreloads={reloads}\nversion={version}\nat_ns={at_ns}\n");
        if let Err(e) = write_atomically(path, &text) {
            eprintln!("demo-app: cannot write {}: {e}", path.display());
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp{}", path.display(), std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
