//! A process's environment, for apps that took a Secret's keys as environment variables
//! (`envFrom`): read from `/proc/<pid>/environ` into a buffer that is wiped afterwards, and turned
//! into keyed fingerprints of the variables asked for, so that they can be compared with the
//! fingerprints of the files. No value ever leaves this module.
//!
//! Reading another process's environment needs what `ptrace` needs to read it: the same uid (and
//! a dumpable process), or `CAP_SYS_PTRACE`.

use crate::scan::fingerprint::{Fingerprint, FingerprintKey};

/// Largest environment read (the kernel's own limit on exec arguments is larger, but an
/// environment of more than this is not one Kubernetes made).
pub(crate) const ENVIRON_LIMIT: usize = 1024 * 1024;

/// The keyed fingerprints of the variables `names` in the NUL-separated `NAME=value` list `raw`,
/// in the order of `names`; a name that is not set is left out. A variable set twice counts
/// with its first value, as `getenv` reads it.
pub(crate) fn fingerprints(
    raw: &[u8],
    names: &[&str],
    key: &FingerprintKey,
) -> Vec<(String, Fingerprint)> {
    names
        .iter()
        .filter_map(|name| {
            raw.split(|b| *b == 0).find_map(|entry| {
                let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
                Some((name.to_string(), key.digest(value)))
            })
        })
        .collect()
}

/// How an environment compares with a version's keys, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compared {
    /// Keys whose variable holds the file's content.
    pub holding: Vec<String>,
    /// Keys whose variable holds another value.
    pub differing: Vec<String>,
    /// Keys not in the environment.
    pub absent: Vec<String>,
}

/// What a comparison means for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every key it has holds the file's content (at least one key).
    Holds,
    /// Some key holds another value: it runs on an older version.
    Differs,
    /// None of the keys is in its environment: a restart would change nothing.
    Absent,
}

impl Compared {
    /// What the comparison means.
    pub(crate) fn verdict(&self) -> Verdict {
        if !self.differing.is_empty() {
            Verdict::Differs
        } else if self.holding.is_empty() {
            Verdict::Absent
        } else {
            Verdict::Holds
        }
    }
}

/// Why the environment of `shown` (pid `pid`, of uid `uid`) could not be read, and what to do.
pub(crate) fn unreadable(shown: &str, pid: i32, uid: &str, e: &std::io::Error) -> String {
    format!(
        "cannot read the environment of {shown} (/proc/{pid}/environ: {e}): the sidecar must run \
         as the app's runAsUser ({uid}) or have CAP_SYS_PTRACE to compare it with the files"
    )
}

/// Compares the environment `raw` with `keys` (name, keyed fingerprint of the file's content).
pub(crate) fn compare(
    raw: &[u8],
    keys: &[(String, Fingerprint)],
    key: &FingerprintKey,
) -> Compared {
    let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
    let found = fingerprints(raw, &names, key);
    let mut c = Compared::default();
    for (name, fp) in keys {
        match found.iter().find(|(n, _)| n == name) {
            Some((_, v)) if v == fp => c.holding.push(name.clone()),
            Some(_) => c.differing.push(name.clone()),
            None => c.absent.push(name.clone()),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_asked_for_are_fingerprinted_and_others_ignored() {
        let key = FingerprintKey::new(b"k".to_vec());
        let raw = b"PATH=/bin\0TOKEN=abc\0TOKEN_FILE=/t\0EMPTY=\0TOKEN=second\0";
        let got = fingerprints(raw, &["TOKEN", "EMPTY", "ABSENT", "TOKEN_"], &key);
        assert_eq!(
            got,
            vec![
                ("TOKEN".to_string(), key.digest(b"abc")),
                ("EMPTY".to_string(), key.digest(b"")),
            ]
        );
    }
}
