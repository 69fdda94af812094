//! Writes a directory exactly the way kubelet's atomic writer updates a Secret, ConfigMap or
//! projected volume. Used by `secret-reloader demo`, the tests and the benchmark, so that all of
//! them exercise the daemon against the real sequence of filesystem operations:
//!
//! 1. write every key into a new timestamped directory `..YYYY_MM_DD_HH_MM_SS.<random>`, each file
//!    with its mode;
//! 2. (older kubelets) create the user-visible symlinks of new keys, `key → ..data/key`;
//! 3. point a symlink `..data_tmp` at the new directory and rename it over `..data` — the one
//!    atomic step, the commit point;
//! 4. (newer kubelets) create the user-visible symlinks of new keys;
//! 5. remove the user-visible symlinks of keys that are gone;
//! 6. remove the previous timestamped directory.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::scan::KUBELET_DATA;

/// When the user-visible symlinks of new keys are created relative to the `..data` swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymlinkOrder {
    /// Older kubelets: just before the swap (they dangle for a moment).
    BeforeSwap,
    /// Newer kubelets: just after the swap.
    AfterSwap,
}

/// One key of a volume.
#[derive(Debug, Clone)]
pub struct Key {
    /// Content.
    pub data: Vec<u8>,
    /// File mode (kubelet's defaultMode / items mode), e.g. 0o644.
    pub mode: u32,
}

/// Writer for one volume directory.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    /// The volume directory (the mount point in a pod).
    dir: PathBuf,
    /// Symlink order of this kubelet.
    order: SymlinkOrder,
    /// The pod's fsGroup: files are given this group, as kubelet does.
    group: Option<u32>,
}

impl AtomicWriter {
    /// A writer for `dir`, behaving like a current kubelet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AtomicWriter {
            dir: dir.into(),
            order: SymlinkOrder::AfterSwap,
            group: None,
        }
    }

    /// The same writer for a pod with `fsGroup: gid`: every file it writes belongs to that group.
    pub fn with_group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self
    }

    /// The same writer with another symlink order.
    pub fn with_order(mut self, order: SymlinkOrder) -> Self {
        self.order = order;
        self
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `keys` (each with mode 0644) as the new version; see [`AtomicWriter::write_keys`].
    pub fn write<K: AsRef<str>, V: AsRef<[u8]>>(&self, keys: &[(K, V)]) -> io::Result<Instant> {
        let keys = keys
            .iter()
            .map(|(k, v)| {
                (
                    k.as_ref().to_string(),
                    Key {
                        data: v.as_ref().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect();
        self.write_keys(&keys)
    }

    /// Writes `keys` as the new version; returns the instant the `..data` rename was entered (a
    /// lower bound of the commit, so latencies measured from it are never flattered).
    pub fn write_keys(&self, keys: &BTreeMap<String, Key>) -> io::Result<Instant> {
        fs::create_dir_all(&self.dir)?;
        let data_link = self.dir.join(KUBELET_DATA);
        let old_ts = fs::read_link(&data_link).ok();
        let old_keys: Vec<String> = match &old_ts {
            Some(ts) => top_level_names(&self.dir.join(ts))?,
            None => Vec::new(),
        };

        let ts_name = timestamped_name()?;
        let ts_dir = self.dir.join(&ts_name);
        fs::create_dir(&ts_dir)?;
        fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))?;
        for (key, k) in keys {
            let path = ts_dir.join(key);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&path, &k.data)?;
            if let Some(gid) = self.group {
                std::os::unix::fs::chown(&path, None, Some(gid))?;
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(k.mode))?;
        }
        if let Some(gid) = self.group {
            // kubelet's ownership pass (fsGroup) runs on the new version before the swap: its
            // directory gets the group and the setgid bit.
            std::os::unix::fs::chown(&ts_dir, None, Some(gid))?;
            fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o2755))?;
        }

        let new_top: Vec<String> = top_level_names(&ts_dir)?;
        if self.order == SymlinkOrder::BeforeSwap {
            self.create_user_visible(&new_top)?;
        }
        let tmp_link = self.dir.join("..data_tmp");
        let _ = fs::remove_file(&tmp_link);
        symlink(&ts_name, &tmp_link)?;
        let swapped = Instant::now();
        fs::rename(&tmp_link, &data_link)?;
        if self.order == SymlinkOrder::AfterSwap {
            self.create_user_visible(&new_top)?;
        }
        for gone in old_keys.iter().filter(|k| !new_top.contains(k)) {
            let _ = fs::remove_file(self.dir.join(gone));
        }
        if let Some(old) = old_ts {
            fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(swapped)
    }

    fn create_user_visible(&self, names: &[String]) -> io::Result<()> {
        for name in names {
            let link = self.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(Path::new(KUBELET_DATA).join(name), &link)?;
            }
        }
        Ok(())
    }
}

/// Names directly inside a timestamped directory (the user-visible entries).
fn top_level_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// `..2026_11_24_06_00_00.123456789`, as kubelet names its version directories.
fn timestamped_name() -> io::Result<String> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let stamp: String = stamp
        .trim_end_matches('Z')
        .chars()
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    let random = getrandom::u32().map_err(io::Error::other)? % 1_000_000_000;
    Ok(format!("..{stamp}.{random:09}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_kubelets() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        let w = AtomicWriter::new(&vol);
        w.write(&[("tls.crt", "a"), ("tls.key", "b")]).unwrap();
        let ts1 = fs::read_link(vol.join("..data")).unwrap();
        assert!(ts1.to_str().unwrap().starts_with("..20"), "{ts1:?}");
        assert_eq!(
            fs::read_link(vol.join("tls.crt")).unwrap(),
            Path::new("..data/tls.crt")
        );
        assert_eq!(fs::read(vol.join("tls.key")).unwrap(), b"b");

        w.write(&[("tls.crt", "c"), ("ca.crt", "d")]).unwrap();
        let ts2 = fs::read_link(vol.join("..data")).unwrap();
        assert_ne!(ts1, ts2);
        assert!(!vol.join(&ts1).exists(), "old version directory removed");
        assert!(
            fs::symlink_metadata(vol.join("tls.key")).is_err(),
            "dropped key's symlink removed"
        );
        assert_eq!(fs::read(vol.join("ca.crt")).unwrap(), b"d");
        let mut names: Vec<_> = fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            4,
            "..data, the version directory, ca.crt, tls.crt: {names:?}"
        );
    }
}
