//! `secret-reloader kubelet-write` (hidden): one new version of a volume directory, written by
//! [`AtomicWriter`] exactly as kubelet's atomic writer updates a Secret or ConfigMap volume. The CI
//! scripts (scripts/ci-*) rotate their volumes with it, so that they exercise the daemon against
//! the same sequence of filesystem operations as the tests and the demo.
//!
//! `secret-reloader kubelet-write --dir DIR [--gid GID] [--mode MODE] KEY=FILE...`: the content of
//! each FILE becomes the key KEY of the new version, with mode MODE (octal) or else FILE's own
//! mode. With `--gid` (a pod's fsGroup) the files and their version directory belong to that
//! group, and the directory is setgid, as kubelet's ownership pass leaves them. It prints nothing
//! on success, and never a file's content.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::atomic_writer::{AtomicWriter, Key};

/// One new version of a volume, as asked for on the command line.
#[derive(Debug, Clone)]
pub struct Write {
    /// The volume directory (created when missing).
    pub dir: PathBuf,
    /// The pod's fsGroup: the files and their version directory get this group.
    pub gid: Option<u32>,
    /// Octal mode of every file (kubelet's defaultMode); without it, each file's own mode.
    pub mode: Option<String>,
    /// The new version: `KEY=FILE`, each key's name in the volume and the file holding its
    /// content.
    pub keys: Vec<String>,
}

/// Writes the version; returns the exit code (2 for a usage error).
pub fn run(args: Write) -> i32 {
    let keys = match keys(&args) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("kubelet-write: {e}");
            return 2;
        }
    };
    match write(&args, &keys) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kubelet-write: {}: {e}", args.dir.display());
            1
        }
    }
}

/// The keys of the new version, read from their files.
fn keys(args: &Write) -> Result<BTreeMap<String, Key>, String> {
    let mode = match &args.mode {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("--mode {m}: not an octal file mode such as 0644"))?,
        ),
        None => None,
    };
    let mut keys = BTreeMap::new();
    for arg in &args.keys {
        let (key, file) = arg
            .split_once('=')
            .ok_or_else(|| format!("{arg}: want KEY=FILE"))?;
        let path = Path::new(key);
        if key.is_empty()
            || key.starts_with("..")
            || !path.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "{arg}: the key must be a relative path without '..', not starting with '..'"
            ));
        }
        let data = fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let mode = match mode {
            Some(m) => m,
            None => {
                fs::metadata(file)
                    .map_err(|e| format!("cannot read {file}: {e}"))?
                    .permissions()
                    .mode()
                    & 0o7777
            }
        };
        if keys.insert(key.to_string(), Key { data, mode }).is_some() {
            return Err(format!("the key {key} is given twice"));
        }
    }
    Ok(keys)
}

fn write(args: &Write, keys: &BTreeMap<String, Key>) -> std::io::Result<()> {
    let mut writer = AtomicWriter::new(&args.dir);
    if let Some(gid) = args.gid {
        writer = writer.with_group(gid);
    }
    writer.write_keys(keys)?;
    Ok(())
}
