//! The doctor's check of an app that took its keys as environment variables: its process's
//! environment against the files, by keyed fingerprint.

use crate::config::GroupConfig;
use crate::doctor::report::{Check, CheckName};
use crate::process::ProcFs;
use crate::process::environ::{self, Verdict};
use crate::scan::Scan;

/// The app's environment against the files (`--consumed-as env`).
pub(crate) fn check(
    pid: i32,
    g: &GroupConfig,
    scan: &Scan,
    procfs: &ProcFs,
    key: &crate::scan::fingerprint::FingerprintKey,
) -> Check {
    let keys = crate::group::env_keys(g, scan).unwrap_or_default();
    let opened = procfs
        .stat(pid)
        .ok()
        .and_then(|info| crate::process::handle::ProcessHandle::open(procfs, &info).ok());
    let Some(mut h) = opened else {
        return Check::new(CheckName::Environment, false, format!("pid {pid} exited"));
    };
    let raw = match h.environ() {
        Ok(raw) => raw,
        Err(e) => {
            let uid = h
                .status()
                .map(|s| s.uid.to_string())
                .unwrap_or_else(|_| "?".into());
            let why = environ::unreadable(&h.info.shown(), pid, &uid, &e);
            return Check::new(CheckName::Environment, false, why);
        }
    };
    let c = environ::compare(&raw, &keys, key);
    let names = |v: &[String]| v.join(", ");
    match c.verdict() {
        Verdict::Differs => Check::new(
            CheckName::Environment,
            false,
            format!(
                "pid {pid} holds another value of {} than the files: the app runs on an older \
                 version, and only a restart of its container applies the current one",
                names(&c.differing)
            ),
        ),
        Verdict::Absent => Check::new(
            CheckName::Environment,
            false,
            format!(
                "none of the keys ({}) is in the environment of pid {pid}: is the app given them \
                 with envFrom?",
                names(&c.absent)
            ),
        ),
        Verdict::Holds => Check::new(
            CheckName::Environment,
            true,
            format!(
                "pid {pid}'s environment holds the content on disk ({})",
                names(&c.holding)
            ),
        ),
    }
}
