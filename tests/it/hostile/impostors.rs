//! Processes that are not the app but look like it. A pid file outlives its process and pids
//! are reused: the app exits, its pid file stays, and its pid is given to another process. A
//! pid file is trusted only while the process it names can be its writer (started before the
//! file was last written) and matches what is declared (`--app-uid`, and `--process-name`
//! beside `--pid-file`); otherwise it is reported stale and nothing is sent, until the app
//! writes it again. A process kept because it was the only one of the app's name is dropped
//! as soon as another of that name appears.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::process::{demo_app_as, named_exe, run_dir, wait_up};
use crate::support::{
    App, AtomicWriter, Daemon, credential, eventually, let_content_age, open_dir,
};

/// Dates the pid file's last write `secs` seconds back: the app that wrote it is long gone.
fn written_ago(pid_file: &Path, secs: u32) {
    let ok = Command::new("touch")
        .args(["-m", "-d", &format!("{secs} seconds ago")])
        .arg(pid_file)
        .status()
        .unwrap()
        .success();
    assert!(ok, "touch");
}

fn last_error(d: &Daemon) -> Value {
    d.status()["targets"][0]["last_error"].clone()
}

/// Waits for the stale report, then for a second one: the daemon has looked at the file again
/// since and still sent nothing.
fn wait_refused_twice(d: &Daemon, what: &str) -> String {
    let first = eventually(
        &format!("the pid file reported stale ({what})"),
        || last_error(d),
        |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("is stale"))
        },
    );
    let again = eventually(
        "the pid file refused again",
        || last_error(d),
        |e| {
            e["at"] != first["at"]
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("is stale"))
        },
    );
    again["message"].as_str().unwrap().to_string()
}

fn daemon(vol: &Path, pid_file: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--watch",
        vol.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "1s",
    ];
    args.extend(extra);
    let d = Daemon::start(&args);
    d.wait_ready();
    d
}

#[test]
fn a_pid_file_older_than_the_process_it_names_is_stale_and_nothing_is_sent() {
    for signal in ["HUP", "TERM"] {
        let dir = open_dir();
        let vol = dir.path().join("vol");
        let w = AtomicWriter::new(&vol);
        w.write(&[("token", credential("1"))]).unwrap();
        // The victim: a process that took the pid of an app that exited; it handles SIGHUP and
        // counts, and SIGTERM would end it.
        let mut victim = App::start(dir.path(), &vol.join("token"), &[]);
        victim.wait_up();
        let pid_file = dir.path().join("app.pid");
        std::fs::write(&pid_file, format!("{}\n", victim.pid())).unwrap();
        written_ago(&pid_file, 30);
        let d = daemon(&vol, &pid_file, &["--signal", signal]);
        w.write(&[("token", credential("2"))]).unwrap();
        let msg = wait_refused_twice(&d, signal);
        assert!(msg.contains(&format!("pid {}", victim.pid())), "{msg}");
        assert!(msg.contains("after the file was last written"), "{msg}");
        assert_eq!(victim.reloads(), 0, "SIG{signal} reached the victim");
        assert!(victim.alive(), "SIG{signal} ended the victim");
        assert_eq!(d.status()["targets"][0]["stale"], true);

        // The app starts again (reading version 2) and writes its pid file: it is followed,
        // and holds what is on disk.
        let app = App::start(dir.path(), &vol.join("token"), &[]);
        app.wait_up();
        std::fs::write(&pid_file, format!("{}\n", app.pid())).unwrap();
        let status = eventually(
            "the target to hold version 2 through the app",
            || d.status()["targets"][0].clone(),
            |t| t["stale"] == false,
        );
        let detail = status["last_attempt"]["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("pid {}", app.pid())), "{detail}");
        assert_eq!(victim.reloads(), 0);
        assert!(victim.alive());
    }
}

#[test]
fn a_pid_file_naming_a_process_of_another_name_is_stale_when_the_name_is_declared() {
    let dir = open_dir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let mut victim = App::start(dir.path(), &vol.join("token"), &[]);
    victim.wait_up();
    let app_name = format!("{}-not", victim.name);
    // Written just now, after the victim started: only the name tells.
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", victim.pid())).unwrap();
    let d = daemon(&vol, &pid_file, &["--process-name", &app_name]);
    w.write(&[("token", credential("2"))]).unwrap();
    let msg = wait_refused_twice(&d, "another name");
    assert!(msg.contains(&format!("--process-name {app_name}")), "{msg}");
    assert_eq!(victim.reloads(), 0);
    assert!(victim.alive());
}

#[test]
fn a_fresh_pid_file_of_the_declared_name_is_followed() {
    let dir = open_dir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", app.pid())).unwrap();
    let d = daemon(&vol, &pid_file, &["--process-name", &app.name]);
    w.write(&[("token", credential("2"))]).unwrap();
    eventually("the app's reload", || app.reloads(), |n| *n >= 1);
    let status = d.status();
    assert_eq!(
        status["config"]["groups"][0]["targets"][0]["action"]["selector"]["process_name"],
        app.name.as_str()
    );
}

/// A process named like the app, started while the app restarts, is the only match and is
/// followed; once the app is back both match, and the target is ambiguous (nothing is sent)
/// instead of the impostor being kept for good.
#[test]
fn a_process_kept_by_name_is_dropped_when_a_second_one_matches() {
    let dir = open_dir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let token = vol.join("token");
    let run = run_dir(dir.path());
    let (name, exe) = named_exe(dir.path());
    let state = |n: &str| run.join(format!("{n}.state"));
    let reloads = |n: &str| App::state_of(&state(n)).map_or(0, |s| s.reloads);
    let_content_age();
    let impostor = demo_app_as(&exe, &token, &state("impostor"), None);
    wait_up(&state("impostor"), impostor.pid());
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &name,
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "1s",
    ]);
    d.wait_ready();
    // The only match: it gets the signal.
    w.write(&[("token", credential("2"))]).unwrap();
    eventually("the impostor's reload", || reloads("impostor"), |n| *n >= 1);
    // The app comes back: two unrelated processes of the name.
    let app = demo_app_as(&exe, &token, &state("app"), None);
    wait_up(&state("app"), app.pid());
    let before = reloads("impostor");
    w.write(&[("token", credential("3"))]).unwrap();
    let msg = d.error_containing("ambiguous target");
    assert_eq!(reloads("impostor"), before, "the impostor was kept: {msg}");
    assert_eq!(d.status()["targets"][0]["stale"], true);
}
