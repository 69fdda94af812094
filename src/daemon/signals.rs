//! Every signal that could end or stop the daemon: SIGTERM and SIGINT start the orderly shutdown
//! (Kubernetes sends SIGTERM, Ctrl-C SIGINT: the daemon stops its watches, gives actions in
//! flight `--shutdown-grace`, and is ended `WATCHDOG_MARGIN` later should it hang; a second one
//! ends it at once), SIGHUP rescans every watch group, and every other one is logged,
//! counted (`secret_reloader_signals_received_total{signal}`) and otherwise ignored.
//!
//! In a shared PID namespace every process of the sidecar's uid can signal it: `kill -HUP` with
//! the wrong pid, `pkill -u`, a supervisor signalling its process group. The default action of
//! most signals ends a process without a word (SIGHUP, SIGUSR1, SIGALRM, the real-time signals)
//! or stops it (SIGTSTP, SIGTTIN, SIGTTOU). Each is taken by a handler here, not set to SIG_IGN:
//! an ignored signal would stay ignored in the commands the daemon runs, a handler is reset by
//! `exec`. The fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS) and SIGABRT
//! keep their default: raised by the kernel or by `abort()` they mean the daemon is broken and
//! must end, with a core where the pod allows one. SIGPIPE stays ignored, as the Rust runtime
//! sets it (and resets it in the commands it runs). SIGKILL and SIGSTOP cannot be handled.
//!
//! Every handled signal is blocked in every thread but the one that takes them: [`install`] runs
//! before any other thread starts, and threads inherit their creator's mask. The kernel then
//! gives a process-directed signal to that thread only, never to a thread stuck in an
//! uninterruptible filesystem call (a stalled FUSE or NFS read), where it would wait for good.
//! Commands the daemon runs start with an empty mask (the standard library clears it between
//! `fork` and `exec`).

use std::io;
use std::time::{Duration, Instant};

use libc::c_int;
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithRawSiginfo;
use tokio::sync::Notify;

/// Time beyond `--shutdown-grace` after the first SIGTERM or SIGINT before the process is ended
/// regardless (a hang nothing else can end): exit code 1.
pub(crate) const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

/// The signals that end or stop a process by default and are not faults, by name. The
/// real-time signals (`SIGRTMIN`..=`SIGRTMAX`, whose first numbers the C library keeps for
/// itself) are added at run time.
const HANDLED: [(c_int, &str); 17] = [
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
];

/// How often a signal that keeps coming is logged (each one is counted).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Raised by each SIGHUP; the daemon rescans every watch group.
static RESCAN: Notify = Notify::const_new();

/// Completes at the next SIGHUP (one that came while nobody waited counts).
pub(crate) async fn rescan_requested() {
    RESCAN.notified().await;
}

/// The signals taken, and what completes at the first SIGTERM or SIGINT.
pub struct Installed {
    terminated: tokio::sync::oneshot::Receiver<()>,
}

impl Installed {
    /// Completes at the first SIGTERM or SIGINT.
    pub async fn terminated(self) {
        let _ = self.terminated.await;
    }
}

/// Every signal number handled, with its counter's index.
fn handled() -> Vec<(c_int, usize)> {
    let mut all: Vec<(c_int, usize)> = HANDLED
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (*s, i))
        .collect();
    all.extend((libc::SIGRTMIN()..=libc::SIGRTMAX()).map(|s| (s, HANDLED.len())));
    all
}

/// Blocks every handled signal in the calling thread (and so in every thread it starts from
/// now on), installs the handlers and starts the thread that takes them. Call before any other
/// thread exists. After the first SIGTERM or SIGINT the daemon has `grace` plus
/// `WATCHDOG_MARGIN` to end; a second one ends it at once.
pub fn install(grace: Duration) -> io::Result<Installed> {
    let numbers = handled();
    // SAFETY: sigemptyset and sigaddset only write into the set they are given.
    let mask = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (s, _) in &numbers {
            libc::sigaddset(&mut set, *s);
        }
        set
    };
    let mut signals = SignalsInfo::<WithRawSiginfo>::new(numbers.iter().map(|(s, _)| *s))?;
    set_mask(libc::SIG_BLOCK, &mask)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // The one thread that takes them.
            let _ = set_mask(libc::SIG_UNBLOCK, &mask);
            let mut tx = Some(tx);
            let mut logged: Vec<Option<(Instant, u64)>> = vec![None; HANDLED.len() + 1];
            for info in signals.forever() {
                let sig = info.si_signo;
                let index = numbers
                    .iter()
                    .find(|(s, _)| *s == sig)
                    .map_or(HANDLED.len(), |(_, i)| *i);
                crate::report::metrics::signal_received(
                    HANDLED.get(index).map_or("SIGRT", |(_, n)| n),
                );
                let from = Sender::of(&info);
                match sig {
                    libc::SIGTERM | libc::SIGINT => {
                        let Some(tx) = tx.take() else {
                            tracing::error!(signal = name(sig), from = %from, "a second termination signal: exiting at once");
                            eprintln!("secret-reloader: signal {sig} again: exiting at once");
                            std::process::exit(1);
                        };
                        tracing::info!(signal = name(sig), from = %from, "termination requested");
                        let _ = tx.send(());
                        start_watchdog(grace + WATCHDOG_MARGIN);
                    }
                    libc::SIGHUP => {
                        if should_log(&mut logged[index]).is_some() {
                            tracing::info!(signal = "SIGHUP", from = %from, "rescanning every watch group");
                        }
                        RESCAN.notify_one();
                    }
                    _ => {
                        if let Some(repeated) = should_log(&mut logged[index]) {
                            tracing::warn!(
                                signal = name(sig),
                                number = sig,
                                from = %from,
                                repeated,
                                "signal ignored: only SIGTERM and SIGINT end the daemon"
                            );
                        }
                    }
                }
            }
        })?;
    Ok(Installed { terminated: rx })
}

/// Blocks or unblocks `set` in the calling thread.
fn set_mask(how: c_int, set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for.
    match unsafe { libc::pthread_sigmask(how, set, std::ptr::null_mut()) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Whether to log this one now, and how many came unlogged before it.
fn should_log(last: &mut Option<(Instant, u64)>) -> Option<u64> {
    let now = Instant::now();
    match last {
        Some((at, skipped)) if now.duration_since(*at) < LOG_EVERY => {
            *skipped += 1;
            None
        }
        _ => {
            let skipped = last.map_or(0, |(_, s)| s);
            *last = Some((now, 0));
            Some(skipped)
        }
    }
}

fn start_watchdog(limit: Duration) {
    let _ = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(after = ?limit, "the daemon did not end after the shutdown grace period: exiting");
            eprintln!("secret-reloader: did not end {limit:?} after the signal: exiting");
            std::process::exit(1);
        });
}

/// A signal's name for logs.
fn name(sig: c_int) -> String {
    match HANDLED.iter().find(|(s, _)| *s == sig) {
        Some((_, n)) => (*n).to_string(),
        None => format!("SIGRTMIN+{}", sig - libc::SIGRTMIN()),
    }
}

/// Who sent a signal, as the kernel recorded it.
struct Sender {
    /// Sent by a process (kill, sigqueue, tgkill): its pid and uid.
    process: Option<(i32, u32)>,
}

impl Sender {
    fn of(info: &libc::siginfo_t) -> Sender {
        // SI_USER (kill), SI_QUEUE, SI_TKILL and the other user codes are zero or negative; the
        // kernel's own (a timer, a limit, the terminal) are positive and carry no sender.
        let process = (info.si_code <= 0).then(|| {
            // SAFETY: for these codes the kernel fills si_pid and si_uid.
            unsafe { (info.si_pid(), info.si_uid()) }
        });
        Sender { process }
    }
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((pid, uid)) = self.process else {
            return f.write_str("the kernel");
        };
        let comm = crate::files::read_proc(std::path::Path::new(&format!("/proc/{pid}/comm")), 64)
            .unwrap_or_default();
        let comm = crate::text::bytes(comm.trim_ascii_end());
        if comm.is_empty() {
            write!(f, "pid {pid} (uid {uid}, gone)")
        } else {
            write!(f, "pid {pid} ({comm}, uid {uid})")
        }
    }
}
