//! FIFOs, sockets and devices where files are expected. Opening a FIFO for reading blocks until a
//! writer comes, reading `/dev/zero` never ends: none of it may hang the daemon. Each case: the
//! daemon either refuses the configuration at once (exit 2) or runs on, answering `/healthz`,
//! and ends within 7 s of SIGTERM (`--shutdown-grace` 5 s plus the 2 s margin).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::terminates_within;
use crate::support::process::{os, run_bin};
use crate::support::sink::Sink;
use crate::support::{Daemon, credential, eventually, http_get, now_ns, tempdir};

const SHUTDOWN_LIMIT: Duration = Duration::from_secs(7);

fn fifo(path: &Path) -> PathBuf {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    path.to_path_buf()
}

fn conf(dir: &Path) -> PathBuf {
    let conf = dir.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    conf
}

/// /healthz answers now, and SIGTERM ends the daemon in time.
fn alive_then_ends_in_time(d: &mut Daemon) {
    assert_eq!(http_get(d.addr, "/healthz").unwrap().0, 200, "{}", d.log());
    terminates_within(d, SHUTDOWN_LIMIT);
}

/// The first target's last error, once there is one.
fn target_error(d: &Daemon) -> String {
    let status = eventually(
        "the target's error",
        || d.status(),
        |s| !s["targets"][0]["last_error"].is_null(),
    );
    status["targets"][0]["last_error"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pid_file_that_is_a_fifo_hangs_nothing() {
    let dir = tempdir();
    let conf = conf(dir.path());
    let pid_file = fifo(&dir.path().join("app.pid"));
    let mut d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    std::fs::write(conf.join("token"), credential("2")).unwrap();
    let msg = target_error(&d);
    assert!(msg.contains("FIFO"), "{msg}");
    alive_then_ends_in_time(&mut d);
}

#[test]
fn token_and_header_files_that_are_fifos_fail_the_call_and_hang_nothing() {
    let dir = tempdir();
    let conf = conf(dir.path());
    let token = fifo(&dir.path().join("token.fifo"));
    let header = fifo(&dir.path().join("header.fifo"));
    let header_flag = format!("X-Api-Key: {}", header.display());
    for flag in [
        ["--reload-bearer-token-file", token.to_str().unwrap()],
        ["--reload-header-file", &header_flag],
    ] {
        let sink = Sink::start();
        let url = sink.url("/-/reload");
        let mut args = vec![
            "--watch",
            conf.to_str().unwrap(),
            "--reload-url",
            &url,
            "--min-reload-interval",
            "0",
        ];
        args.extend(flag);
        let mut d = Daemon::start(&args);
        d.wait_ready();
        std::fs::write(conf.join("token"), credential(&format!("2{}", flag[0]))).unwrap();
        let msg = target_error(&d);
        assert!(msg.contains(flag[0]) && msg.contains("FIFO"), "{msg}");
        assert_eq!(sink.count(), 0, "a call without its header went out");
        alive_then_ends_in_time(&mut d);
    }
}

#[test]
fn key_and_config_files_that_are_fifos_exit_2_at_once() {
    let dir = tempdir();
    let conf = conf(dir.path());
    let f = fifo(&dir.path().join("f.fifo"));
    let cases: [&[&str]; 2] = [
        &[
            "--watch",
            conf.to_str().unwrap(),
            "--exec",
            "true",
            "--fingerprint-key-file",
            f.to_str().unwrap(),
        ],
        &["--config", f.to_str().unwrap()],
    ];
    for args in cases {
        let e = run_bin(&os(args));
        assert_eq!(e.code, 2, "{args:?}: {e:?}");
        assert!(
            e.took < Duration::from_secs(5),
            "{args:?} took {:?}",
            e.took
        );
        assert!(
            e.stderr.contains(args[args.len() - 2]),
            "{args:?}: {}",
            e.stderr
        );
        assert!(e.stderr.contains("FIFO"), "{args:?}: {}", e.stderr);
    }
}

#[test]
fn state_file_that_is_a_fifo_is_warned_about_and_the_daemon_runs() {
    let dir = tempdir();
    let conf = conf(dir.path());
    let state = fifo(&dir.path().join("state.fifo"));
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let mut d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--reload-url",
        &url,
        "--state-file",
        state.to_str().unwrap(),
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    // The state file is read on the blocking pool: its warning may follow readiness.
    eventually(
        "a warning about the state file",
        || d.log(),
        |log| {
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("state file"))
        },
    );
    std::fs::write(conf.join("token"), credential("2")).unwrap();
    eventually("the reload", || sink.count(), |n| *n == 1);
    alive_then_ends_in_time(&mut d);
}

#[test]
fn watched_fifo_and_dev_zero_are_held_back_without_hanging() {
    let dir = tempdir();
    let conf = conf(dir.path());
    let watched_fifo = fifo(&dir.path().join("token.fifo"));
    for watched in [watched_fifo.as_path(), Path::new("/dev/zero")] {
        let sink = Sink::start();
        let url = sink.url("/-/reload");
        let mut d = Daemon::start(&[
            "--watch",
            watched.to_str().unwrap(),
            "--watch",
            conf.to_str().unwrap(),
            "--reload-url",
            &url,
            "--min-reload-interval",
            "0",
        ]);
        d.wait_ready();
        let status = d.status();
        let group = &status["watches"][0];
        assert_eq!(group["complete"], false, "{group}");
        let problems = group["problems"].to_string();
        assert!(
            problems.contains("wrong_kind") && problems.contains(watched.to_str().unwrap()),
            "{group}"
        );
        // Scans go on (each one looks at the special file again), none of them stuck on it,
        // and none reloads.
        for i in 0..3 {
            let t = now_ns();
            std::fs::write(conf.join("token"), credential(&format!("{i}{}", sink.addr))).unwrap();
            let status = d.passed(t);
            assert_eq!(status["targets"][0]["state"], "held", "{status}");
            assert_eq!(status["watches"][0]["complete"], false);
        }
        assert_eq!(sink.count(), 0);
        alive_then_ends_in_time(&mut d);
    }
}

#[test]
fn fifo_and_socket_inside_a_watched_directory_are_skipped() {
    let dir = tempdir();
    let conf = conf(dir.path());
    fifo(&conf.join("pipe"));
    let _sock = std::os::unix::net::UnixListener::bind(conf.join("sock")).unwrap();
    let sink = Sink::start_with_probe(Some(conf.join("token")));
    let url = sink.url("/-/reload");
    let mut d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    let status = d.status();
    let skipped = status["watches"][0]["skipped"].to_string();
    assert!(
        skipped.contains("/conf/pipe") && skipped.contains("/conf/sock"),
        "{skipped}"
    );
    assert_eq!(status["watches"][0]["complete"], true, "{status}");
    std::fs::write(conf.join("token"), credential("2")).unwrap();
    let calls = eventually("the reload", || sink.calls(), |c| !c.is_empty());
    assert_eq!(calls[0].version.as_deref(), Some("2"));
    alive_then_ends_in_time(&mut d);
}
