//! Which processes hold an endpoint's sockets: the descriptors of each process
//! (`<pid>/fd/*` naming `socket:[INODE]`) against the inodes `sockets` found.
//!
//! The processes that hold a listening socket are the app's workers, once a holder whose
//! children hold it too is left out (nginx's master keeps its listeners but never accepts); the
//! one that holds a connection's server side is the worker it reached (or, for a server that
//! forks a process per connection, the child of one). Another uid's descriptors cannot be read
//! without `CAP_SYS_PTRACE`: that is said apart from "does not hold it". The walk is bounded:
//! [`PROCESSES`] processes, [`FDS_PER_PROCESS`] descriptors each.

use std::collections::HashSet;
use std::io;

use super::sockets::Found;
use super::{ProcFs, ProcInfo};

/// Most descriptors looked at per process.
pub(crate) const FDS_PER_PROCESS: usize = 65_536;
/// Most processes whose descriptors are looked at.
pub(crate) const PROCESSES: usize = 4_096;

/// Why a process's descriptors could not be looked at.
#[derive(Debug)]
pub(crate) enum FdError {
    /// Another uid's (EACCES, EPERM): only the same uid or `CAP_SYS_PTRACE` may read them.
    Denied,
    /// It exited.
    Gone,
    /// Anything else (not a directory: `--proc-root` is not procfs).
    Other,
}

/// Which of `wanted` the process `pid` holds (each once, in the order of its descriptors; at
/// most [`FDS_PER_PROCESS`] descriptors looked at).
pub(crate) fn holding(
    procfs: &ProcFs,
    pid: i32,
    wanted: &HashSet<u64>,
) -> Result<Vec<u64>, FdError> {
    let classify = |e: io::Error| match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => FdError::Denied,
        Some(libc::ENOENT | libc::ESRCH) => FdError::Gone,
        _ => FdError::Other,
    };
    let dir = procfs.pid_path(pid, "fd");
    let mut out = Vec::new();
    let (mut denied, mut read) = (0, 0);
    for entry in std::fs::read_dir(&dir)
        .map_err(classify)?
        .take(FDS_PER_PROCESS)
    {
        let Ok(entry) = entry else { continue };
        // Root without CAP_SYS_PTRACE lists another uid's descriptors but cannot read them.
        let link = match std::fs::read_link(entry.path()) {
            Ok(l) => l,
            Err(e) => {
                if matches!(classify(e), FdError::Denied) {
                    denied += 1;
                }
                continue;
            }
        };
        read += 1;
        let inode = link
            .to_str()
            .and_then(|l| l.strip_prefix("socket:["))
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|n| n.parse().ok());
        if let Some(inode) = inode
            && wanted.contains(&inode)
            && !out.contains(&inode)
        {
            out.push(inode);
        }
    }
    if read == 0 && denied > 0 {
        return Err(FdError::Denied);
    }
    Ok(out)
}

/// A process whose descriptors could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    /// The process.
    pub info: ProcInfo,
    /// Its real uid, when its `status` could be read.
    pub uid: Option<u32>,
}

/// The processes that hold the listening sockets of an endpoint, and the one that holds a
/// connection's server side.
#[derive(Debug, Clone, Default)]
pub(crate) struct Holders {
    /// Holders of a listening socket none of whose direct children holds one (nginx's master
    /// keeps its listeners but never accepts: its workers do), in pid order.
    pub workers: Vec<ProcInfo>,
    /// The process that holds the accepted socket, when found.
    pub accepted_by: Option<ProcInfo>,
    /// Processes whose descriptors could not be read, in pid order (kernel threads left out).
    pub unreadable: Vec<Unreadable>,
    /// Processes left unread past [`PROCESSES`].
    pub skipped: usize,
}

impl Holders {
    /// The worker a connection accepted by `accepted_by` reached: itself, or for a server that
    /// forks a process per connection (PostgreSQL's backends), its parent; and the process
    /// that holds it when that is another (the backend).
    pub(crate) fn reached(&self) -> Option<(&ProcInfo, Option<&ProcInfo>)> {
        let by = self.accepted_by.as_ref()?;
        if let Some(w) = self.workers.iter().find(|w| w.pid == by.pid) {
            return Some((w, None));
        }
        let parent = self.workers.iter().find(|w| w.pid == by.ppid)?;
        Some((parent, Some(by)))
    }
}

/// Every live process of `procfs` looked at once: who holds `found`'s listening sockets, who
/// holds its accepted one.
pub(crate) fn holders(procfs: &ProcFs, found: &Found) -> io::Result<Holders> {
    let wanted: HashSet<u64> = found
        .listening
        .iter()
        .copied()
        .chain(found.accepted)
        .collect();
    let mut procs = procfs.processes()?;
    procs.sort_unstable_by_key(|p| p.pid);
    let mut out = Holders {
        skipped: procs.len().saturating_sub(PROCESSES),
        ..Holders::default()
    };
    let mut listeners: Vec<ProcInfo> = Vec::new();
    for p in procs.into_iter().take(PROCESSES) {
        match holding(procfs, p.pid, &wanted) {
            Ok(held) => {
                if found.accepted.is_some_and(|a| held.contains(&a)) {
                    out.accepted_by = Some(p.clone());
                }
                if held.iter().any(|i| found.listening.contains(i)) {
                    listeners.push(p);
                }
            }
            Err(FdError::Denied) => {
                // A kernel thread (no command line) holds no socket of an app.
                if procfs.cmdline(p.pid).is_ok_and(|c| c.is_empty()) {
                    continue;
                }
                let uid = procfs.status(p.pid).ok().map(|s| s.uid);
                out.unreadable.push(Unreadable { info: p, uid });
            }
            Err(FdError::Gone | FdError::Other) => {}
        }
    }
    let parents: HashSet<i32> = listeners.iter().map(|p| p.ppid).collect();
    out.workers = listeners
        .into_iter()
        .filter(|p| !parents.contains(&p.pid))
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::sockets::find;
    use crate::process::sockets::tests::inode;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn this_process_holds_its_listener_and_the_connection_it_accepted() {
        let procfs = ProcFs::new("/proc");
        let me = std::process::id() as i32;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let found = find(
            &procfs,
            l.local_addr().unwrap(),
            Some(client.local_addr().unwrap()),
        )
        .unwrap();
        assert_eq!(found.accepted, Some(inode(&server)));
        let wanted: HashSet<u64> = [inode(&l), inode(&server)].into();
        let mut held = holding(&procfs, me, &wanted).unwrap();
        held.sort_unstable();
        let mut want: Vec<u64> = wanted.into_iter().collect();
        want.sort_unstable();
        assert_eq!(held, want);
        let h = holders(&procfs, &found).unwrap();
        assert!(h.workers.iter().any(|w| w.pid == me), "{h:?}");
        assert_eq!(h.accepted_by.as_ref().map(|p| p.pid), Some(me));
        assert_eq!(
            h.reached().map(|(w, via)| (w.pid, via.is_some())),
            Some((me, false))
        );
        // A socket nobody holds is held by nobody.
        let none = Found {
            listening: vec![u64::MAX],
            accepted: None,
        };
        assert!(holders(&procfs, &none).unwrap().workers.is_empty());
    }

    /// Set in the child [`another_uids_descriptors_are_unreadable`] starts: the pid to look at.
    const CHILD_OF: &str = "SECRET_RELOADER_TEST_HOLDERS_OF";

    #[test]
    fn another_uids_descriptors_are_unreadable() {
        let procfs = ProcFs::new("/proc");
        if let Ok(pid) = std::env::var(CHILD_OF) {
            // The child, as uid 65534 without capabilities: root's descriptors are closed to it.
            let pid: i32 = pid.parse().unwrap();
            assert!(matches!(
                holding(&procfs, pid, &HashSet::new()),
                Err(FdError::Denied)
            ));
            let h = holders(
                &procfs,
                &Found {
                    listening: vec![1],
                    accepted: None,
                },
            )
            .unwrap();
            let it = h
                .unreadable
                .iter()
                .find(|u| u.info.pid == pid)
                .expect("the parent unreadable");
            assert_eq!(it.uid, Some(0));
            // Its own are not.
            assert!(holding(&procfs, std::process::id() as i32, &HashSet::new()).is_ok());
            println!("checked as uid {}", nix::unistd::getuid());
            return;
        }
        // Only root can run the child as another uid: a failure, not a skip (the suite runs as
        // root, as `scripts/test` says).
        assert!(
            nix::unistd::getuid().is_root(),
            "this test runs a child as uid 65534 with setpriv: run the tests as root"
        );
        let me = std::process::id();
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::holders::tests::another_uids_descriptors_are_unreadable",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_OF, me.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("checked as uid 65534"),
            "{text}"
        );
        // And gone is not denied.
        assert!(matches!(
            holding(&procfs, i32::MAX, &HashSet::new()),
            Err(FdError::Gone)
        ));
    }
}
