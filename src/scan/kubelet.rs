//! Kubelet's atomic-writer layout: a volume is a directory whose `..data` symlink names the
//! timestamped directory holding the current version, swapped in one rename. The version is read
//! through the one directory `..data` named when it was resolved (recorded, with the swap's time),
//! so that a scan can tell afterwards whether the volume swapped while it was read (a *torn*
//! read, read again by the group). `..data` is followed only into its volume (kubelet points it
//! at a sibling) unless `--follow-external-symlinks` says otherwise.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::scanning::Scanning;
use super::{KUBELET_DATA, Problem, ProblemKind};
use crate::text::path as shown;

impl Scanning<'_> {
    /// Whether a kubelet volume swapped while it was read: two reads of one `..data` named
    /// different directories, or, when the version looks incomplete or inconsistent (kubelet
    /// removes the old directory right after the swap), `..data` names another one now.
    pub(super) fn torn(&self, inconsistent: bool) -> bool {
        let mut first: HashMap<&PathBuf, &PathBuf> = HashMap::with_capacity(self.resolved.len());
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

    /// The resolved `..data` directory of a kubelet volume (`None`: not one), recording the
    /// swap's time. `..data` must stay inside the volume: kubelet points it at a sibling.
    pub(super) fn kubelet_data(&mut self, dir: &Path) -> Result<Option<PathBuf>, Problem> {
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
