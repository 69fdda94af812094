//! Faults of the watching itself: an inotify queue overflow (events lost) must still end with the
//! final content reloaded once; kubelet's commit point must not wait for the quiet period.

use std::time::Duration;

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, Fixture, credential, eventually, settle, tempdir};

/// Sets `fs.inotify.max_queued_events` (read by the kernel when an inotify instance is created)
/// and restores it on drop.
struct QueueLimit(String);

impl QueueLimit {
    const PATH: &'static str = "/proc/sys/fs/inotify/max_queued_events";

    fn set(n: u32) -> QueueLimit {
        let old = std::fs::read_to_string(Self::PATH).expect("read max_queued_events");
        std::fs::write(Self::PATH, n.to_string())
            .expect("set max_queued_events (the tests run as root)");
        QueueLimit(old.trim().to_string())
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

#[test]
fn inotify_queue_overflow_rescans_and_reloads_the_final_content_once() {
    let f = Fixture::new();
    let (vol, w, sink) = (&f.vol, &f.writer, &f.sink);
    let url = f.url();
    let d = {
        // Only instances created while the limit is set get the small queue: this daemon's.
        let _limit = QueueLimit::set(16);
        let d = Daemon::start(&[
            "--watch",
            vol.to_str().unwrap(),
            "--reload-url",
            &url,
            "--min-reload-interval",
            "0",
        ]);
        d.wait_ready();
        d
    };
    let pid = nix::unistd::Pid::from_raw(d.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    for i in 2..=60 {
        w.write(&[("token", credential(&i.to_string()))]).unwrap();
    }
    nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT).unwrap();
    eventually(
        "the overflow to be counted",
        || d.metric("watch_errors_total", &[("kind", "overflow")]),
        |v| v.is_some_and(|v| v >= 1.0),
    );
    let calls = eventually("the final content", || sink.calls(), |c| !c.is_empty());
    settle();
    let calls_now = sink.calls();
    assert_eq!(
        calls_now.len(),
        1,
        "one reload after the overflow: {calls_now:#?}"
    );
    assert_eq!(calls[0].version.as_deref(), Some("60"));
}

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
    let url = sink.url("/-/reload");
    // A quiet period far longer than the test's deadline: only the commit point can be seen in time.
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--watch",
        plain.to_str().unwrap(),
        "--reload-url",
        &url,
        "--debounce",
        "1h",
        "--debounce-max",
        "1h",
    ]);
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
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.count(), 1, "the plain write must wait for --debounce");
}

/// A tmpfs mounted on a test directory; unmounted on drop, also when the test fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs (the tests run as root)");
        Tmpfs(at.to_path_buf())
    }

    fn unmount(&self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "umount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn tmpfs_volume_unmounted_and_mounted_again_is_watched_again() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let first = Tmpfs::mount(&vol);
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let url = sink.url("/-/reload");
    // No resync within the test: only the mount table and inotify can tell.
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
        "--resync-interval",
        "1h",
    ]);
    d.wait_ready();
    first.unmount();
    let held = eventually(
        "the empty mount point to be held back",
        || d.status()["watches"][0]["held_back"].to_string(),
        |h| h.contains("holds no files"),
    );
    assert!(held.contains(&vol.display().to_string()), "{held}");
    std::mem::forget(first);
    let _second = Tmpfs::mount(&vol);
    w.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually(
        "the new volume's content",
        || sink.calls(),
        |c| !c.is_empty(),
    );
    assert_eq!(
        calls[0].version.as_deref(),
        Some("2"),
        "never reloaded into the empty directory"
    );
    w.write(&[("token", credential("3"))]).unwrap();
    let calls = eventually(
        "a change inside the new mount, seen by inotify",
        || sink.calls(),
        |c| c.len() >= 2,
    );
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].version.as_deref(), Some("3"));
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
    ]);
    d.wait_ready();
    // Truncate, write half, pause well past the quiet period, write the rest, close.
    let full = credential("2");
    let (head, tail) = full.split_at(7);
    let mut f = std::fs::File::create(&token).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    f.write_all(tail.as_bytes()).unwrap();
    drop(f);
    let calls = eventually("the completed write", || sink.calls(), |c| !c.is_empty());
    settle();
    assert_eq!(sink.count(), 1, "{:#?}", sink.calls());
    assert_eq!(calls[0].version.as_deref(), Some("2"), "reloaded half-way");
}

#[test]
fn file_the_sidecar_cannot_read_is_reported_and_recovered() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
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
