//! The process as a whole: SIGINT, JSON logs without secrets, and the README's demo command.

use std::process::{Command, Stdio};

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, bin, credential, eventually, tempdir};

#[test]
fn sigint_exits_0_and_json_logs_carry_no_secret() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let mut d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--log-format",
        "json",
        "--log-level",
        "trace",
    ]);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the reload to be logged",
        || d.log(),
        |l| l.contains("reloaded"),
    );
    let status = d.stop_with(nix::sys::signal::SIGINT);
    assert_eq!(status.code(), Some(0));
    let log = d.log();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let reloaded = log.lines().find(|l| l.contains("reloaded")).unwrap();
    let v: serde_json::Value = serde_json::from_str(reloaded).unwrap();
    // The target's span carries its name and watch group.
    assert_eq!(v["span"]["watch"], "default", "{reloaded}");
    assert_eq!(v["span"]["target"], url.as_str(), "{reloaded}");
    assert_eq!(v["version"].as_str().unwrap().len(), 16);
    assert!(!log.contains("s3cr3t"), "secret content in the trace log");
}

#[test]
fn demo_runs_rotations_and_cleans_up() {
    let out = Command::new(bin())
        .args([
            "demo",
            "--interval",
            "300ms",
            "--rotations",
            "3",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in 1..=3 {
        let v = n + 1;
        assert!(
            stdout.contains(&format!(
                "rotation {n}: ..data swapped -> app holds version {v} after"
            )),
            "{stdout}"
        );
    }
    assert!(!stdout.contains("rotation 4"), "{stdout}");
    assert!(stdout.contains("3 rotations: median"), "{stdout}");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo ended: app stopped, "))
        .unwrap();
    let dir = dir.trim_end_matches(" removed");
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}
