//! The process as a whole: SIGINT, JSON logs without secrets, the README's demo command, and
//! watch groups given inline (`--config-json`).

use std::process::{Command, Stdio};

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, bin, credential, eventually, now_ns, tempdir};

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
    // Rotations a second apart: the daemon never signals an app younger than a second (a WARN,
    // and a wait), and a newcomer's demo (every 3 s) shows none.
    let out = Command::new(bin())
        .args([
            "demo",
            "--interval",
            "1s",
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
    // A clean start: the app started after its content, so the daemon knows it holds it (no
    // reload, no warning), and then exactly one reload per rotation.
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    let warned: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warned.is_empty(), "warnings in the demo:\n{log}");
    let first = |text: &str| lines.iter().position(|l| l.contains(text));
    let (held, changed) = (first("no reload needed"), first("content changed"));
    assert!(
        held.is_some() && held < changed,
        "the daemon's first word on the app must be that it holds the content:\n{log}"
    );
    assert!(
        first("reloaded: ") > changed,
        "a reload before the first rotation:\n{log}"
    );
    assert_eq!(
        log.matches("reloaded: SIGHUP sent").count(),
        3,
        "one reload per rotation:\n{log}"
    );
    assert!(stdout.contains("3 rotations: median"), "{stdout}");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo ended: app stopped, "))
        .unwrap();
    let dir = dir.trim_end_matches(" removed");
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}

/// The kernel's custom slice of a thread (`sched_getattr`'s `sched_runtime` for SCHED_OTHER).
fn slice_ns(tid: i32) -> u64 {
    // SAFETY: sched_getattr fills at most `size` bytes of a zeroed, plain-data struct.
    unsafe {
        let mut attr: libc::sched_attr = std::mem::zeroed();
        let size = std::mem::size_of::<libc::sched_attr>() as u32;
        let rc = libc::syscall(libc::SYS_sched_getattr, tid, &mut attr, size, 0);
        assert_eq!(
            rc,
            0,
            "sched_getattr({tid}): {}",
            std::io::Error::last_os_error()
        );
        attr.sched_runtime
    }
}

/// Linux 6.12 brought custom slices for SCHED_OTHER: (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

#[test]
fn every_thread_of_the_daemon_asks_for_a_short_slice_where_the_kernel_has_them() {
    let dir = tempdir();
    let d = Daemon::start(&[
        "--watch",
        dir.path().to_str().unwrap(),
        "--exec",
        "true",
        "--reload-on-start",
        "never",
    ]);
    d.wait_ready();
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        tids.len() >= 3,
        "runtime, admin and signals threads: {tids:?}"
    );
    // Before 6.12 the kernel ignores the request: the daemon runs all the same.
    let expected = if kernel_version() >= (6, 12) {
        100_000
    } else {
        0
    };
    for tid in tids {
        assert_eq!(slice_ns(tid), expected, "thread {tid}");
    }
}

#[test]
fn config_json_runs_two_groups_given_inline() {
    let dir = tempdir();
    let (tls, creds) = (dir.path().join("tls"), dir.path().join("creds"));
    let (w_tls, w_creds) = (AtomicWriter::new(&tls), AtomicWriter::new(&creds));
    w_tls.write(&[("token", credential("1"))]).unwrap();
    w_creds.write(&[("token", credential("1"))]).unwrap();
    // Each endpoint loads its own group's token when called.
    let sink_tls = Sink::start_with_probe(Some(tls.join("token")));
    let sink_creds = Sink::start_with_probe(Some(creds.join("token")));
    let group = |name: &str, vol: &std::path::Path, sink: &Sink| {
        serde_json::json!({
            "name": name,
            "watch": [vol],
            "min_reload_interval": "0s",
            "targets": [{"type": "http", "name": format!("{name}-reload"), "url": sink.url("/-/reload")}]
        })
    };
    let inline = serde_json::json!({"groups": [
        group("tls", &tls, &sink_tls),
        group("creds", &creds, &sink_creds),
    ]})
    .to_string();
    // The resync scans the creds group again after the last change: the barrier of the final
    // count.
    let d = Daemon::start(&["--config-json", &inline, "--resync-interval", "1s"]);
    d.wait_ready();
    let st = d.status();
    let names = |key: &str| -> Vec<String> {
        st[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("watches"), ["tls", "creds"], "{st}");
    assert_eq!(names("targets"), ["tls-reload", "creds-reload"], "{st}");
    assert_eq!(st["targets"][0]["group"], "tls", "{st}");
    assert_eq!(st["targets"][1]["group"], "creds", "{st}");

    // Each group reloads its own target, and only its own.
    w_creds.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the creds endpoint to load version 2",
        || sink_creds.delivered(),
        |c| c.iter().any(|c| c.version.as_deref() == Some("2")),
    );
    let since = now_ns();
    w_tls.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the tls endpoint to load version 2",
        || sink_tls.delivered(),
        |c| c.iter().any(|c| c.version.as_deref() == Some("2")),
    );
    let st = d.passed(since);
    for t in st["targets"].as_array().unwrap() {
        assert!(
            t["stale"] == false && t["last_attempt"]["result"] == "success",
            "{st}"
        );
    }
    assert_eq!((sink_tls.count(), sink_creds.count()), (1, 1), "{st}");
}
