//! An inotify queue overflow (events lost) must still end with the final content reloaded once.

use crate::support::process::threads;
use crate::support::{Fixture, credential, daemon_for, eventually, now_ns};

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

/// Whether every thread of `pid` is stopped (state `T`).
fn stopped(pid: i32) -> bool {
    let threads = threads(pid);
    !threads.is_empty() && threads.iter().all(|(_, state)| *state == 'T')
}

#[test]
fn inotify_queue_overflow_rescans_and_reloads_the_final_content_once() {
    let f = Fixture::new();
    let (w, sink) = (&f.writer, &f.sink);
    let d = {
        // Only instances created while the limit is set get the small queue: this daemon's.
        let _limit = QueueLimit::set(16);
        // No short resync: it would find the final content even if the overflow were not acted
        // on.
        daemon_for(&[&f.vol], sink, &[])
    };
    let pid = nix::unistd::Pid::from_raw(d.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    eventually("the daemon to stop", || stopped(d.pid()), |s| *s);
    for i in 2..=60 {
        w.write(&[("token", credential(&i.to_string()))]).unwrap();
    }
    // The daemon is stopped from before the writes until after `t`: every scan that starts
    // after `t` reads the final content, and it has one to do (the overflow asks for a rescan).
    let t = now_ns();
    nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT).unwrap();
    eventually(
        "the overflow to be counted",
        || d.metric("watch_errors_total", &[("kind", "overflow")]),
        |v| v.is_some_and(|v| v >= 1.0),
    );
    let calls = eventually("the final content", || sink.calls(), |c| !c.is_empty());
    d.passed(t);
    let calls_now = sink.calls();
    assert_eq!(
        calls_now.len(),
        1,
        "one reload after the overflow: {calls_now:#?}"
    );
    assert_eq!(calls[0].version.as_deref(), Some("60"));
}
