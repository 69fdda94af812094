//! Mount tables (`/proc/<pid>/mountinfo`): is a watched file a single-file mount?
//!
//! A Secret mounted with `subPath` is a bind mount of one file taken from the volume's version
//! directory at container start; kubelet never updates it, so the app keeps that version until it
//! restarts however often the Secret rotates. In the mount table such a mount is a file mounted on
//! its own, and when it comes from a kubelet volume its source path (the `root` field) runs through
//! a timestamped version directory (`/..2026_11_24_06_00_00.123456789/`).

use std::path::{Path, PathBuf};

/// One line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path inside the source filesystem that is mounted.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// The device (major, minor), as `stat` gives it for files on it.
    pub dev: (u32, u32),
}

impl Mount {
    /// Whether the mounted source lies in a kubelet version directory (a frozen subPath mount).
    pub fn from_kubelet_version(&self) -> bool {
        self.root.contains("/..20")
    }
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (major, minor) = fields.nth(2)?.split_once(':')?;
            let dev = (major.parse().ok()?, minor.parse().ok()?);
            let root = unescape(fields.next()?);
            let mount_point = PathBuf::from(unescape(fields.next()?));
            let fstype = fields.skip_while(|f| *f != "-").nth(1)?.to_string();
            Some(Mount {
                root,
                mount_point,
                fstype,
                dev,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount whose mount point is `path`, if `path` is a file mounted on its own.
pub(crate) fn single_file_mount<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    if !path.is_file() {
        return None;
    }
    mounts.iter().rev().find(|m| m.mount_point == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    512 498 0:61 /..2026_11_24_06_00_00.123456789/tls.crt /etc/nginx/tls.crt ro,relatime - tmpfs tmpfs rw\n\
                    600 498 0:62 /a\\040b /x\\040y rw - tmpfs t rw\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt2"));
        assert_eq!(m[0].fstype, "ext3");
        assert!(!m[0].from_kubelet_version());
        assert!(m[1].from_kubelet_version());
        assert_eq!(m[2].root, "/a b");
        assert_eq!(m[2].mount_point, PathBuf::from("/x y"));
        assert_eq!((m[0].dev, m[1].dev), ((98, 0), (0, 61)));
    }
}
