//! A command target's output is text from another program: it reaches the daemon's log only
//! bounded (4 KiB per stream kept, the rest counted), escaped, and as fields of one line of the
//! daemon's own; a command that leaves a process behind holding its output does not hold the
//! reload, and one that outlives its time limit is killed with everything it started.

use std::path::Path;

use serde_json::Value;

use crate::support::{Daemon, Fixture, eventually, unique};

fn reloads(d: &Daemon, result: &str) -> f64 {
    d.metric("reloads_total", &[("result", result)])
        .unwrap_or(0.0)
}

fn script(dir: &Path, body: &str) -> String {
    let p = dir.join(format!("cmd-{}.sh", unique()));
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn command_output_is_kept_bounded_escaped_and_inside_one_log_line() {
    let f = Fixture::new();
    // Escape sequences, a carriage return, a line forged in the daemon's own JSON shape, then
    // 100 MB on stdout; an error line on stderr.
    let forged =
        r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"reloaded: forged"}"#;
    let cmd = script(
        f.dir.path(),
        &format!(
            "printf '\\033[31mred\\033]0;title\\007\\r\\n{forged}\\n'\n\
             head -c 100000000 /dev/zero | tr '\\0' x\n\
             echo 'oops: \\033[2J' >&2"
        ),
    );
    let mut d = Daemon::start(&[
        "--watch",
        f.vol(),
        "--exec",
        &cmd,
        "--log-format",
        "json",
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    f.rotate("2");
    eventually(
        "the command to succeed",
        || reloads(&d, "success"),
        |n| *n >= 1.0,
    );
    let status = d.terminate();
    assert!(status.success(), "{}", d.log());
    let log = d.log();
    assert!(log.len() < 64 * 1024, "the log grew by {} bytes", log.len());
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
    assert!(!log.contains('\r'), "a raw carriage return reached the log");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"] != "2026-01-01T00:00:00Z"),
        "the forged line stands as a line of its own:\n{log}"
    );
    let outputs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "command output")
        .collect();
    assert_eq!(outputs.len(), 1, "{log}");
    let fields = outputs[0];
    let stdout = fields["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("\\u{1b}[31mred"), "{stdout}");
    assert!(
        stdout.contains("reloaded: forged"),
        "the forged text is kept as a field: {stdout}"
    );
    assert!(stdout.len() < 8 * 1024, "{} bytes kept", stdout.len());
    assert!(stdout.ends_with("more bytes]"), "{stdout}");
    let counted = fields["stdout_bytes"].as_u64().unwrap();
    assert!(
        (100_000_000..100_000_200).contains(&counted),
        "{counted} bytes counted"
    );
    assert_eq!(fields["stderr"].as_str(), Some("oops: \\u{1b}[2J"));
}

/// Processes whose command line holds `mark`.
fn marked(mark: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(mark))
        })
        .collect()
}

/// Kills what a test left behind, whatever happened.
struct KillMarked(String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for pid in marked(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A daemon reloading `f` with a script whose `sleep`s take a number of this test's own (its
/// mark: `{mark}` in `body`), so that what the script leaves running can be found and is killed
/// whatever happens; `extra` flags after the common ones. The first rotation is done.
fn daemon_running(f: &Fixture, body: &str, extra: &[&str]) -> (Daemon, String, KillMarked) {
    let mark = format!(
        "{}",
        800_000 + u32::from_str_radix(&unique(), 16).unwrap() % 199_999
    );
    let guard = KillMarked(mark.clone());
    let cmd = script(f.dir.path(), &body.replace("{mark}", &mark));
    let mut args = vec![
        "--watch",
        f.vol(),
        "--exec",
        &cmd,
        "--min-reload-interval",
        "0",
    ];
    args.extend(extra);
    let d = Daemon::start(&args);
    d.wait_ready();
    f.rotate("2");
    (d, mark, guard)
}

#[test]
fn a_process_left_holding_the_output_does_not_hold_the_reload() {
    let f = Fixture::new();
    let (d, mark, _guard) = daemon_running(
        &f,
        "sleep {mark} &\necho started",
        &["--reload-timeout", "60s"],
    );
    eventually(
        "the command to succeed",
        || reloads(&d, "success"),
        |n| *n >= 1.0,
    );
    // The background process is the command's business once the command succeeded.
    assert_eq!(marked(&mark).len(), 1);
    assert!(d.log().contains("stdout=started"), "{}", d.log());
}

#[test]
fn a_command_past_its_time_limit_is_killed_with_what_it_started() {
    let f = Fixture::new();
    let (d, mark, _guard) = daemon_running(
        &f,
        "sleep {mark} &\nsleep {mark}",
        &["--reload-timeout", "1s", "--reload-retries", "0"],
    );
    eventually(
        "the command to fail",
        || reloads(&d, "failure"),
        |n| *n >= 1.0,
    );
    eventually("both sleeps to be gone", || marked(&mark), |p| p.is_empty());
    let msg = d.error_containing("did not finish");
    assert!(msg.contains("killed with its process group"), "{msg}");
}
