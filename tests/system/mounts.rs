//! A tmpfs volume unmounted and mounted again (a pod's volume replaced under the sidecar) is
//! held back while empty and watched again once mounted.

use crate::support::sink::Sink;
use crate::support::{credential, daemon_for, eventually, tempdir, volume};

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
    let first = Tmpfs::mount(&dir.path().join("vol"));
    let (w, vol) = volume(dir.path());
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    // No resync within the test: only the mount table and inotify can tell.
    let d = daemon_for(&[&vol], &sink, &["--resync-interval", "1h"]);
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
