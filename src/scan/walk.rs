//! Walking the watched paths of one group: what each path is (a file, a directory, a kubelet
//! volume or a file in one, missing, or of another kind than when first seen), the directories
//! below the watched ones listed and their entries sorted into files to read, subdirectories to
//! walk and entries to skip, and the directories to watch to see the next change.
//!
//! A directory is opened once and listed with `getdents64` into a buffer on the stack; its
//! regular files are opened relative to it. Nesting is followed to [`MAX_DEPTH`] levels.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::scanning::Scanning;
use super::{Interest, KUBELET_DATA, Layout, Problem, ProblemKind, nearest_existing_ancestor};
use crate::files::{self, ReadError};
use crate::text::path as shown;
use nix::fcntl::{AT_FDCWD, OFlag};
use rustix::fs::{FileType, RawDir};

/// Deepest directory nesting followed below a watched directory.
const MAX_DEPTH: usize = 16;

impl Scanning<'_> {
    /// Adds `interest` in `dir` to the watches the scan asks for.
    fn watch(&mut self, dir: &Path, interest: Interest) {
        match self.scan.watch.get_mut(dir) {
            Some(i) => i.merge(interest),
            None => {
                self.scan.watch.insert(dir.to_path_buf(), interest);
            }
        }
    }

    /// Watches the parent of `p` for events on `p`'s name.
    fn watch_parent(&mut self, p: &Path) {
        let parent = p.parent().unwrap_or(Path::new("/"));
        let names = p
            .file_name()
            .map(|n| n.to_os_string())
            .into_iter()
            .collect();
        self.watch(parent, Interest::Names(names));
    }

    /// Watches the kubelet volume holding the watched file `p` for its swaps: the file is read
    /// through `..data`, its user-visible symlink does not matter.
    fn watch_volume_of(&mut self, p: &Path) {
        let parent = p.parent().unwrap_or(Path::new("/"));
        self.watch(parent, Interest::KubeletData);
    }

    /// Reads the watched path `p` (`was_dir`: whether it was a directory when first seen) and
    /// says how it is laid out.
    pub(super) fn path(&mut self, p: &Path, was_dir: Option<bool>) -> Layout {
        // A directory seen before is most likely still a kubelet volume: its `..data` read
        // first says so without a `stat` of the directory (a path through it resolves only when
        // it is one). `Some(Ok(None))`: read, not a volume (or not a directory any more).
        let data = match was_dir {
            Some(true) => match self.kubelet_data(p) {
                Ok(None) => Some(Ok(None)),
                known => return self.directory(p, was_dir, Some(known), None),
            },
            _ => None,
        };
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        crate::lane::at(p);
        match fs::metadata(p) {
            Ok(md) if md.is_dir() => self.directory(p, was_dir, data, Some((md.dev(), md.ino()))),
            Ok(md) if md.is_file() => {
                if was_dir == Some(true) {
                    self.watch_parent(p);
                    self.kind_changed(p, "a directory", "a file");
                    return Layout::File;
                }
                match (self.kubelet_data(&parent), p.file_name()) {
                    (Ok(Some(data)), Some(name)) => {
                        self.watch_volume_of(p);
                        if self.own_directory(&data, &parent) {
                            self.read(p.to_path_buf(), data.join(name), true, false);
                        }
                        Layout::KubeletFile
                    }
                    (Err(problem), _) => {
                        self.watch_volume_of(p);
                        self.scan.problems.push(problem);
                        Layout::KubeletFile
                    }
                    _ => {
                        self.watch_parent(p);
                        // A watched file that is a symlink changes where its target lives.
                        if let Ok(real) = fs::canonicalize(p)
                            && real != p
                        {
                            self.watch_parent(&real);
                        }
                        self.read(p.to_path_buf(), p.to_path_buf(), true, true);
                        Layout::File
                    }
                }
            }
            Ok(md) => {
                self.watch_parent(p);
                self.problem(
                    ProblemKind::WrongKind,
                    format!(
                        "{} is {}, not a file or directory",
                        shown(p),
                        files::kind_of(&md)
                    ),
                );
                Layout::File
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new key of a kubelet volume is complete at the swap, before its symlink exists.
                if let (Ok(Some(data)), Some(name)) = (self.kubelet_data(&parent), p.file_name())
                    && data.join(name).is_file()
                    && self.own_directory(&data, &parent)
                {
                    self.watch_volume_of(p);
                    self.read(p.to_path_buf(), data.join(name), true, false);
                    return Layout::KubeletFile;
                }
                let (dir, next) = nearest_existing_ancestor(p);
                let mut names = BTreeSet::new();
                names.extend(next);
                names.insert(OsString::from(KUBELET_DATA));
                self.watch(&dir, Interest::Names(names));
                self.problem(
                    ProblemKind::Missing,
                    format!("{} does not exist (yet)", shown(p)),
                );
                Layout::Missing
            }
            Err(e) => {
                self.watch_parent(p);
                self.problem(
                    ProblemKind::Unreadable,
                    format!("cannot stat {}: {}", shown(p), ReadError::from(e)),
                );
                Layout::Missing
            }
        }
    }

    /// A watched path that was `was` when first seen is `now`: held back until it returns.
    fn kind_changed(&mut self, p: &Path, was: &str, now: &str) {
        self.problem(
            ProblemKind::WrongKind,
            format!(
                "{} was {was} and is now {now}: the app cannot read it as before (restart the \
                 sidecar if the change is meant)",
                shown(p)
            ),
        );
    }

    /// A watched path that is a directory: a kubelet volume (read through `..data`) or a plain
    /// directory. `data`: its `..data` when already read; `id`: its (device, inode) when a
    /// `stat` gave it.
    fn directory(
        &mut self,
        p: &Path,
        was_dir: Option<bool>,
        data: Option<Result<Option<PathBuf>, Problem>>,
        id: Option<(u64, u64)>,
    ) -> Layout {
        self.watch_parent(p);
        if was_dir == Some(false) {
            self.kind_changed(p, "a file", "a directory");
            return Layout::Directory;
        }
        let before = self.files.len();
        let layout = match data.unwrap_or_else(|| self.kubelet_data(p)) {
            Ok(Some(data)) => {
                // The version is what `..data` names: its swap is the only event that
                // matters (kubelet's other steps are internal, or follow the swap).
                self.watch(p, Interest::KubeletData);
                self.walk(&data, p, 0, false, p, None, true);
                Layout::KubeletVolume
            }
            Ok(None) => {
                self.watch(p, Interest::All);
                self.walk(p, p, 0, true, p, id, false);
                Layout::Directory
            }
            Err(problem) => {
                self.watch(p, Interest::KubeletData);
                self.scan.problems.push(problem);
                Layout::KubeletVolume
            }
        };
        // A volume unmounted, or not populated yet, leaves an empty directory: never a
        // version to reload the app into.
        if !self.over
            && self.files.len() == before
            && !self.files.iter().any(|f| f.path.starts_with(p))
        {
            self.problem(
                ProblemKind::Missing,
                format!("{} holds no files (yet)", shown(p)),
            );
        }
        layout
    }

    /// Walks `dir` (read from) as `shown_as` (the path the app uses). `watch` adds real
    /// subdirectories to the watch set (not inside kubelet's timestamped directories, whose
    /// content never changes after the swap). Symlinks must stay inside `root`. `id`: the
    /// directory's (device, inode) when a `stat` just gave it.
    ///
    /// The directory is opened once; its regular files are opened relative to it. Its identity
    /// (for symlink loops) is taken from the open descriptor only when it matters: before it is
    /// compared with the directories walked before it, and before a subdirectory is walked.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        dir: &Path,
        shown_as: &Path,
        depth: usize,
        watch: bool,
        root: &Path,
        id: Option<(u64, u64)>,
        data: bool,
    ) {
        let Some(listing) = self.open_dir(dir, shown_as, root, data) else {
            return;
        };
        let dir_fd = listing.as_fd();
        let mut recorded = false;
        if id.is_some() || !self.visited.is_empty() {
            if !self.enter(dir_fd, id, shown_as) {
                return;
            }
            recorded = true;
        }
        let mut root_real: Option<PathBuf> = None;
        // `getdents64` straight into a buffer on the stack: no allocation, and none of the
        // `fstat`/`fcntl` calls libc's `opendir` makes.
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut entries = RawDir::new(dir_fd, &mut buf);
        while let Some(entry) = entries.next() {
            let Ok(entry) = entry else { break };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if self.over || self.capped {
                return;
            }
            self.spent.entries += 1;
            if self.budget.is_some_and(|b| self.spent.entries > b.entries) {
                self.over = true;
                return;
            }
            let (real, seen) = (dir.join(name), shown_as.join(name));
            // The type the directory entry gives, or (a filesystem that does not fill it in)
            // the one `lstat` gives.
            let (is_file, is_link) = match entry.file_type() {
                FileType::Unknown => fs::symlink_metadata(&real)
                    .map(|m| (m.is_file(), m.file_type().is_symlink()))
                    .unwrap_or((false, false)),
                t => (t == FileType::RegularFile, t == FileType::Symlink),
            };
            // A regular file by the directory entry itself (no `stat`); opening it checks again.
            if is_file {
                self.read_entry(seen, real, dir_fd, name);
                continue;
            }
            if is_link
                && !self.opts.follow_external_symlinks
                && !self.link_inside(&real, &seen, root, &mut root_real)
            {
                continue;
            }
            match fs::metadata(&real) {
                Ok(md) if md.is_file() => self.read(seen, real, false, true),
                Ok(md) if md.is_dir() && depth + 1 < MAX_DEPTH => {
                    if !self.room_for_dir() {
                        return;
                    }
                    if !recorded {
                        // The first directory of the scan: nothing to compare it with, but what
                        // is walked below it is compared with it.
                        let _ = self.enter(dir_fd, None, shown_as);
                        recorded = true;
                    }
                    let watched = watch && !is_link;
                    let sub = Some((md.dev(), md.ino()));
                    // A kubelet volume inside a plain directory is read through its `..data`.
                    match self.kubelet_data(&real) {
                        Ok(Some(data)) => {
                            if watched {
                                self.watch(&real, Interest::KubeletData);
                            }
                            self.walk(&data, &seen, depth + 1, false, &real, None, true)
                        }
                        Ok(None) => {
                            if watched {
                                self.watch(&real, Interest::All);
                            }
                            self.walk(&real, &seen, depth + 1, watched, root, sub, false)
                        }
                        Err(problem) => self.scan.problems.push(problem),
                    }
                }
                Ok(md) if md.is_dir() => self.skip(format!(
                    "{}: nested deeper than {MAX_DEPTH} levels, skipped",
                    shown(&seen)
                )),
                Ok(md) => self.skip(format!(
                    "{}: {}, skipped",
                    shown(&seen),
                    files::kind_of(&md)
                )),
                Err(e) => self.skip(format!("{}: {}, skipped", shown(&seen), ReadError::from(e))),
            }
        }
        if !recorded && self.later_paths {
            let _ = self.enter(dir_fd, None, shown_as);
        }
        self.close_later(listing);
    }

    /// Opens `dir` to list it (`shown_as`: the path the app uses); `None` when it cannot be
    /// (reported). The directory `..data` names (`data`) must be one of the volume's own, not a
    /// symbolic link (a second hop out of the volume `root`): opened without following one.
    fn open_dir(&mut self, dir: &Path, shown_as: &Path, root: &Path, data: bool) -> Option<File> {
        crate::lane::at(dir);
        let flags = if data && !self.opts.follow_external_symlinks {
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_DIRECTORY
        };
        match files::open_nonblocking(AT_FDCWD, dir.as_os_str(), flags) {
            Ok(d) => Some(d),
            // ELOOP or ENOTDIR: a symbolic link where the volume's directory should be.
            Err(_) if data && !self.own_directory(dir, root) => None,
            Err(e) => {
                self.problem(
                    ProblemKind::Unreadable,
                    format!(
                        "cannot read directory {}: {}",
                        shown(shown_as),
                        ReadError::from(e)
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::super::fingerprint::FingerprintKey;
    use super::super::{Layout, Options, Scan, scan};

    fn scan_of(paths: &[PathBuf], was_dir: &std::collections::HashMap<PathBuf, bool>) -> Scan {
        scan(
            paths,
            Options {
                key: &FingerprintKey::new(b"test".to_vec()),
                max_files: 100,
                follow_external_symlinks: false,
                was_dir,
                served_certs: false,
            },
        )
    }

    fn names(s: &Scan) -> Vec<String> {
        s.files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_symlink_back_to_an_ancestor_is_walked_once_in_a_directory_and_in_a_volume() {
        let tmp = tempfile::tempdir().unwrap();
        // A plain directory whose subdirectory links back to it.
        let plain = tmp.path().join("plain");
        std::fs::create_dir_all(plain.join("sub")).unwrap();
        std::fs::write(plain.join("a"), "1").unwrap();
        std::fs::write(plain.join("sub/b"), "2").unwrap();
        symlink("..", plain.join("sub/up")).unwrap();
        // A kubelet volume whose timestamped directory holds the same loop.
        let vol = tmp.path().join("vol");
        let ts = vol.join("..2026_01_01_00_00_00.1");
        std::fs::create_dir_all(ts.join("sub")).unwrap();
        std::fs::write(ts.join("a"), "1").unwrap();
        std::fs::write(ts.join("sub/b"), "2").unwrap();
        symlink("..", ts.join("sub/up")).unwrap();
        symlink("..2026_01_01_00_00_00.1", vol.join("..data")).unwrap();
        for (path, layout) in [(&plain, Layout::Directory), (&vol, Layout::KubeletVolume)] {
            // The first scan, and a later one (the path known to be a directory).
            let known = std::collections::HashMap::from([(path.clone(), true)]);
            for was_dir in [Default::default(), known] {
                let s = scan_of(std::slice::from_ref(path), &was_dir);
                assert_eq!(s.layouts[0].1, layout, "{path:?}");
                assert!(s.problems.is_empty(), "{:?}", s.problems);
                assert_eq!(names(&s), ["a", "b"], "{path:?} {was_dir:?}");
                assert!(
                    s.skipped.iter().any(|m| m.contains("reached twice")),
                    "{:?}",
                    s.skipped
                );
                assert!(s.fingerprint.is_some());
            }
        }
        // Two watched paths naming one directory: walked once.
        let s = scan_of(&[plain.clone(), plain.join("sub/up")], &Default::default());
        assert!(
            s.skipped.iter().any(|m| m.contains("reached twice")),
            "{:?}",
            s.skipped
        );
    }
}
