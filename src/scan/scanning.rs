//! The state of one scan: what it has read and found so far, the work it spent against its
//! budget, and how it ends (files in path order, the PEM findings, the version's fingerprint).
//!
//! The steps that add to it are methods of [`Scanning`] in files of their own, by what they
//! know of: `walk` (the watched paths and the directories below them), `kubelet` (kubelet's
//! atomic-writer layout), `confine` (symlinks kept inside what is watched) and `read` (one file,
//! and the limits of a scan). They import this file; it imports none of them.

use std::collections::{BTreeMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::pem::PemCheck;
use super::{Budget, FileEntry, Options, Problem, ProblemKind, Scan};

/// State of one scan in progress.
pub(super) struct Scanning<'a> {
    /// How to scan (the group's settings, what each path was when first seen).
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
    /// The result so far (problems, skipped entries, watches, expiries).
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
    pub(super) later_paths: bool,
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
                tokens: Vec::new(),
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
            let was_dir = self.opts.was_dir.get(p).copied();
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

    /// Records why the version is incomplete.
    pub(super) fn problem(&mut self, kind: ProblemKind, message: String) {
        self.scan.problems.push(Problem { kind, message });
    }

    /// Records the change time of part of the content: the version's `content_time` is the
    /// latest one seen.
    pub(super) fn saw_ctime(&mut self, md: &Metadata) {
        let t = SystemTime::UNIX_EPOCH
            + Duration::new(
                md.ctime().max(0) as u64,
                md.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        self.scan.content_time = Some(self.scan.content_time.map_or(t, |c| c.max(t)));
    }

    /// Closes `file` after the action when this scan is on the reload path (within a budget);
    /// at once otherwise (a scan on the blocking pool, whose descriptors may be many).
    pub(super) fn close_later(&mut self, file: std::fs::File) {
        if self.budget.is_some() {
            self.scan.closing.defer(file);
        }
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
