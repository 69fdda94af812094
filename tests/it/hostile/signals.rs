//! Processes that pose as the app: another container's process of the same name, the sidecar
//! itself named by a pid file (its pid or a thread of it), pid files with more than a pid; and
//! the hint when the sidecar may not signal the app.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::process::{demo_app_as, doctor, named_exe, os, run_dir, running, wait_up};
use crate::support::{
    App, Daemon, bin, credential, eventually, let_content_age, now_ns, open_dir, volume,
};

fn reloads(state: &Path) -> u64 {
    App::state_of(state).map_or(0, |s| s.reloads)
}

#[test]
fn two_unrelated_processes_of_the_app_name_are_ambiguous_unless_the_app_uid_is_declared() {
    let dir = open_dir();
    let (w, vol) = volume(dir.path());
    let token = vol.join("token");
    let run = run_dir(dir.path());
    let (name, exe) = named_exe(dir.path());
    let_content_age();
    // The impostor (another container's process, uid 2001) is the older one and handles SIGHUP.
    let other_state = run.join("other.state");
    let other = demo_app_as(&exe, &token, &other_state, Some((2001, 2001)));
    wait_up(&other_state, other.pid());
    let app_state = run.join("app.state");
    let app = demo_app_as(&exe, &token, &app_state, Some((2000, 2000)));
    wait_up(&app_state, app.pid());

    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &name,
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    let status = eventually(
        "the ambiguity to be reported",
        || d.status(),
        |s| {
            s["targets"][0]["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ambiguous target"))
        },
    );
    let target = &status["targets"][0];
    let msg = target["last_error"]["message"].as_str().unwrap();
    for pid in [other.pid(), app.pid()] {
        assert!(
            msg.contains(&pid.to_string()),
            "pid {pid} not listed: {msg}"
        );
    }
    let tname = target["name"].as_str().unwrap().to_string();
    assert_eq!(
        d.metric("signal_target_ambiguous", &[("target", &tname)]),
        Some(1.0)
    );
    assert_eq!(d.metric("stale", &[("target", &tname)]), Some(1.0));
    let failures = || {
        d.metric(
            "reloads_total",
            &[("target", &tname), ("result", "failure")],
        )
        .unwrap_or(0.0)
    };
    let first = eventually("a failed attempt counted", failures, |v| *v > 0.0);
    let listen = d.addr.to_string();
    let (code, text, json) = doctor(&os(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &name,
        "--listen",
        &listen,
    ]));
    assert_eq!(code, 1, "{text}");
    assert!(
        json["problems"].to_string().contains("ambiguous target"),
        "{json}"
    );
    assert!(text.contains("ambiguous target"), "{text}");
    // An ambiguous target is retried, never settled: the barrier is a later failed attempt (a
    // signal sent by the first would have been handled long before).
    eventually("a retry, failed too", failures, |v| *v > first);
    assert_eq!(reloads(&other_state), 0, "the impostor was signalled");
    assert_eq!(
        reloads(&app_state),
        0,
        "nothing is sent to an ambiguous target"
    );
    drop(d);

    // Declared: only the app's uid is a candidate.
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &name,
        "--app-uid",
        "2000",
        "--app-gid",
        "2000",
        "--reload-on-start",
        "never",
        "--min-reload-interval",
        "0",
        // A scan after `t` below is certain: a resync finds the same content.
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();
    w.write(&[("token", credential("3"))]).unwrap();
    let st = eventually(
        "the app's reload",
        || App::state_of(&app_state),
        |s| s.as_ref().is_some_and(|s| s.reloads >= 1),
    )
    .unwrap();
    assert_eq!((st.reloads, st.version.as_str()), (1, "3"));
    let t = now_ns();
    let status = d.passed(t);
    assert_eq!(reloads(&app_state), 1, "exactly one SIGHUP to the app");
    assert_eq!(
        reloads(&other_state),
        0,
        "the other uid's process is never signalled"
    );
    assert_eq!(status["targets"][0]["stale"], false, "{status}");
    assert_eq!(
        d.metric("signal_target_ambiguous", &[]),
        Some(0.0),
        "{}",
        d.metrics()
    );
}

#[test]
fn eperm_hint_names_the_declared_run_as_user() {
    let dir = open_dir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let app = App::start_as(dir.path(), &vol.join("token"), &[], Some((2000, 2000, &[])));
    app.wait_up();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "3000",
        "--regid",
        "3000",
        "--clear-groups",
        bin(),
    ])
    .args([
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--app-uid",
        "2000",
        "--app-gid",
        "2000",
        "--min-reload-interval",
        "0",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    let msg = d.error_containing("not permitted");
    assert!(msg.contains("runAsUser (2000)"), "{msg}");
    assert!(msg.contains("uid 3000"), "{msg}");
    assert_eq!(app.reloads(), 0);
}

#[test]
fn pid_file_naming_the_sidecar_itself_or_a_thread_of_it_is_never_signalled() {
    let dir = open_dir();
    let (w, vol) = volume(dir.path());
    let pid_file = dir.path().join("app.pid");
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--signal",
        "TERM",
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "1s",
    ]);
    d.wait_ready();
    let pid = d.pid();
    let threads: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|t| *t != pid)
        .collect();
    assert!(!threads.is_empty(), "the daemon has threads");
    for (i, id) in [pid, threads[0]].into_iter().enumerate() {
        std::fs::write(&pid_file, format!("{id}\n")).unwrap();
        w.write(&[("token", credential(&format!("{}", i + 2)))])
            .unwrap();
        let status = eventually(
            &format!("the refusal to signal {id}"),
            || d.status(),
            |s| {
                s["targets"][0]["last_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("names pid {id}")))
            },
        );
        let msg = status["targets"][0]["last_error"]["message"]
            .as_str()
            .unwrap();
        assert!(msg.contains("the sidecar itself"), "{msg}");
        // Refusals are retried, never settled: the barrier is a later refusal.
        let failed = status["targets"][0]["failed_attempts"].as_u64().unwrap();
        eventually(
            "a retry, refused too",
            || {
                d.status()["targets"][0]["failed_attempts"]
                    .as_u64()
                    .unwrap()
            },
            |n| *n > failed,
        );
        assert!(
            running(pid),
            "the daemon signalled itself; log:\n{}",
            d.log()
        );
        assert_eq!(crate::support::http_get(d.addr, "/healthz").unwrap().0, 200);
    }
    assert!(running(pid));
}

#[test]
fn pid_file_with_more_lines_after_the_pid_is_used() {
    let dir = open_dir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    // Like PostgreSQL's postmaster.pid.
    let pid_file = dir.path().join("postmaster.pid");
    std::fs::write(
        &pid_file,
        format!(
            "{}\n/var/lib/postgresql/data\n1700000000\n5432\n/var/run/postgresql\n*\n  5432001  0\nready\n",
            app.pid()
        ),
    )
    .unwrap();
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    let st = eventually(
        "the app to be signalled",
        || app.state(),
        |s| s.as_ref().is_some_and(|s| s.reloads >= 1),
    )
    .unwrap();
    assert_eq!((st.reloads, st.version.as_str()), (1, "2"));
    let detail = d.status()["targets"][0]["last_attempt"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains(&format!("pid {}", app.pid())), "{detail}");
}
