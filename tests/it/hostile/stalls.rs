//! Filesystems that stop answering: a FUSE mount whose reads never return (NFS, a CSI driver or a
//! hung disk do the same), served by the test's own `stallfs`. Such a call holds its own group
//! or target only: the other groups reload, the probes answer, the stall is reported with the
//! path it is stuck on (`/status`, `filesystem_stalled`, the log) while the group is held, and
//! everything resumes once the call returns. SIGTERM ends the daemon within the grace whatever
//! a thread is stuck in: every thread but the one the kernel holds is gone, and the process is
//! reaped as soon as the filesystem answers.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::native::StallFs;
use crate::support::process::threads;
use crate::support::sink::Sink;
use crate::support::{
    AtomicWriter, Daemon, credential, eventually, http_get, let_content_age, open_dir,
};

fn calls_to(sink: &Sink, path: &str) -> usize {
    sink.calls().iter().filter(|c| c.path == path).count()
}

fn group<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap()
}

fn target<'a>(status: &'a Value, group: &str) -> &'a Value {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["group"] == group)
        .unwrap()
}

fn write_config(dir: &Path, groups: Value) -> String {
    let path = dir.join("config.json");
    std::fs::write(&path, json!({ "groups": groups }).to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn sighup(d: &Daemon) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

/// The slowest of `n` `/healthz` probes, each of which must answer 200.
fn slowest_probe(d: &Daemon, n: usize) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let (code, _) = http_get(d.addr, "/healthz").unwrap();
            assert_eq!(code, 200);
            let took = t.elapsed();
            std::thread::sleep(Duration::from_millis(20));
            took
        })
        .max()
        .unwrap()
}

#[test]
fn a_stalled_read_holds_its_group_only_and_everything_resumes_when_it_returns() {
    let dir = open_dir();
    let backing = dir.path().join("backing");
    let slow_vol = AtomicWriter::new(backing.join("vol"));
    slow_vol.write(&[("token", credential("1"))]).unwrap();
    let other = AtomicWriter::new(dir.path().join("other"));
    other.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start();
    let fs = StallFs::mount(&backing, &dir.path().join("mnt"));
    let config = write_config(
        dir.path(),
        json!([
            {"name": "slow", "watch": [fs.path().join("vol")], "min_reload_interval": "0",
             "targets": [{"type": "http", "url": sink.url("/slow")}]},
            {"name": "other", "watch": [other.dir()], "min_reload_interval": "0",
             "targets": [{"type": "http", "url": sink.url("/other")}]},
        ]),
    );
    let d = Daemon::start(&["--config", &config, "--fs-stall-timeout", "1s"]);
    d.wait_ready();

    // A rotation the daemon reads through the stalled mount (FUSE carries no inotify events
    // of the backing directory: SIGHUP asks for the scan).
    fs.stall(&["read"], Some("token"));
    slow_vol.write(&[("token", credential("2"))]).unwrap();
    sighup(&d);
    let stuck = fs.wait_stalled("read", "token");
    let status = eventually(
        "the stall reported",
        || d.status(),
        |s| group(s, "slow")["stalled"].is_object(),
    );
    let stalled = &group(&status, "slow")["stalled"];
    assert!(
        stalled["path"].as_str().unwrap().ends_with("token"),
        "{stalled} (stuck on {stuck})"
    );
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("has not returned"),
        "{stalled}"
    );
    assert_eq!(
        d.metric("filesystem_stalled", &[("watch", "slow")]),
        Some(1.0)
    );
    assert_eq!(target(&status, "slow")["stale"], true);
    assert!(d.log().contains("has not returned for"), "{}", d.log());

    // Meanwhile the probes answer and the other group reloads.
    let slowest = slowest_probe(&d, 20);
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );
    other.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the other group's reload",
        || calls_to(&sink, "/other"),
        |n| *n >= 1,
    );
    assert_eq!(calls_to(&sink, "/slow"), 0);

    // The read returns: the group is read again and reloaded.
    fs.release();
    eventually(
        "the stalled group's reload",
        || calls_to(&sink, "/slow"),
        |n| *n >= 1,
    );
    let status = eventually(
        "the stall cleared",
        || d.status(),
        |s| group(s, "slow")["stalled"].is_null() && target(s, "slow")["stale"] == false,
    );
    assert_eq!(group(&status, "slow")["complete"], true);
    assert_eq!(
        d.metric("filesystem_stalled", &[("watch", "slow")]),
        Some(0.0)
    );
}

#[test]
fn sigterm_during_a_stalled_read_ends_every_thread_but_the_one_the_kernel_holds() {
    let dir = open_dir();
    let backing = dir.path().join("backing");
    let w = AtomicWriter::new(backing.join("vol"));
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start();
    let fs = StallFs::mount(&backing, &dir.path().join("mnt"));
    let vol = fs.path().join("vol");
    let url = sink.url("/-/reload");
    let mut d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--shutdown-grace",
        "1s",
    ]);
    d.wait_ready();
    fs.stall(&["read"], Some("token"));
    w.write(&[("token", credential("2"))]).unwrap();
    sighup(&d);
    fs.wait_stalled("read", "token");
    let pid = d.pid();
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Within the grace (plus the exit's margin): the leader has exited (a zombie until the
    // group is gone), and one thread remains, the one held in the kernel.
    let left = eventually(
        "every thread but the held one to end",
        || threads(pid),
        |t| {
            t.iter().all(|(tid, state)| {
                if *tid == pid {
                    *state == 'Z'
                } else {
                    *state == 'D'
                }
            }) && t.len() <= 2
        },
    );
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}: {left:?}");
    assert!(d.log().contains("shutting down"), "{}", d.log());
    // The call returns: the process is gone.
    fs.release();
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{}", d.log());
}

#[test]
fn a_stalled_pid_file_holds_its_target_only() {
    let dir = open_dir();
    let backing = dir.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let f = crate::support::Fixture::new();
    let_content_age();
    let app = crate::support::App::start(dir.path(), &f.vol.join("token"), &[]);
    app.wait_up();
    std::fs::write(backing.join("app.pid"), format!("{}\n", app.pid())).unwrap();
    let fs = StallFs::mount(&backing, &dir.path().join("mnt"));
    fs.stall(&["read"], Some("app.pid"));
    let config = write_config(
        dir.path(),
        json!([
            {"name": "g", "watch": [f.vol.clone()], "min_reload_interval": "0",
             "targets": [
                {"type": "signal", "pid_file": fs.path().join("app.pid")},
                {"type": "http", "url": f.url()},
             ]},
        ]),
    );
    let d = Daemon::start(&["--config", &config, "--fs-stall-timeout", "1s"]);
    d.wait_ready();
    f.rotate("2");
    eventually("the HTTP target's call", || f.sink.count(), |n| *n >= 1);
    let status = eventually(
        "the signal target's stalled lookup",
        || d.status(),
        |s| {
            s["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["kind"] == "signal" && t["stalled"].is_object())
        },
    );
    assert_eq!(app.reloads(), 0, "{status}");
    assert_eq!(http_get(d.addr, "/healthz").unwrap().0, 200);
    fs.release();
    eventually("the app's reload", || app.reloads(), |n| *n >= 1);
    eventually(
        "the stall cleared",
        || d.status(),
        |s| {
            s["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["stalled"].is_null())
        },
    );
}
