//! What each target applied, kept across sidecar restarts (`--state-file`, on an emptyDir).
//!
//! Without it, a restarted sidecar can only guess from process start times: an app older than the
//! content might hold an older version, so it is reloaded once (safe, maybe redundant), and an HTTP
//! target is assumed to hold what is on disk (a rotation that happened while the sidecar was down
//! would be missed). With it, the restarted sidecar knows which version it last delivered to which
//! process: it reloads exactly the targets that do not hold the content on disk.
//!
//! The file holds keyed fingerprints (never content) and, unless `--fingerprint-key-file` gives a
//! key, the random key they are computed with, so that fingerprints compare across restarts. It is
//! written with mode 0600, by rename, after each successful action: a SIGKILL in the few
//! microseconds between an action and its record costs one redundant reload, never a missed one.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::files::{self, ReadError};
use crate::lock;
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};
use crate::text;

/// Largest state file read.
const LIMIT: u64 = 4 * 1024 * 1024;
/// Shortest key taken from a state file: a shorter one (an empty one makes the fingerprints
/// plain digests) is replaced.
const MIN_KEY_BYTES: usize = 16;

/// What a target applied last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Applied {
    /// Full keyed fingerprint, hex.
    pub fingerprint: String,
    /// The process it was delivered to (signal targets): pid and start time in clock ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<(i32, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    /// Hex key of the fingerprints, when the daemon drew it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// By target name.
    #[serde(default)]
    targets: BTreeMap<String, Applied>,
}

/// The state file and its content.
#[derive(Debug)]
pub(crate) struct StateFile {
    /// Where it lives.
    path: PathBuf,
    /// Its content.
    doc: Mutex<Document>,
}

impl StateFile {
    /// Loads `path` (a missing or unreadable file starts empty, with a warning for the latter).
    pub(crate) fn load(path: &Path) -> StateFile {
        let doc = match files::open_regular(path).and_then(|(f, md)| {
            let bytes = files::read_open(&f, &md, LIMIT)?;
            Ok((bytes, md))
        }) {
            Ok((bytes, md)) => {
                let mut doc: Document = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::warn!(path = %text::path(path), error = %e, "state file unreadable: starting without it");
                    Document::default()
                });
                // A key others could read (or have written) is no key: the fingerprints in
                // /status and the logs could be tested against guesses with it.
                use std::os::unix::fs::MetadataExt;
                let own = md.uid() == nix::unistd::geteuid().as_raw();
                if doc.key.is_some() && (!own || md.mode() & 0o077 != 0) {
                    tracing::warn!(path = %text::path(path), uid = md.uid(), mode = format!("{:04o}", md.mode() & 0o7777),
                        "the state file is not the sidecar's own with mode 0600: its key and records are not used; starting with a new key");
                    doc = Document::default();
                }
                doc
            }
            Err(ReadError::NotFound) => Document::default(),
            Err(e) => {
                tracing::warn!(path = %text::path(path), error = %e, "cannot read the state file: starting without it");
                Document::default()
            }
        };
        StateFile {
            path: path.to_path_buf(),
            doc: Mutex::new(doc),
        }
    }

    /// The key recorded by an earlier run, or `key` (recorded now) when there is none.
    pub(crate) fn key_or(&self, key: &FingerprintKey) -> FingerprintKey {
        let mut doc = lock(&self.doc);
        match doc.key.as_deref().map(unhex) {
            Some(Some(k)) if k.len() >= MIN_KEY_BYTES => return FingerprintKey::new(k),
            Some(_) => {
                tracing::warn!(path = %text::path(&self.path),
                    "the state file's key is shorter than {MIN_KEY_BYTES} bytes or malformed: replaced by a new one (its records are not used)");
                doc.targets.clear();
            }
            None => {}
        }
        doc.key = Some(hex(key.bytes()));
        drop(doc);
        self.save_now();
        key.clone()
    }

    /// What `target` applied last, per an earlier run.
    pub(crate) fn applied(&self, target: &str) -> Option<Applied> {
        lock(&self.doc).targets.get(target).cloned()
    }

    /// Records that `target` applied `fp` (delivered to `process`, for signal targets); the
    /// file is written on a worker thread, so a slow disk delays no other task.
    pub(crate) async fn remember(
        self: &Arc<Self>,
        target: &str,
        fp: &Fingerprint,
        process: Option<(i32, u64)>,
    ) {
        let applied = Applied {
            fingerprint: hex(fp.bytes()),
            process,
        };
        {
            let mut doc = lock(&self.doc);
            if doc.targets.get(target) == Some(&applied) {
                return;
            }
            doc.targets.insert(target.to_string(), applied);
        }
        let me = self.clone();
        if let Err(e) = crate::lane::run_detached(move || me.save_now()).await {
            tracing::warn!(path = %text::path(&self.path), "cannot write the state file: {e}");
        }
    }

    fn save_now(&self) {
        let text = match serde_json::to_vec(&*lock(&self.doc)) {
            Ok(t) => t,
            Err(e) => return tracing::warn!(error = %e, "cannot encode the state file"),
        };
        let tmp = self.path.with_extension("tmp");
        // Created by this write, never one someone else left there for the daemon to fill
        // (it would keep its owner and mode: the key would be theirs to read), never through a
        // symlink, never blocking on a FIFO put in its place.
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&tmp)
        };
        let written = match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => create(),
        }
        .and_then(|mut f| io::Write::write_all(&mut f, &text))
        .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = &written {
            tracing::warn!(path = %text::path(&self.path), error = %e,
                "cannot write the state file: a restarted sidecar may repeat or miss a reload");
        }
        state_file_written(
            written.map_err(|e| format!("cannot write {}: {e}", text::path(&self.path))),
        );
    }
}

/// Whether a record says `fp` was applied.
pub(crate) fn same(applied: &Applied, fp: &Fingerprint) -> bool {
    applied.fingerprint == hex(fp.bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// State-file writes that failed, and the last failure (when, what): process-wide, like the one
/// state file (recorded here; `/status` and the metrics show them).
static STATE_FILE: Mutex<(u64, Option<(std::time::SystemTime, String)>)> = Mutex::new((0, None));

/// Records a state-file write: `Err(why)` when it failed.
pub(crate) fn state_file_written(result: Result<(), String>) {
    let mut s = lock(&STATE_FILE);
    match result {
        Ok(()) => s.1 = None,
        Err(why) => {
            s.0 += 1;
            s.1 = Some((std::time::SystemTime::now(), why));
        }
    }
}

/// Failed state-file writes so far, and the last one while it is the latest write.
pub(crate) fn state_file_failures() -> (u64, Option<(std::time::SystemTime, String)>) {
    lock(&STATE_FILE).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reload_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let p = Arc::new(StateFile::load(&path));
        let key = p.key_or(&FingerprintKey::new(vec![7; 32]));
        let fp = key.digest(b"content");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(p.remember("signal:nginx", &fp, Some((42, 1000))));
        let again = StateFile::load(&path);
        let key2 = again.key_or(&FingerprintKey::new(vec![9; 32]));
        let fp2 = key2.digest(b"content");
        assert_eq!(fp, fp2, "the recorded key is reused");
        let a = again.applied("signal:nginx").unwrap();
        assert!(same(&a, &fp));
        assert_eq!(a.process, Some((42, 1000)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("content"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
