//! Signals from neighbours: in a shared PID namespace every process of the sidecar's uid can
//! signal it (`kill -HUP` with the wrong pid, `pkill -u`, a supervisor signalling its group).
//! Only SIGTERM and SIGINT end the daemon; SIGHUP rescans every group; every other signal whose
//! default would end or stop it is logged with its sender and counted, and the daemon goes on
//! reloading. The handled signals are blocked in every thread but the one that takes them, so
//! the kernel never gives one to a thread stuck in a filesystem call.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::native::task_state;
use crate::support::{Fixture, daemon_for, eventually, now_ns};

/// Every signal a neighbour may send by mistake whose default ends or stops a process, but the
/// two that are meant to end the daemon, with the label it is counted under.
fn stray() -> Vec<(i32, &'static str)> {
    use nix::libc;
    vec![
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
        (libc::SIGRTMAX(), "SIGRT"),
    ]
}

#[test]
fn stray_signals_are_logged_and_counted_and_the_daemon_keeps_reloading() {
    let f = Fixture::new();
    let d = daemon_for(&[&f.vol], &f.sink, &[]);
    let pid = Pid::from_raw(d.pid());
    for (sig, label) in stray() {
        // SAFETY: kill with a raw number (real-time signals have no `Signal`).
        assert_eq!(unsafe { nix::libc::kill(d.pid(), sig) }, 0, "{label}");
        eventually(
            &format!("{label} to be counted"),
            || d.metric("signals_received_total", &[("signal", label)]),
            |n| n.is_some_and(|n| n >= 1.0),
        );
        assert_ne!(
            task_state(d.pid(), d.pid()),
            Some('T'),
            "{label} stopped the daemon"
        );
    }
    let log = d.log();
    let me = std::process::id();
    for label in ["SIGUSR1", "SIGQUIT", "SIGTSTP"] {
        assert!(
            log.lines().any(|l| l.contains("signal ignored")
                && l.contains(label)
                && l.contains(&format!("pid {me}"))),
            "no log line names {label} and its sender pid {me}:\n{log}"
        );
    }
    // Still alive, answering and reloading.
    assert_eq!(kill(pid, None), Ok(()));
    assert_eq!(crate::support::http_get(d.addr, "/healthz").unwrap().0, 200);
    let before = f.sink.count();
    f.rotate("2");
    eventually(
        "the reload after the signals",
        || f.sink.count(),
        |n| *n > before,
    );
}

#[test]
fn sighup_rescans_every_group_without_a_change() {
    let f = Fixture::new();
    let other = f.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("key"), "k").unwrap();
    let d = daemon_for(&[&f.vol, &other], &f.sink, &["--resync-interval", "0"]);
    let since = now_ns();
    kill(Pid::from_raw(d.pid()), Signal::SIGHUP).unwrap();
    let status = eventually(
        "a scan of the group after SIGHUP",
        || d.status(),
        |s| {
            s["watches"].as_array().is_some_and(|ws| {
                ws.iter().all(|w| {
                    w["last_scan"]["started_monotonic_ns"]
                        .as_u64()
                        .is_some_and(|n| n > since)
                })
            })
        },
    );
    // A rescan of unchanged content is no change.
    assert_eq!(status["watches"][0]["changes"], 0);
    assert!(
        d.log().contains("rescanning every watch group"),
        "{}",
        d.log()
    );
}

#[test]
fn sigint_ends_the_daemon_cleanly_and_only_the_signals_thread_takes_signals() {
    let f = Fixture::new();
    let mut d = daemon_for(&[&f.vol], &f.sink, &[]);
    // Every thread but `signals` blocks SIGTERM, SIGINT and SIGHUP (bits 15, 2 and 1).
    let wanted = (1u64 << 14) | (1 << 1) | 1;
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap();
    let mut seen = Vec::new();
    for t in tasks {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap();
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        let comm = comm.trim().to_string();
        if comm == "signals" {
            assert_eq!(blocked & wanted, 0, "the signals thread blocks {blocked:x}");
        } else {
            assert_eq!(
                blocked & wanted,
                wanted,
                "thread {comm} blocks only {blocked:x}"
            );
        }
        seen.push(comm);
    }
    assert!(seen.iter().any(|c| c == "signals"), "threads: {seen:?}");
    let status = d.stop_with(Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "{}", d.log());
}
