//! Scanning a watch group: which files make up the current version, their keyed fingerprints,
//! owners and modes, and which directories must be watched to see the next version.
//!
//! Kubernetes volume layout: a directory holding a `..data` symlink is written by kubelet's atomic
//! writer. Its version is what `..data` points to, read through that one resolved target so that a
//! swap in the middle of a scan cannot mix two versions, and listed from there rather than from the
//! user-visible symlinks (a new key's symlink may appear after the swap; the version is complete
//! at the swap). Entries whose names start with `..` are kubelet internals and never files.
//!
//! A version is *complete* when every watched path exists and every file could be read; only a
//! complete version is ever reloaded into the app. Special files (FIFOs, sockets, devices),
//! dangling symlinks and symlink loops inside a directory are skipped and reported, never opened.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zeroize::Zeroize;

use crate::fingerprint::{Fingerprint, FingerprintKey};
use crate::pem::PemCheck;

/// Name of kubelet's commit-point symlink.
pub const KUBELET_DATA: &str = "..data";

/// Deepest directory nesting followed below a watched directory.
const MAX_DEPTH: usize = 16;

/// Files up to this size are read whole and inspected (PEM checks); larger ones are streamed
/// into the fingerprint only. Kubernetes caps a Secret at 1 MiB.
const INSPECT_LIMIT: u64 = 1024 * 1024;

/// One file of a version.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path as the app sees it.
    pub path: PathBuf,
    /// Where the bytes were read (inside kubelet's timestamped directory for volumes).
    pub real_path: PathBuf,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (and file type bits masked off).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Keyed fingerprint of the content.
    pub fingerprint: Fingerprint,
}

/// How a watched path is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// A directory written by kubelet's atomic writer (has `..data`).
    KubeletVolume,
    /// A file inside such a directory.
    KubeletFile,
    /// A plain directory.
    Directory,
    /// A plain file.
    File,
    /// Not there (yet).
    Missing,
}

/// The result of one scan of a watch group.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Files of the version, sorted by path.
    pub files: Vec<FileEntry>,
    /// Layout of each watched path, in configuration order.
    pub layouts: Vec<(PathBuf, Layout)>,
    /// Why the version is incomplete; empty when complete.
    pub problems: Vec<String>,
    /// Entries skipped without making the version incomplete.
    pub skipped: Vec<String>,
    /// Fingerprint of the whole version; `None` when incomplete.
    pub fingerprint: Option<Fingerprint>,
    /// Why the PEM material is not usable (unparsable, a key matching no certificate).
    pub inconsistent: Vec<String>,
    /// PEM material that could not be checked (encrypted keys, keys without a public part).
    pub not_checked: Vec<String>,
    /// Earliest certificate expiry of each file holding certificates.
    pub cert_expiry: Vec<(PathBuf, SystemTime)>,
    /// When the newest part of the content appeared on disk (latest ctime).
    pub content_time: Option<SystemTime>,
    /// Directories to watch to see the next change.
    pub watch_dirs: BTreeSet<PathBuf>,
}

/// Scans the watched `paths` of one group.
pub fn scan(paths: &[PathBuf], key: &FingerprintKey) -> Scan {
    let mut s = Scanning {
        key,
        files: BTreeMap::new(),
        scan: Scan::empty(),
        visited: HashSet::new(),
        pem: PemCheck::default(),
    };
    for p in paths {
        let layout = s.path(p);
        s.scan.layouts.push((p.clone(), layout));
    }
    let mut scan = s.scan;
    scan.files = s.files.into_values().collect();
    let pem = s.pem.finish();
    scan.inconsistent = pem.problems;
    scan.not_checked = pem.notes;
    scan.cert_expiry = pem.expiry;
    if scan.problems.is_empty() {
        let parts = scan
            .files
            .iter()
            .map(|f| (f.path.as_os_str().as_encoded_bytes(), &f.fingerprint));
        scan.fingerprint = Some(key.digest_parts(parts));
    }
    scan
}

impl Scan {
    fn empty() -> Scan {
        Scan {
            files: Vec::new(),
            layouts: Vec::new(),
            problems: Vec::new(),
            skipped: Vec::new(),
            fingerprint: None,
            inconsistent: Vec::new(),
            not_checked: Vec::new(),
            cert_expiry: Vec::new(),
            content_time: None,
            watch_dirs: BTreeSet::new(),
        }
    }

    fn saw_ctime(&mut self, md: &Metadata) {
        let t = SystemTime::UNIX_EPOCH
            + Duration::new(
                md.ctime().max(0) as u64,
                md.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        self.content_time = Some(self.content_time.map_or(t, |c| c.max(t)));
    }
}

/// State of one scan in progress.
struct Scanning<'a> {
    key: &'a FingerprintKey,
    /// Files by user-visible path (a path watched twice counts once).
    files: BTreeMap<PathBuf, FileEntry>,
    scan: Scan,
    /// Directories already walked (device, inode): symlink loops end here.
    visited: HashSet<(u64, u64)>,
    /// PEM material seen so far.
    pem: PemCheck,
}

impl Scanning<'_> {
    fn path(&mut self, p: &Path) -> Layout {
        let parent = p.parent().unwrap_or(Path::new("/"));
        match fs::metadata(p) {
            Ok(md) if md.is_dir() => {
                self.scan.watch_dirs.insert(p.to_path_buf());
                self.scan.watch_dirs.insert(parent.to_path_buf());
                let before = self.files.len();
                let layout = if let Some(data) = self.kubelet_data(p) {
                    self.walk(&data, p, 0, false);
                    Layout::KubeletVolume
                } else {
                    self.walk(p, p, 0, true);
                    Layout::Directory
                };
                // A volume unmounted, or not populated yet, leaves an empty directory: never a
                // version to reload the app into.
                if self.files.len() == before && !self.files.keys().any(|f| f.starts_with(p)) {
                    self.scan
                        .problems
                        .push(format!("{} holds no files (yet)", p.display()));
                }
                layout
            }
            Ok(md) if md.is_file() => {
                self.scan.watch_dirs.insert(parent.to_path_buf());
                match (self.kubelet_data(parent), p.file_name()) {
                    (Some(data), Some(name)) => {
                        self.read_required(p, &data.join(name));
                        Layout::KubeletFile
                    }
                    _ => {
                        self.read_required(p, p);
                        Layout::File
                    }
                }
            }
            Ok(_) => {
                self.scan.watch_dirs.insert(parent.to_path_buf());
                self.scan.problems.push(format!(
                    "{} is not a regular file or directory",
                    p.display()
                ));
                Layout::File
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new key of a kubelet volume is complete at the swap, before its symlink exists.
                if let (Some(data), Some(name)) = (self.kubelet_data(parent), p.file_name())
                    && data.join(name).is_file()
                {
                    self.scan.watch_dirs.insert(parent.to_path_buf());
                    self.read_required(p, &data.join(name));
                    return Layout::KubeletFile;
                }
                self.scan.watch_dirs.insert(nearest_existing_ancestor(p));
                self.scan
                    .problems
                    .push(format!("{} does not exist (yet)", p.display()));
                Layout::Missing
            }
            Err(e) => {
                self.scan.watch_dirs.insert(parent.to_path_buf());
                self.scan
                    .problems
                    .push(format!("cannot stat {}: {e}", p.display()));
                Layout::Missing
            }
        }
    }

    /// The resolved `..data` directory of a kubelet volume, recording the swap's time.
    fn kubelet_data(&mut self, dir: &Path) -> Option<PathBuf> {
        let link = dir.join(KUBELET_DATA);
        let target = fs::read_link(&link).ok()?;
        if let Ok(md) = fs::symlink_metadata(&link) {
            self.scan.saw_ctime(&md);
        }
        Some(dir.join(target))
    }

    /// Walks `dir` (read from) as `shown` (the path the app uses). `watch` adds real
    /// subdirectories to the watch set (not inside kubelet's timestamped directories, whose
    /// content never changes after the swap).
    fn walk(&mut self, dir: &Path, shown: &Path, depth: usize, watch: bool) {
        let md = match fs::metadata(dir) {
            Ok(md) => md,
            Err(e) => {
                self.scan
                    .problems
                    .push(format!("cannot read directory {}: {e}", shown.display()));
                return;
            }
        };
        if !self.visited.insert((md.dev(), md.ino())) {
            self.scan.skipped.push(format!(
                "{}: directory reached twice (symlink loop), skipped",
                shown.display()
            ));
            return;
        }
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.scan
                    .problems
                    .push(format!("cannot list {}: {e}", shown.display()));
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b"..") {
                continue;
            }
            let (real, seen) = (dir.join(&name), shown.join(&name));
            match fs::metadata(&real) {
                Ok(md) if md.is_file() => self.read(&seen, &real, false),
                Ok(md) if md.is_dir() && depth + 1 < MAX_DEPTH => {
                    let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
                    if watch && !is_link {
                        self.scan.watch_dirs.insert(real.clone());
                    }
                    self.walk(&real, &seen, depth + 1, watch && !is_link);
                }
                Ok(md) if md.is_dir() => self.scan.skipped.push(format!(
                    "{}: nested deeper than {MAX_DEPTH} levels, skipped",
                    seen.display()
                )),
                Ok(md) => {
                    self.scan
                        .skipped
                        .push(format!("{}: {}, skipped", seen.display(), kind_of(&md)))
                }
                Err(e) => self
                    .scan
                    .skipped
                    .push(format!("{}: {e}, skipped", seen.display())),
            }
        }
    }

    fn read_required(&mut self, shown: &Path, real: &Path) {
        self.read(shown, real, true)
    }

    /// Reads and fingerprints one file. Opened non-blocking and checked again on the open
    /// descriptor, so a FIFO swapped in after the stat cannot hang the scan.
    fn read(&mut self, shown: &Path, real: &Path, required: bool) {
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(real)
            .and_then(|f| f.metadata().map(|md| (f, md)));
        let (file, md): (File, Metadata) = match opened {
            Ok((f, md)) if md.is_file() => (f, md),
            Ok((_, md)) => {
                let msg = format!("{}: {}, skipped", shown.display(), kind_of(&md));
                if required {
                    self.scan.problems.push(msg)
                } else {
                    self.scan.skipped.push(msg)
                }
                return;
            }
            Err(e) => {
                self.scan.problems.push(format!(
                    "cannot read {}: {}",
                    shown.display(),
                    explain(&e)
                ));
                return;
            }
        };
        match self.digest(file, &md, shown) {
            Ok((fingerprint, size)) => {
                self.scan.saw_ctime(&md);
                self.files.insert(
                    shown.to_path_buf(),
                    FileEntry {
                        path: shown.to_path_buf(),
                        real_path: real.to_path_buf(),
                        uid: md.uid(),
                        gid: md.gid(),
                        mode: md.mode() & 0o7777,
                        size,
                        fingerprint,
                    },
                );
            }
            Err(e) => {
                self.scan
                    .problems
                    .push(format!("cannot read {}: {}", shown.display(), explain(&e)))
            }
        }
    }
}

impl Scanning<'_> {
    /// Fingerprints an open file. Small files are read whole, inspected, and wiped.
    fn digest(
        &mut self,
        mut file: File,
        md: &Metadata,
        shown: &Path,
    ) -> io::Result<(Fingerprint, u64)> {
        if md.len() > INSPECT_LIMIT {
            return self.key.digest_reader(&file);
        }
        let mut content = Vec::with_capacity(md.len() as usize + 1);
        io::Read::read_to_end(&mut file, &mut content)?;
        let result = self.key.digest_reader(&content[..]);
        self.pem.add_file(shown, &content);
        content.zeroize();
        result
    }
}

fn explain(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::PermissionDenied {
        format!("{e} (the sidecar runs as uid {})", nix::unistd::geteuid())
    } else {
        e.to_string()
    }
}

fn kind_of(md: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The closest ancestor of `p` that exists: watched until `p` appears.
pub fn nearest_existing_ancestor(p: &Path) -> PathBuf {
    let mut cur = p.parent();
    while let Some(dir) = cur {
        if dir.is_dir() {
            return dir.to_path_buf();
        }
        cur = dir.parent();
    }
    PathBuf::from("/")
}
