//! Can the app read a file? Ownership and mode against the app's uid and groups.
//!
//! A file is readable when every directory on its resolved path can be searched (`x`) and the
//! file itself read (`r`), each by the class the app falls in: owner when the uid matches, else
//! group when its primary or a supplementary group matches, else other (a matching owner with no
//! read bit is not rescued by the group bits: that is how the kernel decides too). uid 0 is exempt
//! only when the app is root. POSIX ACLs and capabilities other than root's are not considered.
//!
//! Directories above a volume's mount point are checked as the sidecar sees them; in the app's
//! container they may differ.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::process::identity::Identity;
use crate::scan::FileEntry;
use crate::text;

/// Permission bits of one class.
const READ: u32 = 4;
const SEARCH: u32 = 1;

/// Whether the app can read a file, why, and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The app can read it.
    pub readable: bool,
    /// Why (`readable as group`, or what blocks it).
    pub reason: String,
    /// A concrete fix, when it is not readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Checks files against one identity; directory lookups are cached for one scan.
pub(crate) struct Checker<'a> {
    /// The app's identity.
    app: &'a Identity,
    /// Owner, group and mode of directories seen, or `None` when they cannot be stat'ed.
    dirs: HashMap<PathBuf, Option<(u32, u32, u32)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Root,
    Owner,
    Group,
    Other,
}

impl Class {
    fn of(app: &Identity, uid: u32, gid: u32) -> Class {
        if app.uid == 0 {
            Class::Root
        } else if app.uid == uid {
            Class::Owner
        } else if app.in_group(gid) {
            Class::Group
        } else {
            Class::Other
        }
    }

    fn allows(self, mode: u32, bit: u32) -> bool {
        match self {
            Class::Root => true,
            Class::Owner => mode >> 6 & bit != 0,
            Class::Group => mode >> 3 & bit != 0,
            Class::Other => mode & bit != 0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Root => "root",
            Class::Owner => "owner",
            Class::Group => "group",
            Class::Other => "other",
        }
    }
}

impl<'a> Checker<'a> {
    /// A checker for `app`.
    pub(crate) fn new(app: &'a Identity) -> Self {
        Checker {
            app,
            dirs: HashMap::new(),
        }
    }

    /// The verdict for one file of a version.
    pub(crate) fn file(&mut self, f: &FileEntry) -> Verdict {
        let resolved = fs::canonicalize(&f.real_path).unwrap_or_else(|_| f.real_path.clone());
        let mut ancestors: Vec<&Path> = resolved.ancestors().skip(1).collect();
        ancestors.reverse();
        for dir in ancestors {
            let Some((uid, gid, mode)) = self.dir(dir) else {
                continue;
            };
            let class = Class::of(self.app, uid, gid);
            if !class.allows(mode, SEARCH) {
                return Verdict {
                    readable: false,
                    reason: format!(
                        "directory {} is {uid}:{gid} mode {mode:04o}; the app runs as {} and cannot enter it",
                        text::path(dir),
                        self.app
                    ),
                    hint: Some(format!(
                        "give the directory search permission for the app (chmod {}+x {}){}",
                        match class {
                            Class::Owner => "u",
                            Class::Group => "g",
                            _ => "o",
                        },
                        text::path(dir),
                        if class == Class::Other {
                            format!(", or make the app a member of group {gid}")
                        } else {
                            String::new()
                        }
                    )),
                };
            }
        }
        let class = Class::of(self.app, f.uid, f.gid);
        if class.allows(f.mode, READ) {
            let reason = if class == Class::Root {
                "readable: the app runs as root".to_string()
            } else {
                format!("readable as {}", class.name())
            };
            return Verdict {
                readable: true,
                reason,
                hint: None,
            };
        }
        let name = f
            .path
            .file_name()
            .map(|n| text::bytes(std::os::unix::ffi::OsStrExt::as_bytes(n)))
            .unwrap_or_default();
        let hint = match class {
            Class::Owner => {
                "set the volume's defaultMode (or the item's mode) to 0400 or wider".to_string()
            }
            Class::Group => {
                "set the volume's defaultMode (or the item's mode) to 0440, so the group can read"
                    .to_string()
            }
            _ => format!(
                "give the pod securityContext.fsGroup: {} (with defaultMode 0440) or defaultMode 0444",
                self.app.gid
            ),
        };
        Verdict {
            readable: false,
            reason: format!(
                "{name} is {}:{} mode {:04o}; the app runs as {}",
                f.uid, f.gid, f.mode, self.app
            ),
            hint: Some(hint),
        }
    }

    fn dir(&mut self, dir: &Path) -> Option<(u32, u32, u32)> {
        *self.dirs.entry(dir.to_path_buf()).or_insert_with(|| {
            fs::metadata(dir)
                .ok()
                .map(|md| (md.uid(), md.gid(), md.mode() & 0o7777))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::fingerprint::FingerprintKey;

    fn entry(uid: u32, gid: u32, mode: u32) -> FileEntry {
        let fingerprint = FingerprintKey::new(b"k".to_vec()).digest(b"");
        FileEntry {
            path: "/v/tls.key".into(),
            real_path: "/".into(),
            uid,
            gid,
            mode,
            empty: true,
            fingerprint,
        }
    }

    fn app(uid: u32, gid: u32, groups: &[u32]) -> Identity {
        Identity {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn classes_decide_like_the_kernel() {
        let cases = [
            // (file uid, gid, mode), app (uid, gid, groups), readable
            ((0, 0, 0o600), (1001, 1001, vec![]), false),
            ((0, 0, 0o600), (0, 0, vec![]), true),
            ((0, 2000, 0o640), (1001, 1001, vec![2000]), true),
            ((0, 2000, 0o604), (1001, 1001, vec![2000]), false),
            ((1001, 0, 0o044), (1001, 1001, vec![0]), false),
            ((0, 0, 0o644), (1001, 1001, vec![]), true),
        ];
        for ((u, g, m), (au, ag, groups), want) in cases {
            let a = app(au, ag, &groups);
            let v = Checker::new(&a).file(&entry(u, g, m));
            assert_eq!(v.readable, want, "file {u}:{g} {m:o} for {a}: {v:?}");
        }
    }

    #[test]
    fn hint_names_the_fix() {
        let a = app(1001, 1001, &[]);
        let v = Checker::new(&a).file(&entry(0, 0, 0o600));
        assert_eq!(
            v.reason,
            "tls.key is 0:0 mode 0600; the app runs as 1001:1001"
        );
        assert!(v.hint.unwrap().contains("fsGroup: 1001"));
    }
}
