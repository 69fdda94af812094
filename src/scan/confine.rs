//! Symlinks kept inside what is watched. A symlink found in a watched directory is followed only
//! to a target inside that directory; the directory a kubelet volume's `..data` names must be one
//! of the volume's own, not a second link out of it (`..data` itself is checked where it is
//! resolved, in `kubelet`); and no directory is walked twice, so a symlink loop ends where it
//! comes back. What breaks a rule is skipped or held back and reported, never opened or walked:
//! `--follow-external-symlinks` lifts the first two rules, never the third.

use std::fs;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use super::ProblemKind;
use super::scanning::Scanning;
use crate::text::path as shown;

impl Scanning<'_> {
    /// Whether `data`, the directory `..data` names in the volume `volume`, is one of the
    /// volume's own directories and not a symbolic link out of it (reported otherwise).
    pub(super) fn own_directory(&mut self, data: &Path, volume: &Path) -> bool {
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

    /// Whether the symlink `real`, an entry of a directory being walked (`seen` as the app sees
    /// it), leads inside `root`, the watched directory (skipped and reported otherwise).
    /// `root_real`: `root` resolved, once per directory, at its first symlink.
    pub(super) fn link_inside(
        &mut self,
        real: &Path,
        seen: &Path,
        root: &Path,
        root_real: &mut Option<PathBuf>,
    ) -> bool {
        let root_real =
            root_real.get_or_insert_with(|| fs::canonicalize(root).unwrap_or(root.to_path_buf()));
        match fs::canonicalize(real) {
            Ok(target) if target.starts_with(&*root_real) => true,
            Ok(_) => {
                self.skip(format!(
                    "{}: a symlink to a target outside {}, skipped (--follow-external-symlinks \
                     follows it)",
                    shown(seen),
                    shown(root)
                ));
                false
            }
            Err(e) => {
                self.skip(format!(
                    "{}: a symlink that does not resolve ({e}), skipped",
                    shown(seen)
                ));
                false
            }
        }
    }

    /// Records a directory about to be walked (its identity `id`, or its descriptor's); false
    /// (and reported) when it was walked before: a symlink loop.
    pub(super) fn enter(
        &mut self,
        dir: BorrowedFd<'_>,
        id: Option<(u64, u64)>,
        shown_as: &Path,
    ) -> bool {
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
