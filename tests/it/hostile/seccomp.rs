//! A seccomp profile that refuses pidfds (older container runtimes' default profiles do not know
//! `pidfd_open` or `pidfd_send_signal`), applied by the tests' own launcher. The daemon says
//! which guarantee is lost (the log, `/status` `sidecar.signal_delivery`, `signal_delivery_info`,
//! the doctor) and signals with `kill(2)` right after checking the process is the one found; a
//! refused send names seccomp, not the app's uid.

use std::process::Stdio;

use crate::support::native::deny_syscalls_with;
use crate::support::process::{doctor, os};
use crate::support::{App, Daemon, Fixture, bin, eventually, let_content_age};

/// The daemon with `args` (and `--listen 127.0.0.1:0`) under a filter refusing `calls`.
fn daemon_denied(calls: &[&str], errno: &str, args: &[&str]) -> Daemon {
    let mut cmd = deny_syscalls_with(calls, errno);
    cmd.arg(bin())
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Daemon::spawn(cmd)
}

#[test]
fn without_pidfds_the_lost_guarantee_is_said_and_kill_still_reloads() {
    for (calls, errno, named) in [
        (&["pidfd_open"][..], "EPERM", "pidfd_open"),
        (&["pidfd_send_signal"][..], "EPERM", "pidfd_send_signal"),
        (&["pidfd_open"][..], "ENOSYS", "pidfd_open"),
    ] {
        let f = Fixture::new();
        let_content_age();
        let app = App::start(f.dir.path(), &f.vol.join("token"), &[]);
        app.wait_up();
        let d = daemon_denied(
            calls,
            errno,
            &[
                "--watch",
                f.vol(),
                "--process-name",
                &app.name,
                "--min-reload-interval",
                "0",
            ],
        );
        d.wait_ready();
        let status = d.status();
        let delivery = &status["sidecar"]["signal_delivery"];
        assert_eq!(delivery["method"], "kill", "{named} {errno}: {delivery}");
        let why = delivery["why"].as_str().unwrap();
        assert!(why.contains(named) && why.contains("seccomp"), "{why}");
        assert!(
            why.contains("recycled"),
            "the lost guarantee is not said: {why}"
        );
        assert_eq!(
            d.metric("signal_delivery_info", &[("method", "kill")]),
            Some(1.0)
        );
        assert!(d.log().contains("no pidfds"), "{}", d.log());
        f.rotate("2");
        eventually("the reload through kill(2)", || app.reloads(), |n| *n >= 1);
        // The doctor, in the same container (under the same profile), says it too.
        let mut cmd = deny_syscalls_with(calls, errno);
        cmd.arg(bin()).args([
            "doctor",
            "--watch",
            f.vol(),
            "--process-name",
            &app.name,
            "--standalone",
        ]);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Signals   sent with kill(2)"), "{text}");
        assert!(text.contains("no pidfds"), "{text}");
    }
}

#[test]
fn a_send_the_profile_refuses_names_seccomp_not_the_apps_uid() {
    let f = Fixture::new();
    let_content_age();
    let app = App::start(f.dir.path(), &f.vol.join("token"), &[]);
    app.wait_up();
    let d = daemon_denied(
        &["pidfd_send_signal", "kill", "tgkill"],
        "EPERM",
        &[
            "--watch",
            f.vol(),
            "--process-name",
            &app.name,
            "--min-reload-interval",
            "0",
            "--retry-backoff-max",
            "1s",
        ],
    );
    d.wait_ready();
    f.rotate("2");
    let msg = d.error_containing("not permitted");
    assert!(msg.contains("seccomp"), "{msg}");
    assert!(!msg.contains("runAsUser"), "{msg}");
    assert_eq!(app.reloads(), 0);
}

#[test]
fn with_pidfds_the_status_says_so() {
    let f = Fixture::new();
    let d = crate::support::daemon_for(&[&f.vol], &f.sink, &[]);
    assert_eq!(d.status()["sidecar"]["signal_delivery"]["method"], "pidfd");
    assert_eq!(
        d.metric("signal_delivery_info", &[("method", "pidfd")]),
        Some(1.0)
    );
    let (_, text, _) = doctor(&os(&["--watch", f.vol(), "--exec", "true", "--standalone"]));
    assert!(text.contains("Signals   sent through pidfds"), "{text}");
}
