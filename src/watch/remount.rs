//! The mount table watched: a volume unmounted and mounted again (a CSI driver's remount, a
//! kubelet restart) gets its watches back at once, where inotify alone says nothing.

use std::path::PathBuf;

use super::inotify::WatchHub;
use super::mounts::parse_mountinfo;

/// Wakes every watch group whenever the mount table changes (the kernel marks
/// `/proc/self/mountinfo` with `POLLPRI`): a volume unmounted and mounted again gets its watches
/// back at once, where inotify alone says nothing. Returns when `stop` turns true, or at once when
/// the file cannot be watched (the resync then remains the safety net).
pub(crate) async fn watch_mount_table(
    path: PathBuf,
    hub: std::sync::Arc<WatchHub>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::io::{Read, Seek};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    let file = match crate::files::open_proc(&path) {
        Ok(f) => f,
        Err(e) => {
            return tracing::debug!(path = %crate::text::path(&path), error = %e, "mount table not watched");
        }
    };
    // SAFETY: the AsyncFd owns the File, whose descriptor stays open and the same until the
    // AsyncFd is dropped; the File is only read through it, never replaced.
    let mut fd = match unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) } {
        Ok(fd) => fd,
        Err(e) => {
            return tracing::debug!(path = %crate::text::path(&path), error = %e, "mount table not watched");
        }
    };
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            ready = fd.ready_mut(Interest::PRIORITY) => {
                let Ok(mut guard) = ready else { return };
                // Reading the table from the start acknowledges the change.
                let f = guard.get_inner_mut();
                buf.clear();
                let _ = f.rewind().and_then(|_| f.read_to_end(&mut buf));
                guard.clear_ready();
                tracing::debug!("mount table changed: rescanning every watch group");
                hub.set_mounts(parse_mountinfo(&String::from_utf8_lossy(&buf)));
                hub.poke_all(std::time::Instant::now());
            }
            _ = crate::stop::stopped(&mut stop) => return,
        }
    }
}
