//! Reading one file of a version: opened so that it cannot block, fingerprinted, small files
//! inspected (PEM, JWT) and wiped, all within the scan's budget and the group's file cap.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fingerprint::Fingerprint;
use super::scanning::Scanning;
use super::{FileEntry, ProblemKind};
use crate::files::{self, ReadError};
use crate::text::path as shown;

/// Skipped entries listed one by one in a scan; more are counted.
pub(super) const SKIPPED_KEPT: usize = 1000;

/// Files up to this size are read whole and inspected (PEM checks); larger ones are streamed
/// into the fingerprint only. Kubernetes caps a Secret at 1 MiB.
const INSPECT_LIMIT: u64 = 1024 * 1024;

impl Scanning<'_> {
    /// Reads and fingerprints one file (`required`: a watched path itself, not an entry found in
    /// a directory; `stat_shown_regular`: a `stat` just showed it to be a regular file).
    pub(super) fn read(
        &mut self,
        shown_as: PathBuf,
        real: PathBuf,
        required: bool,
        stat_shown_regular: bool,
    ) {
        if !self.room_for(&shown_as) {
            return;
        }
        crate::lane::at(&real);
        let opened = if stat_shown_regular {
            files::open_known_regular(&real)
        } else {
            files::open_regular(&real)
        };
        self.take(shown_as, real, required, opened);
    }

    /// Reads and fingerprints an entry `name` of a directory being walked (`dir`, its
    /// descriptor), which its directory entry showed to be a regular file: opened relative to
    /// the directory.
    pub(super) fn read_entry(
        &mut self,
        shown_as: PathBuf,
        real: PathBuf,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) {
        if !self.room_for(&shown_as) {
            return;
        }
        crate::lane::at(&real);
        let opened = files::open_known_regular_at(dir, name);
        self.take(shown_as, real, false, opened);
    }

    /// Whether the group's file cap leaves room for `shown_as` (reported once when it does not).
    /// Directories walked count too: each one costs an inotify watch.
    fn room_for(&mut self, shown_as: &Path) -> bool {
        if self.files.len() + self.dirs >= self.opts.max_files
            && !self.files.iter().any(|f| f.path == shown_as)
        {
            self.over_cap();
            return false;
        }
        true
    }

    /// Whether the cap leaves room for one more directory (reported once when it does not).
    pub(super) fn room_for_dir(&mut self) -> bool {
        if self.files.len() + self.dirs >= self.opts.max_files {
            self.over_cap();
            return false;
        }
        self.dirs += 1;
        true
    }

    fn over_cap(&mut self) {
        if !self.capped {
            self.capped = true;
            self.problem(
                ProblemKind::TooManyFiles,
                format!(
                    "the watch group holds more than {} files and directories (--max-files): not \
                     read further",
                    self.opts.max_files
                ),
            );
        }
    }

    /// Records an entry skipped without making the version incomplete; past [`SKIPPED_KEPT`]
    /// they are only counted (a directory of a hundred thousand FIFOs is one line, not a
    /// hundred thousand).
    pub(super) fn skip(&mut self, what: String) {
        if self.scan.skipped.len() < SKIPPED_KEPT {
            self.scan.skipped.push(what);
        } else {
            self.skipped_more += 1;
        }
    }

    /// Fingerprints a file just opened (or reports why it was not).
    fn take(
        &mut self,
        shown_as: PathBuf,
        real: PathBuf,
        required: bool,
        opened: Result<(File, Metadata), ReadError>,
    ) {
        let (file, md) = match opened {
            Ok(opened) => opened,
            Err(ReadError::NotRegular(kind)) => {
                let msg = format!("{}: {kind}, skipped", shown(&shown_as));
                if required {
                    self.problem(ProblemKind::WrongKind, msg);
                } else {
                    self.skip(msg);
                }
                return;
            }
            Err(e) => {
                return self.problem(
                    ProblemKind::Unreadable,
                    format!("cannot read {}: {e}", shown(&shown_as)),
                );
            }
        };
        if let Some(b) = self.budget
            && self.spent.bytes.saturating_add(md.len()) > b.bytes
        {
            self.over = true;
            return;
        }
        self.spent.bytes = self.spent.bytes.saturating_add(md.len());
        let digest = if md.len() > INSPECT_LIMIT {
            self.opts.key.digest_reader(&file).map_err(ReadError::from)
        } else {
            files::read_open(&file, &md, INSPECT_LIMIT).map(|content| {
                self.pem.add_file(&shown_as, &content);
                if let Some(claims) = super::token::claims(&content) {
                    self.scan.tokens.push((shown_as.to_path_buf(), claims));
                }
                self.opts.key.digest(&content)
            })
        };
        self.close_later(file);
        let fingerprint: Fingerprint = match digest {
            Ok(fp) => fp,
            Err(ReadError::TooLarge { .. }) => {
                return self.problem(
                    ProblemKind::Unreadable,
                    format!(
                        "{} grew while it was read: read again at the next change",
                        shown(&shown_as)
                    ),
                );
            }
            Err(e) => {
                return self.problem(
                    ProblemKind::Unreadable,
                    format!("cannot read {}: {e}", shown(&shown_as)),
                );
            }
        };
        self.saw_ctime(&md);
        self.files.push(FileEntry {
            path: shown_as,
            real_path: real,
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode() & 0o7777,
            empty: md.len() == 0,
            fingerprint,
        });
    }
}
