//! Walking the watched paths of one group and reading their files: the state of one scan.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::pem::PemCheck;
use super::{
    Budget, FileEntry, Interest, KUBELET_DATA, Layout, Options, Problem, ProblemKind, Scan,
    nearest_existing_ancestor,
};
use crate::files::{self, ReadError};
use crate::text::path as shown;
use nix::fcntl::{AT_FDCWD, OFlag};
use rustix::fs::{FileType, RawDir};

/// Deepest directory nesting followed below a watched directory.
const MAX_DEPTH: usize = 16;

/// State of one scan in progress.
pub(super) struct Scanning<'a> {
    pub(super) opts: Options<'a>,
    /// `None`: no limit.
    pub(super) budget: Option<Budget>,
    /// Work done so far, counted against the budget.
    pub(super) spent: Budget,
    /// The budget ran out: the scan stops and reports nothing.
    pub(super) over: bool,
    /// Files in the order read; sorted by user-visible path at the end, where a path read twice
    /// (a file watched itself and inside a watched directory) counts once. A vector, not a map:
    /// nothing on the fast path allocates a node that the allocator maps and unmaps per scan.
    pub(super) files: Vec<FileEntry>,
    pub(super) scan: Scan,
    /// Directories already walked (device, inode): symlink loops end here.
    pub(super) visited: HashSet<(u64, u64)>,
    /// PEM material seen so far.
    pub(super) pem: PemCheck,
    /// `--max-files` was reached (reported once).
    pub(super) capped: bool,
    /// Directories walked below the watched ones (counted against `--max-files`).
    pub(super) dirs: usize,
    /// Skipped entries past those listed.
    pub(super) skipped_more: usize,
    /// Each `..data` read, with the directory it named then.
    pub(super) resolved: Vec<(PathBuf, PathBuf)>,
    /// Watched paths remain to be walked after the current one (a directory walked now is
    /// then recorded even when nothing below it needs it, for the later ones).
    later_paths: bool,
}

impl<'a> Scanning<'a> {
    pub(super) fn new(opts: Options<'a>, budget: Option<Budget>) -> Self {
        Scanning {
            opts,
            budget,
            spent: Budget {
                bytes: 0,
                entries: 0,
            },
            over: false,
            files: Vec::new(),
            scan: Scan {
                files: Vec::new(),
                layouts: Vec::new(),
                problems: Vec::new(),
                skipped: Vec::new(),
                fingerprint: None,
                inconsistent: Vec::new(),
                not_checked: Vec::new(),
                cert_expiry: Vec::new(),
                token_expiry: Vec::new(),
                certs: Vec::new(),
                content_time: None,
                watch: BTreeMap::new(),
                work: Budget {
                    bytes: 0,
                    entries: 0,
                },
                torn: false,
                closing: Default::default(),
            },
            visited: HashSet::new(),
            pem: PemCheck::new(opts.served_certs),
            capped: false,
            dirs: 0,
            skipped_more: 0,
            resolved: Vec::new(),
            later_paths: false,
        }
    }

    /// Scans `paths`; `None` when the budget ran out.
    pub(super) fn run(mut self, paths: &[PathBuf]) -> Option<Scan> {
        for (i, p) in paths.iter().enumerate() {
            self.later_paths = i + 1 < paths.len();
            // Each watched path is work too: thousands of them listed one by one go where a
            // large directory goes.
            self.spent.entries += 1;
            if self.budget.is_some_and(|b| self.spent.entries > b.entries) {
                return None;
            }
            let was_dir = self.opts.kinds.get(i).copied().flatten();
            let layout = self.path(p, was_dir);
            if self.over {
                return None;
            }
            self.scan.layouts.push((p.clone(), layout));
        }
        if self.skipped_more > 0 {
            let more = format!("… and {} more entries skipped", self.skipped_more);
            self.scan.skipped.push(more);
        }
        let pem = std::mem::take(&mut self.pem).finish();
        let torn = self.torn(!pem.problems.is_empty());
        let mut scan = self.scan;
        scan.torn = torn;
        scan.work = self.spent;
        scan.files = by_path(self.files);
        scan.inconsistent = pem.problems;
        scan.not_checked = pem.notes;
        scan.cert_expiry = pem.expiry;
        scan.certs = pem
            .leaves
            .iter()
            .map(|l| super::CertOnDisk {
                path: l.path.clone(),
                fingerprint: self.opts.key.digest(&l.der),
                serial: l.serial.clone(),
                not_after: l.not_after,
            })
            .collect();
        if scan.problems.is_empty() {
            let parts = scan
                .files
                .iter()
                .map(|f| (f.path.as_os_str().as_encoded_bytes(), &f.fingerprint));
            scan.fingerprint = Some(self.opts.key.digest_parts(parts));
        }
        Some(scan)
    }

    /// Whether a kubelet volume swapped while it was read: two reads of one `..data` named
    /// different directories, or, when the version looks incomplete or inconsistent (kubelet
    /// removes the old directory right after the swap), `..data` names another one now.
    fn torn(&self, inconsistent: bool) -> bool {
        let mut first: std::collections::HashMap<&PathBuf, &PathBuf> =
            std::collections::HashMap::with_capacity(self.resolved.len());
        for (link, target) in &self.resolved {
            if *first.entry(link).or_insert(target) != target {
                return true;
            }
        }
        let suspect = inconsistent || !self.scan.problems.is_empty();
        suspect
            && self
                .resolved
                .iter()
                .any(|(link, target)| fs::read_link(link).ok().as_ref() != Some(target))
    }

    pub(super) fn problem(&mut self, kind: ProblemKind, message: String) {
        self.scan.problems.push(Problem { kind, message });
    }

    fn watch(&mut self, dir: &Path, interest: Interest) {
        match self.scan.watch.get_mut(dir) {
            Some(i) => i.merge(interest),
            None => {
                self.scan.watch.insert(dir.to_path_buf(), interest);
            }
        }
    }

    /// Watches the parent of `p` for events on `p`'s name (and `extra`).
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

    pub(super) fn saw_ctime(&mut self, md: &Metadata) {
        let t = SystemTime::UNIX_EPOCH
            + Duration::new(
                md.ctime().max(0) as u64,
                md.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        self.scan.content_time = Some(self.scan.content_time.map_or(t, |c| c.max(t)));
    }

    fn path(&mut self, p: &Path, was_dir: Option<bool>) -> Layout {
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

    /// Whether `data`, the directory `..data` names in the volume `volume`, is one of the
    /// volume's own directories and not a symbolic link out of it (reported otherwise).
    fn own_directory(&mut self, data: &Path, volume: &Path) -> bool {
        if self.opts.follow_external_symlinks {
            return true;
        }
        match fs::symlink_metadata(data) {
            Ok(md) if md.file_type().is_symlink() => {
                self.problem(
                    ProblemKind::WrongKind,
                    format!(
                        "{}/..data names a symbolic link, not a directory of the volume: not \
                         followed (--follow-external-symlinks follows it)",
                        shown(volume)
                    ),
                );
                false
            }
            _ => true,
        }
    }

    /// The resolved `..data` directory of a kubelet volume (`None`: not one), recording the
    /// swap's time. `..data` must stay inside the volume: kubelet points it at a sibling.
    fn kubelet_data(&mut self, dir: &Path) -> Result<Option<PathBuf>, Problem> {
        let link = dir.join(KUBELET_DATA);
        crate::lane::at(&link);
        let Some(target) = read_link(&link) else {
            return Ok(None);
        };
        if let Ok(md) = fs::symlink_metadata(&link) {
            self.saw_ctime(&md);
        }
        let mut parts = target.components();
        let sibling = matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        );
        let data = (sibling || self.opts.follow_external_symlinks).then(|| dir.join(&target));
        self.resolved.push((link, target));
        if data.is_some() {
            return Ok(data);
        }
        let Some((link, _)) = self.resolved.last() else {
            return Ok(None);
        };
        match (fs::canonicalize(link), fs::canonicalize(dir)) {
            (Ok(real), Ok(root)) if real.starts_with(&root) && real != root => Ok(Some(real)),
            _ => Err(Problem {
                kind: ProblemKind::WrongKind,
                message: format!(
                    "{} points outside its volume: not followed (--follow-external-symlinks follows it)",
                    shown(link)
                ),
            }),
        }
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
        // The directory `..data` names must be one of the volume's own, not a symbolic link
        // (a second hop out of the volume): opened without following one.
        crate::lane::at(dir);
        let flags = if data && !self.opts.follow_external_symlinks {
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_DIRECTORY
        };
        let listing = match files::open_nonblocking(AT_FDCWD, dir.as_os_str(), flags) {
            Ok(d) => d,
            // ELOOP or ENOTDIR: a symbolic link where the volume's directory should be.
            Err(_) if data && !self.own_directory(dir, root) => return,
            Err(e) => {
                return self.problem(
                    ProblemKind::Unreadable,
                    format!(
                        "cannot read directory {}: {}",
                        shown(shown_as),
                        ReadError::from(e)
                    ),
                );
            }
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
            if is_link && !self.opts.follow_external_symlinks {
                let root_real = root_real
                    .get_or_insert_with(|| fs::canonicalize(root).unwrap_or(root.to_path_buf()));
                match fs::canonicalize(&real) {
                    Ok(target) if target.starts_with(&*root_real) => {}
                    Ok(_) => {
                        self.skip(format!(
                            "{}: a symlink to a target outside {}, skipped (--follow-external-symlinks \
                             follows it)",
                            shown(&seen),
                            shown(root)
                        ));
                        continue;
                    }
                    Err(e) => {
                        self.skip(format!(
                            "{}: a symlink that does not resolve ({e}), skipped",
                            shown(&seen)
                        ));
                        continue;
                    }
                }
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

    /// Closes `file` after the action when this scan is on the reload path (within a budget);
    /// at once otherwise (a scan on the blocking pool, whose descriptors may be many).
    pub(super) fn close_later(&mut self, file: std::fs::File) {
        if self.budget.is_some() {
            self.scan.closing.defer(file);
        }
    }

    /// Records a directory about to be walked (its identity `id`, or its descriptor's); false
    /// (and reported) when it was walked before: a symlink loop.
    fn enter(&mut self, dir: BorrowedFd<'_>, id: Option<(u64, u64)>, shown_as: &Path) -> bool {
        let id = match id {
            Some(id) => id,
            None => match nix::sys::stat::fstat(dir) {
                Ok(st) => (st.st_dev, st.st_ino),
                // Without an identity no loop can be told: the depth limit still ends one.
                Err(_) => return true,
            },
        };
        if self.visited.insert(id) {
            return true;
        }
        self.skip(format!(
            "{}: directory reached twice (symlink loop), skipped",
            shown(shown_as)
        ));
        false
    }
}

/// Files sorted by user-visible path, each path once (the last read of it kept).
fn by_path(mut files: Vec<FileEntry>) -> Vec<FileEntry> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|later, kept| {
        let same = later.path == kept.path;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    files
}

/// Where the symbolic link `link` points (`None`: not a link, or unreadable), read into a
/// stack buffer: a kubelet target is short, and std's `read_link` allocates and then shrinks.
fn read_link(link: &Path) -> Option<PathBuf> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 256];
    match rustix::fs::readlinkat_raw(rustix::fs::CWD, link, &mut buf) {
        Ok((target, rest)) if !rest.is_empty() => Some(PathBuf::from(OsStr::from_bytes(target))),
        // Possibly cut short: read whole.
        Ok(_) => fs::read_link(link).ok(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::super::fingerprint::FingerprintKey;
    use super::super::{Layout, Options, Scan, scan};

    fn scan_of(paths: &[PathBuf], kinds: &[Option<bool>]) -> Scan {
        scan(
            paths,
            Options {
                key: &FingerprintKey::new(b"test".to_vec()),
                max_files: 100,
                follow_external_symlinks: false,
                kinds,
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
            for kinds in [[None], [Some(true)]] {
                let s = scan_of(std::slice::from_ref(path), &kinds);
                assert_eq!(s.layouts[0].1, layout, "{path:?}");
                assert!(s.problems.is_empty(), "{:?}", s.problems);
                assert_eq!(names(&s), ["a", "b"], "{path:?} {kinds:?}");
                assert!(
                    s.skipped.iter().any(|m| m.contains("reached twice")),
                    "{:?}",
                    s.skipped
                );
                assert!(s.fingerprint.is_some());
            }
        }
        // Two watched paths naming one directory: walked once.
        let s = scan_of(&[plain.clone(), plain.join("sub/up")], &[None, None]);
        assert!(
            s.skipped.iter().any(|m| m.contains("reached twice")),
            "{:?}",
            s.skipped
        );
    }
}
