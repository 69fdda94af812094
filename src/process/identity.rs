//! Who the app runs as, and who the sidecar runs as.
//!
//! The app's identity is read from its process (`/proc/<pid>/status`: the filesystem uid/gid, the
//! ones file access is checked against, and the supplementary groups, which hold the pod's
//! `fsGroup`) or, without a process target, declared with `--app-uid`/`--app-gid`. When both are
//! there and disagree, `runAsUser`/`runAsGroup` changed in one place and not the other: that is
//! drift, reported as such.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::select::{FindError, Selector};
use super::tracker::{TrackError, Tracker};
use super::{ProcFs, ProcInfo, ProcStatus};

/// CAP_DAC_OVERRIDE: bypasses file permission checks.
pub(crate) const CAP_DAC_OVERRIDE: u32 = 1;
/// CAP_DAC_READ_SEARCH: bypasses read and search permission checks.
pub(crate) const CAP_DAC_READ_SEARCH: u32 = 2;
/// CAP_KILL: bypasses permission checks for sending signals.
pub(crate) const CAP_KILL: u32 = 5;

/// A uid, a gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

impl Identity {
    /// Whether `gid` is the primary group or a supplementary one.
    pub(crate) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)?;
        let extra: Vec<String> = self
            .groups
            .iter()
            .filter(|g| **g != self.gid)
            .map(u32::to_string)
            .collect();
        if !extra.is_empty() {
            write!(f, " (groups {})", extra.join(","))?;
        }
        Ok(())
    }
}

/// The app's identity and where it was learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppIdentity {
    /// The identity file access is checked against.
    #[serde(flatten)]
    pub identity: Identity,
    /// `pid 42 (nginx)` or `--app-uid/--app-gid`.
    pub source: String,
}

/// The sidecar's own identity and the capabilities that matter here.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    /// uid, gid, groups.
    #[serde(flatten)]
    pub identity: Identity,
    /// May signal processes of other uids.
    pub cap_kill: bool,
    /// May read files regardless of their mode.
    pub cap_dac_override: bool,
    /// How signals are sent (pidfds, or `kill(2)` where they are refused).
    pub signal_delivery: super::handle::Delivery,
}

impl Sidecar {
    /// This process, from `/proc/self/status`.
    pub fn current(procfs: &ProcFs) -> Sidecar {
        let st = procfs.status(std::process::id() as i32).unwrap_or_default();
        Sidecar {
            identity: Identity {
                uid: st.fsuid,
                gid: st.fsgid,
                groups: st.groups.clone(),
            },
            cap_kill: has_cap(&st, CAP_KILL),
            cap_dac_override: has_cap(&st, CAP_DAC_OVERRIDE) || has_cap(&st, CAP_DAC_READ_SEARCH),
            signal_delivery: super::handle::delivery().clone(),
        }
    }

    /// Whether this sidecar may signal a process running as `uid`.
    pub(crate) fn may_signal(&self, uid: u32) -> bool {
        self.identity.uid == 0 || self.identity.uid == uid || self.cap_kill
    }
}

fn has_cap(st: &ProcStatus, cap: u32) -> bool {
    st.cap_eff & (1u64 << cap) != 0
}

/// What resolving the app's identity found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The identity to check access against; `None` when unknown.
    pub app: Option<AppIdentity>,
    /// Declared and actual identity differ: what and how.
    pub drift: Option<String>,
}

/// Finds a group's app identity, scan after scan, cheaply: the process found last time is
/// followed while it lives (see `Tracker`). A lookup that reads the app's pid file (which may
/// live on a filesystem that stalls) runs on a worker thread, and the identity found last is
/// used until it returns: the group never waits on it.
pub(crate) struct IdentityResolver {
    /// From `--app-uid`/`--app-gid`/`--app-groups`.
    declared: Option<Identity>,
    /// The process of the group's first signal target; `None` while a lookup has it.
    tracker: Option<Box<Tracker>>,
    /// Where a lookup on a worker leaves the tracker and what it found.
    away: Option<Arc<Mutex<Option<Returned>>>>,
    /// What the last lookup found.
    last: Option<(ProcInfo, ProcStatus)>,
}

/// A lookup back from a worker: the tracker, and the process it found.
type Returned = (Box<Tracker>, Option<(ProcInfo, ProcStatus)>);

impl IdentityResolver {
    /// A resolver from the declared identity and the group's process selector (either optional).
    pub(crate) fn new(
        declared: Option<Identity>,
        selector: Option<Selector>,
        procfs: ProcFs,
    ) -> Self {
        let uid = declared.as_ref().map(|d| d.uid);
        IdentityResolver {
            declared,
            tracker: selector.map(|s| Box::new(Tracker::new(procfs, s, false, uid))),
            away: None,
            last: None,
        }
    }

    /// The app's identity now.
    pub(crate) fn resolve(&mut self) -> Resolved {
        let Some((p, st)) = self.process() else {
            return Resolved {
                app: self.declared.clone().map(|identity| AppIdentity {
                    identity,
                    source: "--app-uid/--app-gid".into(),
                }),
                drift: None,
            };
        };
        let drift = self.declared.as_ref().and_then(|d| {
            (d.uid != st.uid || d.gid != st.gid).then(|| {
                format!(
                    "--app-uid/--app-gid say {}:{} but {} runs as {}:{}: runAsUser/runAsGroup changed in \
                     one place and not the other",
                    d.uid, d.gid, p.shown(), st.uid, st.gid
                )
            })
        });
        let identity = Identity {
            uid: st.fsuid,
            gid: st.fsgid,
            groups: st.groups,
        };
        Resolved {
            app: Some(AppIdentity {
                identity,
                source: p.shown(),
            }),
            drift,
        }
    }

    fn process(&mut self) -> Option<(ProcInfo, ProcStatus)> {
        if let Some(slot) = &self.away {
            let back = crate::lock(slot).take();
            match back {
                Some((tracker, found)) => {
                    self.tracker = Some(tracker);
                    self.last = found;
                    self.away = None;
                }
                // Still away: what was found last.
                None => return self.last.clone(),
            }
        }
        let mut tracker = self.tracker.take()?;
        if !tracker.needs_files() {
            self.last = look(&mut tracker);
            self.tracker = Some(tracker);
            return self.last.clone();
        }
        let Ok(worker) = crate::lane::reserve() else {
            // No thread now: looked at with the next scan.
            self.tracker = Some(tracker);
            return self.last.clone();
        };
        let slot = Arc::new(Mutex::new(None));
        let back = slot.clone();
        worker.give(Box::new(move || {
            let found = look(&mut tracker);
            *crate::lock(&back) = Some((tracker, found));
        }));
        self.away = Some(slot);
        self.last.clone()
    }
}

/// The app's one process and its status, through `tracker`.
fn look(tracker: &mut Tracker) -> Option<(ProcInfo, ProcStatus)> {
    let mut found = match tracker.processes() {
        Ok(found) => found,
        // Candidates are the processes of the declared uid; when the one match runs as
        // another uid, that is the app whose runAsUser drifted.
        Err(TrackError::Find(FindError::OtherIdentity { seen, .. })) if seen.len() == 1 => {
            tracker.open(&[seen[0].0.clone()]).ok()?
        }
        Err(_) => return None,
    };
    let (h, st) = found.pop()?;
    let info = h.info.clone();
    tracker.keep(vec![h]);
    Some((info, st))
}
