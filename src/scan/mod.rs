//! Reading one version of a watch group's content: which files, owned by whom, with what keyed
//! fingerprint, and whether the version is complete.
//!
//! Kubernetes volume layout: a directory holding a `..data` symlink is written by kubelet's atomic
//! writer. Its version is what `..data` points to, read through that one resolved target so that a
//! swap in the middle of a scan cannot mix two versions, and listed from there rather than from the
//! user-visible symlinks (a new key's symlink may appear after the swap; the version is complete
//! at the swap). Only where that layout is present are `..`-names kubelet's own; elsewhere every
//! name is content.
//!
//! A version is *complete* when every watched path exists with the kind (file or directory) it
//! had when first seen, every file could be read, and the group holds at most `max_files` files;
//! only a complete version is ever reloaded into the app. Special files (FIFOs, sockets, devices),
//! dangling symlinks, symlink loops and symlinks leading out of a watched directory are skipped and
//! reported, never opened.
//!
//! - `scanning`: the state of one scan, and how it ends (the version's fingerprint);
//! - `walk`: the watched paths and the directories below them; `kubelet`: kubelet's layout
//!   (`..data`, a swap during the read); `confine`: symlinks kept inside what is watched, loops;
//!   `read`: reading one file, within the scan's budget and the group's file cap;
//! - [`fingerprint`]: keyed HMAC fingerprints;
//! - `pem`: the PEM consistency check; [`token`]: the claims of a JWT held by a file.

mod confine;
pub mod fingerprint;
mod kubelet;
pub(crate) mod pem;
mod read;
mod scanning;
pub mod token;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fingerprint::{Fingerprint, FingerprintKey};

/// Name of kubelet's commit-point symlink.
pub(crate) const KUBELET_DATA: &str = "..data";

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
    /// Permission bits (file type bits masked off).
    pub mode: u32,
    /// Whether it is empty (its exact size is never shown: it tells a password's length).
    pub empty: bool,
    /// Keyed fingerprint of the content.
    pub fingerprint: Fingerprint,
}

/// A certificate of a version, as it can be compared with the one an app serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOnDisk {
    /// The file, as the app sees it.
    pub path: PathBuf,
    /// Keyed fingerprint of the certificate (DER).
    pub fingerprint: Fingerprint,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
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

impl Layout {
    /// Whether the path is a directory (`Some(true)`), a file (`Some(false)`), or missing.
    pub(crate) fn is_dir(self) -> Option<bool> {
        match self {
            Layout::KubeletVolume | Layout::Directory => Some(true),
            Layout::KubeletFile | Layout::File => Some(false),
            Layout::Missing => None,
        }
    }
}

/// Why a version is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A watched path does not exist (yet), or a watched directory holds no files.
    Missing,
    /// A file or directory cannot be read by the sidecar.
    Unreadable,
    /// A watched path is a FIFO, socket or device, or changed between file and directory.
    WrongKind,
    /// More files than `--max-files`.
    TooManyFiles,
    /// A token on disk is past its `exp`: whoever writes it failed to refresh it. Does not
    /// make the version incomplete: never in [`Scan::problems`], found where it is shown (the
    /// time passes between scans).
    TokenExpired,
    /// A token on disk is not valid yet (`nbf` ahead of the clock beyond a small skew). Does not
    /// make the version incomplete.
    TokenNotYetValid,
}

impl ProblemKind {
    /// Whether the problem makes the version incomplete (the token kinds are said, not held).
    pub(crate) fn incomplete(self) -> bool {
        !matches!(
            self,
            ProblemKind::TokenExpired | ProblemKind::TokenNotYetValid
        )
    }
}

/// One reason a version is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What it is, naming the path, and what to do.
    pub message: String,
}

/// What a directory watch is for: every event in it, only events on some names (the parent of a
/// watched path, watched to see that path appear, disappear or be renamed over), a kubelet
/// volume's `..data` swap, or one file written whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// Every entry is content.
    All,
    /// Only these names matter.
    Names(BTreeSet<OsString>),
    /// A kubelet volume: only `..data` being renamed over or removed matters. Kubelet's steps
    /// before the swap (a new version directory, `..data_tmp`) need not even wake the daemon, so
    /// the watch subscribes to renames into the directory and removals only.
    KubeletData,
    /// One file outside the watch groups (a pid file), written whole: it appearing, being
    /// renamed over or removed, or closed after a write; not each write (a busy neighbour,
    /// such as a log file, wakes nothing while it is held open).
    File(OsString),
}

impl Interest {
    /// Whether an event on `name` (none: the directory itself) matters.
    pub(crate) fn wants(&self, name: Option<&std::ffi::OsStr>) -> bool {
        match (self, name) {
            (Interest::All, _) | (_, None) => true,
            (Interest::Names(names), Some(n)) => names.contains(n),
            (Interest::KubeletData, Some(n)) => n == KUBELET_DATA,
            (Interest::File(f), Some(n)) => f == n,
        }
    }

    /// Both interests together.
    pub(crate) fn merge(&mut self, other: Interest) {
        let mine = std::mem::replace(self, Interest::KubeletData);
        *self = match (mine, other) {
            (Interest::All, _) | (_, Interest::All) => Interest::All,
            // A file is one name among others.
            (Interest::File(f), o) | (o, Interest::File(f)) => {
                let mut names = Interest::Names(BTreeSet::from([f]));
                names.merge(o);
                names
            }
            (Interest::KubeletData, Interest::KubeletData) => Interest::KubeletData,
            (Interest::KubeletData, Interest::Names(mut n))
            | (Interest::Names(mut n), Interest::KubeletData) => {
                n.insert(OsString::from(KUBELET_DATA));
                Interest::Names(n)
            }
            (Interest::Names(mut a), Interest::Names(b)) => {
                a.extend(b);
                Interest::Names(a)
            }
        };
    }
}

/// The result of one scan of a watch group.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Files of the version, sorted by path.
    pub files: Vec<FileEntry>,
    /// Layout of each watched path, in configuration order.
    pub layouts: Vec<(PathBuf, Layout)>,
    /// Why the version is incomplete; empty when complete.
    pub problems: Vec<Problem>,
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
    /// The claims of each file holding a JWT (bounded and escaped; see [`token`]).
    pub tokens: Vec<(PathBuf, token::TokenClaims)>,
    /// The first certificate of each file, as an app serving it presents it.
    pub certs: Vec<CertOnDisk>,
    /// When the newest part of the content appeared on disk (latest ctime).
    pub content_time: Option<SystemTime>,
    /// Directories to watch to see the next change, and which events in each matter.
    pub watch: BTreeMap<PathBuf, Interest>,
    /// The work the scan did (bytes read, entries looked at): where the next one should run.
    pub work: Budget,
    /// A kubelet volume swapped again while it was read: what was read may mix two versions or
    /// miss files kubelet removed with the old one. Read again rather than report it.
    pub torn: bool,
    /// What a scan on the reload path read, still open: closed when dropped, after the targets
    /// acted (see the group's scan).
    pub closing: crate::files::Closing,
}

impl Scan {
    /// Whether every watched path is in a kubelet volume (whose swapped-in versions never
    /// change).
    pub(crate) fn all_kubelet(&self) -> bool {
        self.layouts
            .iter()
            .all(|(_, l)| matches!(l, Layout::KubeletVolume | Layout::KubeletFile))
    }
}

/// How to scan a group.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Fingerprint key.
    pub key: &'a FingerprintKey,
    /// Most files a version may have.
    pub max_files: usize,
    /// Follow symlinks out of a watched directory.
    pub follow_external_symlinks: bool,
    /// Whether each watched path was a directory when first seen, by path (absent: not seen
    /// yet).
    pub was_dir: &'a std::collections::HashMap<PathBuf, bool>,
    /// Record the first certificate of each file ([`Scan::certs`]): a target of the group
    /// compares it with the one its app serves. Off, the scan does no work for it.
    pub served_certs: bool,
}

/// A limit on the work of one scan: exceeded, the scan stops and is run again where it may take
/// its time (see `scan_within`).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes read.
    pub bytes: u64,
    /// Directory entries looked at.
    pub entries: usize,
}

/// Scans the watched `paths` of one group.
pub fn scan(paths: &[PathBuf], opts: Options<'_>) -> Scan {
    scanning::Scanning::new(opts, None)
        .run(paths)
        .expect("a scan without a budget always completes")
}

/// Scans within `budget`; `None` as soon as the scan would exceed it.
pub(crate) fn scan_within(paths: &[PathBuf], opts: Options<'_>, budget: Budget) -> Option<Scan> {
    scanning::Scanning::new(opts, Some(budget)).run(paths)
}

/// The closest ancestor of `p` that exists, and the name under it that leads towards `p`:
/// watched until `p` appears.
pub(crate) fn nearest_existing_ancestor(p: &Path) -> (PathBuf, Option<OsString>) {
    let mut child = p;
    let mut cur = p.parent();
    while let Some(dir) = cur {
        if dir.is_dir() {
            return (dir.to_path_buf(), child.file_name().map(OsString::from));
        }
        child = dir;
        cur = dir.parent();
    }
    (PathBuf::from("/"), None)
}

/// `pairs` looked up by path: built once, where a group of thousands of files would otherwise
/// search the list for each file.
pub(crate) fn index_by_path<T>(pairs: &[(PathBuf, T)]) -> std::collections::HashMap<&Path, &T> {
    pairs.iter().map(|(p, v)| (p.as_path(), v)).collect()
}
