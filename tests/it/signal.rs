//! Signal targets: real processes receiving real SIGHUPs. Lookup at every reload (restarts), the
//! master of a master/workers app, an app whose handler comes late (never killed), an app that
//! ignores the signal, a sidecar without permission, start-up policy.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    App, Daemon, bin, credential, eventually, let_content_age, now_ns, tempdir, volume,
};

fn daemon(vol: &Path, selector: &[&str], extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--watch",
        vol.to_str().unwrap(),
        "--min-reload-interval",
        "0",
    ];
    args.extend(selector);
    args.extend(extra);
    let d = Daemon::start(&args);
    d.wait_ready();
    d
}

fn expect_reloads(app: &App, n: u64, version: &str) {
    let st = eventually(
        &format!("{} reloads of {}", n, app.name),
        || app.state(),
        |s| s.as_ref().is_some_and(|s| s.reloads >= n),
    )
    .unwrap();
    assert_eq!(st.reloads, n, "exactly {n} reloads expected");
    assert_eq!(st.version, version);
}

#[test]
fn sighup_once_per_change_by_process_name() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    // The daemon's first scan starts after `t`. The resyncs make a scan after the identical
    // write below certain (a swap is scanned at once, maybe before the test reads the clock);
    // they find the same content, and no attempt fails (nothing to retry).
    let t = now_ns();
    let d = daemon(
        &vol,
        &["--process-name", &app.name],
        &["--resync-interval", "1s"],
    );
    d.passed(t);
    assert_eq!(d.signals_sent(), 0.0, "no signal at start");
    assert_eq!(
        app.reloads(),
        0,
        "the app started after the content: no reload at start"
    );
    for i in 2..=6 {
        w.write(&[("token", credential(&i.to_string()))]).unwrap();
        expect_reloads(&app, i - 1, &i.to_string());
    }
    w.write(&[("token", credential("6"))]).unwrap(); // identical content
    let t = now_ns();
    d.passed(t);
    assert_eq!(d.signals_sent(), 5.0, "no signal for identical content");
    assert_eq!(app.reloads(), 5);
    let status = d.status();
    let attempt = status["targets"][0]["last_attempt"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        attempt.contains(&format!("SIGHUP sent to pid {}", app.pid())),
        "{attempt}"
    );
}

#[test]
fn restarted_process_is_looked_up_again() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let mut app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    let _d = daemon(&vol, &["--process-name", &app.name], &[]);
    w.write(&[("token", credential("2"))]).unwrap();
    expect_reloads(&app, 1, "2");
    let old_pid = app.pid();
    app.restart();
    let st = app.wait_up();
    assert_ne!(st.pid, old_pid);
    let_content_age();
    w.write(&[("token", credential("3"))]).unwrap();
    expect_reloads(&app, 1, "3");
    assert_eq!(
        app.state().unwrap().pid,
        app.pid(),
        "the new process got the signal"
    );
}

#[test]
fn only_the_master_of_master_and_workers_is_signalled() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let app = App::start(dir.path(), &vol.join("token"), &["--workers", "2"]);
    app.wait_up();
    let worker = |i: usize| {
        App::state_of(Path::new(&format!(
            "{}.worker{i}",
            app.state_file.display()
        )))
    };
    eventually(
        "both workers up",
        || (worker(0), worker(1)),
        |(a, b)| a.is_some() && b.is_some(),
    );
    // Resyncs: the swap may be scanned before `t`; they find the same content.
    let first = daemon(
        &vol,
        &["--process-name", &app.name],
        &["--resync-interval", "1s"],
    );
    w.write(&[("token", credential("2"))]).unwrap();
    let t = now_ns();
    expect_reloads(&app, 1, "2");
    let status = first.passed(t);
    let detail = status["targets"][0]["last_attempt"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..2 {
        let pid = worker(i).unwrap().pid;
        assert!(
            !detail.contains(&format!("pid {pid}")),
            "worker {i} signalled: {detail}"
        );
    }
    assert_eq!(first.signals_sent(), 1.0, "one signal: {detail}");
    assert_eq!(
        worker(0).unwrap().reloads,
        0,
        "worker 0 must not be signalled"
    );
    assert_eq!(
        worker(1).unwrap().reloads,
        0,
        "worker 1 must not be signalled"
    );

    // --signal-all signals every match.
    let d = daemon(
        &vol,
        &[
            "--process-name",
            &app.name,
            "--signal-all",
            "--reload-on-start",
            "never",
        ],
        &[],
    );
    w.write(&[("token", credential("3"))]).unwrap();
    eventually(
        "every process signalled",
        || (worker(0), worker(1)),
        |(a, b)| {
            a.as_ref().is_some_and(|s| s.version == "3")
                && b.as_ref().is_some_and(|s| s.version == "3")
        },
    );
    drop(d);
}

#[test]
fn app_without_handler_yet_is_not_killed_and_is_reloaded_once_it_has_one() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    // The app starts, then the content changes before it installs its SIGHUP handler.
    let mut app = App::start(
        dir.path(),
        &vol.join("token"),
        &["--handler-delay", "1500ms"],
    );
    std::thread::sleep(Duration::from_millis(50));
    w.write(&[("token", credential("2"))]).unwrap();
    let d = daemon(&vol, &["--process-name", &app.name], &[]);
    eventually(
        "the daemon to wait for the handler",
        || d.log(),
        |l| l.contains("has no SIGHUP handler"),
    );
    assert!(app.alive(), "the app was killed");
    assert_eq!(d.status()["targets"][0]["state"], "waiting");
    expect_reloads(&app, 1, "2");
    assert!(app.alive(), "the app must be alive");
}

#[test]
fn app_ignoring_the_signal_is_reported_as_a_configuration_error() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let mut app = App::start(dir.path(), &vol.join("token"), &["--ignore-hup"]);
    app.wait_up();
    let d = daemon(&vol, &["--process-name", &app.name], &[]);
    w.write(&[("token", credential("2"))]).unwrap();
    let status = eventually(
        "the error to be reported",
        || d.status(),
        |s| !s["targets"][0]["last_error"].is_null(),
    );
    let msg = status["targets"][0]["last_error"]["message"]
        .as_str()
        .unwrap();
    assert!(msg.contains("ignores SIGHUP"), "{msg}");
    assert_eq!(status["targets"][0]["stale"], true);
    assert!(app.alive());
}

#[test]
fn sidecar_without_permission_says_what_it_needs() {
    let dir = tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let app = App::start(dir.path(), &vol.join("token"), &[]); // runs as root
    app.wait_up();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        bin(),
    ])
    .args([
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    // The app is younger than a second at first: the signal waits for that before it is tried.
    let status = eventually(
        "the permission error",
        || d.status(),
        |s| {
            s["targets"][0]["last_error"]["message"]
                .as_str()
                .is_some_and(|m| !m.contains("s old"))
        },
    );
    let msg = status["targets"][0]["last_error"]["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains("not permitted") && msg.contains("runAsUser") && msg.contains("CAP_KILL"),
        "{msg}"
    );
    assert!(msg.contains("uid 65534"), "{msg}");
    assert_eq!(app.reloads(), 0);
}

#[test]
fn start_up_policy_auto_never_always() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    // An app older than the content may hold the previous version: auto reloads it once.
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    let_content_age();
    w.write(&[("token", credential("2"))]).unwrap();
    let d = daemon(&vol, &["--process-name", &app.name], &[]);
    expect_reloads(&app, 1, "2");
    drop(d);
    // Restarting the sidecar again: still older than the content, so auto reloads once more,
    // while never does not. Its first scan starts after `t`.
    let t = now_ns();
    let d = daemon(
        &vol,
        &["--process-name", &app.name, "--reload-on-start", "never"],
        &[],
    );
    d.passed(t);
    assert_eq!(d.signals_sent(), 0.0, "never: no signal at start");
    assert_eq!(app.reloads(), 1, "never: no reload at start");
    drop(d);
    // A process newer than the content: auto sends nothing, always does.
    let dir2 = tempdir();
    let (_w2, vol2) = volume(dir2.path());
    let_content_age();
    let fresh = App::start(dir2.path(), &vol2.join("token"), &[]);
    fresh.wait_up();
    let t = now_ns();
    let d = daemon(&vol2, &["--process-name", &fresh.name], &[]);
    d.passed(t);
    assert_eq!(d.signals_sent(), 0.0, "auto: no signal to a newer process");
    assert_eq!(
        fresh.reloads(),
        0,
        "auto: a sidecar restart alone causes no reload"
    );
    drop(d);
    let _d = daemon(
        &vol2,
        &["--process-name", &fresh.name, "--reload-on-start", "always"],
        &[],
    );
    expect_reloads(&fresh, 1, "1");
}

#[test]
fn pid_file_and_command_line_selectors() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let pid_file = dir.path().join("app.pid");
    let app = App::start(
        dir.path(),
        &vol.join("token"),
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    app.wait_up();
    let d1 = daemon(&vol, &["--pid-file", pid_file.to_str().unwrap()], &[]);
    w.write(&[("token", credential("2"))]).unwrap();
    expect_reloads(&app, 1, "2");
    drop(d1);
    let pattern = format!("{}.*demo-app", app.name);
    // The app is older than the content: a new sidecar would reload it once at start (auto).
    let _d2 = daemon(
        &vol,
        &[
            "--process-cmdline",
            &pattern,
            "--signal",
            "SIGHUP",
            "--reload-on-start",
            "never",
        ],
        &[],
    );
    w.write(&[("token", credential("3"))]).unwrap();
    expect_reloads(&app, 2, "3");
}

/// Writes `pid` into `file` as most apps do: a temporary file renamed over it.
fn write_pid_renamed(file: &Path, pid: i32) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[test]
fn a_pid_file_that_names_another_live_process_is_followed() {
    // Two live apps; the pid file names one, then the other: renamed over, then rewritten in
    // place. Its directory is watched (no `stat` at each reload); then the same through a
    // symbolic link to that directory, and through a pid file that is a symbolic link into
    // another directory (where the writes go), which are looked at at every reload instead.
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let_content_age();
    let a = App::start(dir.path(), &vol.join("token"), &[]);
    let b = App::start(dir.path(), &vol.join("token"), &[]);
    a.wait_up();
    b.wait_up();
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    std::os::unix::fs::symlink(&pids, dir.path().join("pids-link")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("app.pid"), pids.join("linked.pid")).unwrap();
    for (round, (named, pid_file)) in [
        (pids.join("app.pid"), pids.join("app.pid")),
        (
            dir.path().join("pids-link").join("app.pid"),
            pids.join("app.pid"),
        ),
        (pids.join("linked.pid"), elsewhere.join("app.pid")),
    ]
    .iter()
    .enumerate()
    {
        let round = round as u64;
        let v = |n: u64| (3 * round + n).to_string();
        write_pid_renamed(pid_file, a.pid());
        let d = daemon(
            &vol,
            &["--pid-file", named.to_str().unwrap()],
            &["--reload-on-start", "never"],
        );
        w.write(&[("token", credential(&v(2)))]).unwrap();
        expect_reloads(&a, 2 * round + 1, &v(2));
        write_pid_renamed(pid_file, b.pid());
        w.write(&[("token", credential(&v(3)))]).unwrap();
        expect_reloads(&b, round + 1, &v(3));
        std::fs::write(pid_file, a.pid().to_string()).unwrap();
        w.write(&[("token", credential(&v(4)))]).unwrap();
        expect_reloads(&a, 2 * round + 2, &v(4));
        // Each version went to the one process the pid file named when it appeared (the
        // daemon counts a send after the app may already have handled it).
        eventually("three signals counted", || d.signals_sent(), |n| *n >= 3.0);
        assert_eq!(d.signals_sent(), 3.0);
        assert_eq!(b.reloads(), round + 1, "{}", d.log());
        drop(d);
    }
}

#[test]
fn missing_process_is_waited_for_and_reported() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let d = daemon(&vol, &["--process-name", "app-not-here"], &[]);
    w.write(&[("token", credential("2"))]).unwrap();
    let status = eventually(
        "waiting to be reported",
        || d.status(),
        |s| s["targets"][0]["state"] == "waiting",
    );
    let msg = status["targets"][0]["last_error"]["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains("no process matches --process-name app-not-here"),
        "{msg}"
    );
    assert_eq!(d.metric("stale", &[]), Some(1.0));
    assert_eq!(
        d.metric("reloads_total", &[("result", "failure")]),
        Some(0.0),
        "waiting is not a failed action"
    );
}

#[test]
fn term_named_to_restart_the_container_is_sent_without_a_handler() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    // The app never gets to install handlers within the test: SIGTERM's default ends it, which
    // is what --signal TERM is for (Kubernetes then restarts the container with the new content).
    let mut app = App::start(dir.path(), &vol.join("token"), &["--handler-delay", "1h"]);
    let _d = daemon(
        &vol,
        &[
            "--process-name",
            &app.name,
            "--signal",
            "TERM",
            "--reload-on-start",
            "never",
        ],
        &[],
    );
    w.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the app to be ended by SIGTERM",
        || app.alive(),
        |alive| !alive,
    );
}

/// How old `pid` was when `file` was last modified, from its start time in clock ticks since
/// boot (`/proc/<pid>/stat`) and the file's modification time.
fn age_at_mtime(pid: i32, file: &Path) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    // Field 22 of the line is the 20th after the name.
    let ticks: u64 = after_name.split(' ').nth(19).unwrap().parse().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    let age_now = Duration::from(boot).saturating_sub(Duration::from_millis(ticks * 1000 / hz));
    let since_write = std::fs::metadata(file)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default();
    age_now.saturating_sub(since_write)
}

#[test]
fn a_process_younger_than_a_second_is_signalled_once_it_is_a_second_old() {
    let dir = tempdir();
    let (w, vol) = volume(dir.path());
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    let d = daemon(&vol, &["--process-name", &app.name], &[]);
    let up = app.wait_up();
    // The content changes right after the app started: it must reload, but not while a runtime
    // that handles every signal from its first instruction could still be what handles it.
    w.write(&[("token", credential("2"))]).unwrap();
    expect_reloads(&app, 1, "2");
    let age = age_at_mtime(up.pid, &app.state_file);
    // One clock tick of the start time's resolution below the second is allowed.
    assert!(
        age >= Duration::from_millis(990),
        "the app was signalled {age:?} after its start"
    );
    let log = d.log();
    if age < Duration::from_millis(1500) {
        assert!(
            log.contains("s old (a runtime may handle every signal"),
            "{log}"
        );
    }
}
