//! Faults of the watching itself: an inotify queue overflow (events lost) must still end with the
//! final content reloaded once; kubelet's commit point must not wait for the quiet period.

use std::time::Duration;

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, credential, eventually, settle, tempdir};

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
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let url = sink.url("/-/reload");
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
