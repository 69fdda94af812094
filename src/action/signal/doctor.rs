//! The doctor's checks of a signal target: the process is found, handles the signal, may be
//! signalled by the sidecar, and is fresh against the content.

use std::time::SystemTime;

use super::send::{START_MARGIN, is_restart_signal};
use super::{AppliedWhen, SignalConfig};
use crate::doctor::report::{Check, CheckName, DaemonView, ts};
use crate::process::identity::Sidecar;
use crate::process::select::{self, FindError};
use crate::process::workers::{self, Count, Reference};
use crate::process::{ProcFs, ProcInfo};
use crate::scan::Scan;

/// The checks of the target `name`, and the pid of the (first) process found.
pub(crate) fn checks(
    name: &str,
    s: &SignalConfig,
    app_uid: Option<u32>,
    scan: &Scan,
    sidecar: &Sidecar,
    daemon: &DaemonView,
    procfs: &ProcFs,
) -> (Vec<Check>, Option<i32>) {
    let found = select::find_excluding(procfs, &s.selector, s.all, app_uid, daemon.pid);
    let procs: Vec<ProcInfo> = match found {
        Ok(p) => p,
        Err(FindError::NotFound) => {
            let sel = s.selector.describe();
            return (
                vec![Check::new(
                    CheckName::Process,
                    false,
                    format!(
                        "no process matches {sel}: is the app running, and does the pod set shareProcessNamespace: true?"
                    ),
                )],
                None,
            );
        }
        Err(e) => {
            return (
                vec![Check::new(CheckName::Process, false, e.to_string())],
                None,
            );
        }
    };
    let mut checks = Vec::new();
    let sig = s.signal;
    // One walk of /proc for the workers of every process found (--signal-all finds many).
    let all = procfs.processes();
    for p in &procs {
        let st = procfs.status(p.pid).unwrap_or_default();
        let started = p.start_time();
        checks.push(Check::new(
            CheckName::Process,
            true,
            format!(
                "{} runs as {}:{}, started {}",
                p.shown(),
                st.uid,
                st.gid,
                ts(started)
            ),
        ));
        match sig {
            Some(sig) => checks.extend(sending(sig, p, &st, sidecar)),
            None => checks.push(Check::new(
                CheckName::Signal,
                true,
                "--signal none: nothing is sent; the app's environment is compared with the \
                 files (the environment check)",
            )),
        }
        checks.push(freshness(name, started, scan.content_time, daemon));
        let reload = daemon.workers_reference.get(name).copied();
        checks.extend(workers(s, p, &all, scan.content_time, reload));
    }
    (checks, procs.first().map(|p| p.pid))
}

/// Whether `sig` may be sent to `p` (whose status is `st`): handled, and permitted.
fn sending(
    sig: nix::sys::signal::Signal,
    p: &ProcInfo,
    st: &crate::process::ProcStatus,
    sidecar: &Sidecar,
) -> [Check; 2] {
    let n = sig as i32;
    let handled = if is_restart_signal(sig) {
        Check::new(
            CheckName::Signal,
            true,
            format!(
                "{} is sent to end the process (Kubernetes restarts the container)",
                sig.as_str()
            ),
        )
    } else if st.ignores(n) {
        Check::new(
            CheckName::Signal,
            false,
            format!(
                "pid {} ignores {}: it will never reload on it; check --signal",
                p.pid,
                sig.as_str()
            ),
        )
    } else if !st.catches(n) {
        Check::new(
            CheckName::Signal,
            false,
            format!(
                "pid {} has no {} handler: the signal would end it (the daemon waits instead); check that the app reloads on {}",
                p.pid,
                sig.as_str(),
                sig.as_str()
            ),
        )
    } else {
        Check::new(
            CheckName::Signal,
            true,
            format!("{} is handled", sig.as_str()),
        )
    };
    let why = if sidecar.identity.uid == 0 {
        "the sidecar runs as root"
    } else if sidecar.identity.uid == st.uid {
        "same uid"
    } else {
        "CAP_KILL"
    };
    let permitted = if sidecar.may_signal(st.uid) {
        Check::new(
            CheckName::Permission,
            true,
            format!("may signal it ({why})"),
        )
    } else {
        Check::new(
            CheckName::Permission,
            false,
            format!(
                "the sidecar (uid {}) may not signal uid {}: run it as the app's runAsUser ({}) or add the KILL capability",
                sidecar.identity.uid, st.uid, st.uid
            ),
        )
    };
    [handled, permitted]
}

/// The workers (children) of `p` that started before the content changed (or before the reload
/// the running daemon sent for it, `reload`): with
/// `--applied-when workers-replaced` a problem (they hold the older version); otherwise said,
/// as an app that reloads in place (PostgreSQL) updates its workers itself. Nothing for a
/// process without workers under the default.
fn workers(
    s: &SignalConfig,
    p: &ProcInfo,
    all: &std::io::Result<Vec<ProcInfo>>,
    content: Option<SystemTime>,
    reload: Option<SystemTime>,
) -> Option<Check> {
    let replaced = s.applied_when == AppliedWhen::WorkersReplaced;
    let children = match all {
        Ok(all) => workers::children_among(all, &[p.pid]),
        Err(e) => {
            return Some(Check::new(
                CheckName::Workers,
                false,
                format!(
                    "cannot list the processes to find the workers of {}: {e}",
                    p.shown()
                ),
            ));
        }
    };
    if children.is_empty() && !replaced {
        return None;
    }
    let Some(changed) = content else {
        return Some(Check::new(
            CheckName::Workers,
            true,
            format!("{} worker(s); no content yet", children.len()),
        ));
    };
    let c = Count::of(
        &children,
        Reference {
            changed,
            margin: START_MARGIN,
            sent: reload,
        },
    );
    let since = match reload.filter(|r| *r > changed) {
        Some(r) => format!(
            "the reload the daemon sent for the current content ({})",
            ts(r)
        ),
        None => format!("the current content appeared ({})", ts(changed)),
    };
    if c.older_count == 0 {
        return Some(Check::new(
            CheckName::Workers,
            true,
            format!(
                "{} worker(s) of {}, every one started after {since}",
                c.total,
                p.shown(),
            ),
        ));
    }
    let consequence = if replaced {
        "they hold the older version (--applied-when workers-replaced): they keep connections \
         open, or did not take the app's reload"
    } else {
        "information: an app that reloads in place (PostgreSQL) updates them itself; one that \
         reloads by replacing its workers (nginx, HAProxy, gunicorn) leaves them the older \
         version until they exit (--applied-when workers-replaced waits for that)"
    };
    Some(Check::new(
        CheckName::Workers,
        !replaced,
        format!(
            "{} of {} worker(s) of {} started before {since}: {}; {consequence}",
            c.older_count,
            c.total,
            p.shown(),
            c.named()
        ),
    ))
}

/// Whether the process that started at `started` holds the content of `content`.
fn freshness(
    name: &str,
    started: SystemTime,
    content: Option<SystemTime>,
    daemon: &DaemonView,
) -> Check {
    let Some(content) = content else {
        return Check::new(CheckName::Freshness, true, "no content yet");
    };
    if started > content + START_MARGIN {
        return Check::new(
            CheckName::Freshness,
            true,
            format!(
                "started after the current content appeared ({}): it holds it",
                ts(content)
            ),
        );
    }
    if started + START_MARGIN > content {
        return Check::new(
            CheckName::Freshness,
            true,
            format!(
                "started within {} ms of the current content ({}): cannot tell from the start time which one it holds",
                START_MARGIN.as_millis(),
                ts(content)
            ),
        );
    }
    match daemon.stale.get(name) {
        Some(false) => Check::new(
            CheckName::Freshness,
            true,
            format!(
                "started before the current content appeared ({}); the running daemon reports it reloaded it",
                ts(content)
            ),
        ),
        Some(true) => Check::new(
            CheckName::Freshness,
            false,
            format!(
                "started before the current content appeared ({}) and the running daemon reports it stale: see /status",
                ts(content)
            ),
        ),
        None => Check::new(
            CheckName::Freshness,
            false,
            format!(
                "started before the current content appeared ({}) and no running daemon reports a reload since: likely stale",
                ts(content)
            ),
        ),
    }
}
