//! What a writer of a watched directory, or a careless command line, cannot make the daemon
//! spend without bound (found in the second adversarial round): directories count against
//! `--max-files` (each costs an inotify watch of the uid's budget), skipped entries are listed up
//! to a thousand and counted beyond, timers that would spin are refused, and the zombies that
//! commands leave behind are reaped when the daemon is PID 1.

use std::path::Path;

use crate::support::process::{os, run_bin};
use crate::support::{Daemon, Fixture, daemon_beside, eventually, now_ns, open_dir};

/// inotify watches the process `pid` holds (one `inotify wd:` line each in its fdinfo).
fn inotify_watches(pid: i32) -> usize {
    let mut n = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        n += info
            .lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .count();
    }
    n
}

#[test]
fn directories_count_against_max_files() {
    let dir = open_dir();
    let w = dir.path().join("w");
    for i in 0..200 {
        std::fs::create_dir_all(w.join(format!("d{i:03}"))).unwrap();
    }
    std::fs::write(w.join("key"), "k").unwrap();
    let d = Daemon::start(&[
        "--watch",
        w.to_str().unwrap(),
        "--exec",
        "true",
        "--max-files",
        "50",
    ]);
    let status = eventually(
        "the cap reported",
        || d.status(),
        |s| {
            s["watches"][0]["problems"]
                .to_string()
                .contains("--max-files")
        },
    );
    assert_eq!(status["watches"][0]["complete"], false);
    let watches = inotify_watches(d.pid());
    assert!(watches <= 60, "{watches} inotify watches for a cap of 50");
}

#[test]
fn skipped_entries_are_listed_up_to_a_thousand_and_counted_beyond() {
    let dir = open_dir();
    let w = dir.path().join("w");
    std::fs::create_dir(&w).unwrap();
    std::fs::write(w.join("key"), "k").unwrap();
    for i in 0..3000 {
        nix::unistd::mkfifo(
            &w.join(format!("fifo{i:04}")),
            nix::sys::stat::Mode::S_IRUSR,
        )
        .unwrap();
    }
    let d = Daemon::start(&["--watch", w.to_str().unwrap(), "--exec", "true"]);
    let status = eventually(
        "the scan",
        || d.status(),
        |s| {
            s["watches"][0]["skipped"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
    let skipped = status["watches"][0]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1001, "{}", skipped.len());
    assert_eq!(skipped.last().unwrap(), "… and 2000 more entries skipped");
    // One more FIFO: logged as one line among a few, and the daemon answers all along.
    let since = now_ns();
    nix::unistd::mkfifo(&w.join("zz"), nix::sys::stat::Mode::S_IRUSR).unwrap();
    d.passed(since);
    let lines = d.log().lines().count();
    assert!(lines < 100, "{lines} log lines");
}

#[test]
fn timers_that_would_spin_are_refused() {
    let dir = open_dir();
    let w = dir.path().to_str().unwrap().to_string();
    for (flag, value) in [
        ("--resync-interval", "1ns"),
        ("--retry-backoff-max", "0s"),
        ("--fs-stall-timeout", "1ms"),
    ] {
        let e = run_bin(&os(&["--watch", &w, "--exec", "true", flag, value]));
        assert_eq!(e.code, 2, "{flag} {value}: {}", e.stderr);
        assert!(e.stderr.contains(flag), "{}", e.stderr);
    }
}

/// The children of `pid`, with their state letter.
fn children_of(pid: i32) -> Vec<(i32, char)> {
    let procfs = secret_reloader::process::ProcFs::new("/proc");
    procfs
        .pids()
        .unwrap()
        .into_iter()
        .filter_map(|p| procfs.stat(p).ok())
        .filter(|p| p.ppid == pid)
        .map(|p| (p.pid, p.state))
        .collect()
}

#[test]
fn as_pid_1_the_daemon_reaps_what_commands_leave_behind() {
    let f = Fixture::new();
    let script = f.dir.path().join("leave.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 0.05 &\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let d = daemon_beside(
        "true",
        &[
            "--watch",
            f.vol(),
            "--exec",
            script.to_str().unwrap(),
            "--min-reload-interval",
            "0",
        ],
    );
    d.wait_ready();
    let pid = daemon_pid_in(Path::new(&format!("/proc/{}", d.pid())));
    let ok = |n: f64| move |v: &Option<f64>| v.is_some_and(|v| v >= n);
    for (i, v) in ["2", "3", "4", "5", "6"].into_iter().enumerate() {
        f.rotate(v);
        eventually(
            "the command to run",
            || d.metric("reloads_total", &[("result", "success")]),
            ok(i as f64 + 1.0),
        );
        // What this run left behind has exited (a zombie the next run's reaping takes).
        eventually(
            "the process the command left to exit",
            || children_of(pid).iter().filter(|(_, s)| *s != 'Z').count(),
            |running| *running == 0,
        );
    }
    // Four runs reaped what the run before left; only the last one's may be a zombie still.
    let zombies = children_of(pid).iter().filter(|(_, s)| *s == 'Z').count();
    assert!(zombies <= 1, "{zombies} zombies");
}

/// The daemon's own pid (the test spawned `unshare`, whose child execs the daemon as PID 1).
fn daemon_pid_in(unshare: &Path) -> i32 {
    let children = std::fs::read_to_string(
        unshare
            .join("task")
            .join(unshare.file_name().unwrap())
            .join("children"),
    )
    .unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the daemon under unshare")
}
