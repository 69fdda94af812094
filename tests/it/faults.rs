//! Faults of the watching itself: kubelet's commit point must not wait for the quiet period; a
//! change no event reports is caught by the resync; a torn in-place write is not reloaded half-way;
//! unreadable files, endpoints that never accept. (The faults that need machine-wide settings, an
//! inotify queue overflow and a volume unmounted and mounted again, are in `tests/system`.)

use std::time::Duration;

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, credential, eventually, now_ns, open_dir, tempdir};

#[test]
fn kubelet_swap_does_not_wait_for_the_quiet_period() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("password"), "p1").unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let witness = Sink::start();
    // Group `slow`: a quiet period far longer than the test's deadline, so only the commit point
    // can be seen in time. Group `witness` watches the plain directory too, with a quiet period of
    // 1 s. The daemon's one event reader hands both groups the same events at the same moment, so
    // once the witness has acted on a scan after the plain write, `slow` has had that write's
    // events for over a second: that is the barrier below. (`passed` cannot be used: a scan of
    // `slow` after the write is what must not happen.)
    let config = serde_json::json!({
        "groups": [
            {
                "name": "slow",
                "watch": [vol, plain],
                "debounce": "1h",
                "debounce_max": "1h",
                "targets": [{ "type": "http", "url": sink.url("/-/reload") }],
            },
            {
                "name": "witness",
                "watch": [plain],
                "debounce": "1s",
                "debounce_max": "2s",
                "targets": [{ "type": "http", "url": witness.url("/-/reload") }],
            },
        ]
    });
    let config_file = dir.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let d = Daemon::start(&["--config", config_file.to_str().unwrap()]);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually(
        "the swap to be acted on",
        || sink.calls(),
        |c| !c.is_empty(),
    );
    assert_eq!(calls[0].version.as_deref(), Some("2"));
    // A plain write has no commit point: it waits for the quiet period.
    std::fs::write(plain.join("password"), "p2").unwrap();
    let t = now_ns();
    let target = |s: &serde_json::Value, group: &str| {
        s["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["group"] == group)
            .unwrap()
            .clone()
    };
    let status = eventually(
        "the witness group to act on a scan after the plain write",
        || d.status(),
        |s| {
            target(s, "witness")["settled_scan_monotonic_ns"]
                .as_u64()
                .is_some_and(|n| n > t)
        },
    );
    assert_eq!(witness.count(), 1, "the witness saw the plain write");
    let slow = status["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "slow")
        .unwrap();
    let last = slow["last_scan"]["started_monotonic_ns"].as_u64().unwrap();
    assert!(
        last < t,
        "the slow group scanned after the plain write: {slow}"
    );
    assert_eq!(sink.count(), 1, "the plain write must wait for --debounce");
}

#[test]
fn change_the_watcher_cannot_see_is_caught_by_the_resync() {
    let dir = tempdir();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("a")).unwrap();
    std::fs::create_dir_all(outside.join("b")).unwrap();
    std::fs::write(outside.join("a/token"), credential("1")).unwrap();
    std::fs::write(outside.join("b/token"), credential("2")).unwrap();
    std::os::unix::fs::symlink("a", outside.join("current")).unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::os::unix::fs::symlink(outside.join("current/token"), conf.join("token")).unwrap();
    let sink = Sink::start_with_probe(Some(conf.join("token")));
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--reload-url",
        &url,
        "--resync-interval",
        "1s",
        "--follow-external-symlinks",
    ]);
    d.wait_ready();
    // Retarget the symlink outside the watched directory: no event reaches the daemon.
    std::os::unix::fs::symlink("b", outside.join("current.new")).unwrap();
    std::fs::rename(outside.join("current.new"), outside.join("current")).unwrap();
    let calls = eventually(
        "the resync to find the change",
        || sink.calls(),
        |c| !c.is_empty(),
    );
    assert_eq!(calls[0].version.as_deref(), Some("2"));
}

#[test]
fn torn_in_place_write_is_not_reloaded_half_way() {
    use std::io::Write;
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let token = conf.join("token");
    std::fs::write(&token, credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(token.clone()));
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
        // Resyncs during the writer's pause must wait for it too.
        "--resync-interval",
        "150ms",
    ]);
    d.wait_ready();
    // Truncate, write half, pause well past the quiet period, write the rest, close.
    let full = credential("2");
    let (head, tail) = full.split_at(7);
    let mut f = std::fs::File::create(&token).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // The barrier is the scan after the close: `t` is taken before the rest is written, so that
    // scan starts after it (a file written and not closed holds every scan back, resyncs
    // included, up to --debounce-max, 2 s, past the close).
    let t = now_ns();
    f.write_all(tail.as_bytes()).unwrap();
    drop(f);
    let calls = eventually("the completed write", || sink.calls(), |c| !c.is_empty());
    d.passed(t);
    assert_eq!(sink.count(), 1, "{:#?}", sink.calls());
    assert_eq!(calls[0].version.as_deref(), Some("2"), "reloaded half-way");
}

#[test]
fn file_the_sidecar_cannot_read_is_reported_and_recovered() {
    use std::os::unix::fs::PermissionsExt;
    let dir = open_dir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let token = conf.join("token");
    std::fs::write(&token, credential("1")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sink = Sink::start_with_probe(Some(token.clone()));
    let url = sink.url("/-/reload");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        crate::support::bin(),
    ])
    .args([
        "--watch",
        conf.to_str().unwrap(),
        "--reload-url",
        &url,
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    let status = d.status();
    let problems = status["watches"][0]["problems"].to_string();
    assert!(
        problems.contains("cannot read") && problems.contains("the sidecar runs as uid 65534"),
        "{problems}"
    );
    assert!(d.metric("watch_errors_total", &[("kind", "read")]).unwrap() >= 1.0);
    let (code, _) = crate::support::http_get(d.addr, "/healthz").unwrap();
    assert_eq!(code, 200, "the daemon keeps running");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let calls = eventually(
        "the content once readable",
        || sink.calls(),
        |c| !c.is_empty(),
    );
    assert_eq!(calls[0].version.as_deref(), Some("1"));
}

#[test]
fn endpoint_that_never_accepts_fails_attempts_and_blocks_nothing() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket,
    };
    // A listener whose accept queue is full and never drained: connections hang in SYN.
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let addr: SockaddrIn =
        nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap();
    let filler: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &format!("127.0.0.1:{}", addr.port()).parse().unwrap(),
                Duration::from_millis(200),
            )
            .ok()
        })
        .collect();
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let url = format!("http://127.0.0.1:{}/-/reload", addr.port());
    let mut d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--reload-timeout",
        "300ms",
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "failed attempts",
        || d.metric("reloads_total", &[("result", "failure")]),
        |v| v.is_some_and(|v| v >= 2.0),
    );
    let (code, _) = crate::support::http_get(d.addr, "/healthz").unwrap();
    assert_eq!(code, 200);
    assert_eq!(d.metric("stale", &[]), Some(1.0));
    assert!(d.terminate().success());
    drop(filler);
}
