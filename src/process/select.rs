//! Which process is the app: a [`Selector`] (name, command line or pid file) applied to the
//! processes of the shared PID namespace.
//!
//! - The sidecar itself (its pid, or any thread id of it) is never a candidate.
//! - When the app's identity is declared (`--app-uid`), only processes of that uid are candidates:
//!   a process of the same name in another container is not the app.
//! - Among the matches, the top-level ones are those whose parent does not match (the master of
//!   nginx, PostgreSQL, HAProxy; its workers are its children). One top-level match is the app.
//!   Several are an ambiguous target: nothing is signalled, and the error lists them, unless
//!   `--signal-all` asks for every match.
//! - A pid file is read like pid-file readers do: its first line is the pid (PostgreSQL's
//!   `postmaster.pid` carries more lines after it). It outlives its process, and pids are
//!   reused: it is trusted only while the process it names can be the one that wrote it (that
//!   process started before the file was last written, give or take `PID_FILE_SLACK`) and
//!   matches what is declared (`--app-uid`, and `--process-name` or `--process-cmdline` when
//!   given beside `--pid-file`). Otherwise the file is stale: reported, nothing is signalled,
//!   and it is read again when it changes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{ProcFs, ProcInfo};
use crate::{files, text};

/// Largest pid file read.
const PID_FILE_LIMIT: u64 = 64 * 1024;
/// Most processes listed in an ambiguity message.
const LISTED: usize = 5;
/// How much later than its pid file's last write a process may seem to have started and still
/// be its writer: a process's start time counts in clock ticks, a file's times lag the clock by
/// up to a tick of their own, and the two are compared across the wall clock (a step of it
/// between the write and now moves the file's time). A process that started later did not write
/// the file: the pid was reused.
pub(crate) const PID_FILE_SLACK: Duration = Duration::from_secs(1);

/// How the target process is found.
#[derive(Debug, Clone)]
pub enum Selector {
    /// comm or argv\[0\] basename.
    Name(String),
    /// Regular expression on the command line.
    Cmdline(regex_lite::Regex),
    /// Pid read from a file; the process it names must also match the second selector when
    /// one is given (a name or a command line).
    PidFile(PathBuf, Option<Box<Selector>>),
}

impl Selector {
    /// The flag that gives it, for messages: `--process-name nginx`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Selector::Name(n) => format!("--process-name {}", text::value(n)),
            Selector::Cmdline(r) => format!("--process-cmdline '{}'", text::value(r.as_str())),
            Selector::PidFile(p, None) => format!("--pid-file {}", text::path(p)),
            Selector::PidFile(p, Some(also)) => {
                format!("--pid-file {} with {}", text::path(p), also.describe())
            }
        }
    }

    /// A short form for target names: `nginx`, `/regex/`, the pid file's path.
    pub(crate) fn short(&self) -> String {
        match self {
            Selector::Name(n) => text::value(n),
            Selector::Cmdline(r) => format!("/{}/", text::value(r.as_str())),
            Selector::PidFile(p, _) => text::path(p),
        }
    }

    /// The selector in the configuration summary of `/status`.
    pub(crate) fn summary(&self) -> Value {
        match self {
            Selector::Name(n) => json!({"process_name": text::value(n)}),
            Selector::Cmdline(r) => json!({"process_cmdline": text::value(r.as_str())}),
            Selector::PidFile(p, None) => json!({"pid_file": text::path(p)}),
            Selector::PidFile(p, Some(also)) => {
                let mut v = also.summary();
                v["pid_file"] = json!(text::path(p));
                v
            }
        }
    }

    /// Whether `info` matches (pid files are resolved by [`find`], never matched).
    pub(crate) fn matches(&self, procfs: &ProcFs, info: &ProcInfo) -> bool {
        match self {
            // comm is cut at 15 bytes; argv[0] covers longer names and renamed executables.
            Selector::Name(name) => {
                info.comm == *name
                    || procfs
                        .cmdline(info.pid)
                        .is_ok_and(|c| argv0_basename(&c) == name)
            }
            Selector::Cmdline(re) => procfs.cmdline(info.pid).is_ok_and(|c| re.is_match(&c)),
            Selector::PidFile(..) => false,
        }
    }
}

/// Why no process was found.
#[derive(Debug)]
pub enum FindError {
    /// Nothing matches (yet).
    NotFound,
    /// Processes match, but none runs as the declared app uid.
    OtherIdentity {
        /// The declared uid.
        uid: u32,
        /// What matched instead.
        seen: Vec<(ProcInfo, u32)>,
    },
    /// Several unrelated processes match: which one is the app cannot be told.
    Ambiguous(Vec<ProcInfo>),
    /// The pid file cannot be read or parsed.
    PidFile(PathBuf, String),
    /// The pid file names a process that is gone.
    PidFileStale(PathBuf, i32),
    /// The pid file names a live process that started after the file was last written: not
    /// its writer (the pid was reused).
    PidFileOutdated {
        /// The pid file.
        path: PathBuf,
        /// The process its pid names now.
        info: ProcInfo,
        /// How much later than the file's last write it started.
        after: Duration,
    },
    /// The pid file names a live process that does not match the name or command line declared
    /// beside it.
    PidFileMismatch {
        /// The pid file.
        path: PathBuf,
        /// The process its pid names now.
        info: ProcInfo,
        /// What was declared (`--process-name nginx`).
        declared: String,
    },
    /// The pid file names the sidecar itself.
    PidFileSelf(PathBuf, i32),
    /// procfs cannot be listed.
    Proc(PathBuf, std::io::Error),
}

impl FindError {
    /// Whether waiting may resolve it (the app not started yet, a pid file not written yet);
    /// otherwise it is a configuration problem.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            FindError::NotFound
                | FindError::OtherIdentity { .. }
                | FindError::PidFile(..)
                | FindError::PidFileStale(..)
                | FindError::PidFileOutdated { .. }
                | FindError::PidFileMismatch { .. }
        )
    }
}

impl std::fmt::Display for FindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindError::NotFound => f.write_str("no matching process"),
            FindError::OtherIdentity { uid, seen } => {
                let list: Vec<String> = seen
                    .iter()
                    .take(LISTED)
                    .map(|(p, u)| format!("{} as uid {u}", p.shown()))
                    .collect();
                write!(
                    f,
                    "no matching process runs as the app's uid {uid} (--app-uid); matched: {}",
                    list.join(", ")
                )
            }
            FindError::Ambiguous(procs) => {
                let list: Vec<String> = procs.iter().take(LISTED).map(ProcInfo::shown).collect();
                write!(
                    f,
                    "ambiguous target: {} unrelated processes match ({}): which one is the app cannot be \
                     told; nothing was signalled. Declare the app's uid (--app-uid/--app-gid), narrow the \
                     selector (--process-cmdline, --pid-file), or signal them all (--signal-all)",
                    procs.len(),
                    list.join(", ")
                )
            }
            FindError::PidFile(p, e) => write!(f, "cannot use pid file {}: {e}", text::path(p)),
            FindError::PidFileStale(p, pid) => write!(
                f,
                "pid file {} names pid {pid}, which is not running",
                text::path(p)
            ),
            FindError::PidFileOutdated { path, info, after } => write!(
                f,
                "pid file {} is stale: it names {}, which started {} after the file was last \
                 written, so it is not the process that wrote it (the app exited and its pid was \
                 reused); nothing is signalled until the app writes the file again",
                text::path(path),
                info.shown(),
                format_args!("{:.1} s", after.as_secs_f64()),
            ),
            FindError::PidFileMismatch {
                path,
                info,
                declared,
            } => write!(
                f,
                "pid file {} is stale: it names {}, which does not match {declared}; nothing is \
                 signalled until the app writes the file again",
                text::path(path),
                info.shown(),
            ),
            FindError::PidFileSelf(p, pid) => write!(
                f,
                "pid file {} names pid {pid}, the sidecar itself: it is never signalled; point --pid-file \
                 at the app's pid file",
                text::path(p)
            ),
            FindError::Proc(root, e) => write!(
                f,
                "cannot list processes in {}: {e} (the pod needs shareProcessNamespace: true)",
                text::path(root)
            ),
        }
    }
}

/// Finds the app's process(es): see the module documentation. `app_uid` is the declared uid.
pub(crate) fn find(
    procfs: &ProcFs,
    selector: &Selector,
    all: bool,
    app_uid: Option<u32>,
) -> Result<Vec<ProcInfo>, FindError> {
    find_excluding(procfs, selector, all, app_uid, None)
}

/// As [`find`], `exclude` never a candidate either (the doctor's daemon, whose command line
/// holds the selector's text).
pub(crate) fn find_excluding(
    procfs: &ProcFs,
    selector: &Selector,
    all: bool,
    app_uid: Option<u32>,
    exclude: Option<i32>,
) -> Result<Vec<ProcInfo>, FindError> {
    let own = own_pid();
    if let Selector::PidFile(path, also) = selector {
        return read_pid_file(procfs, path, also.as_deref(), own, app_uid).map(|p| vec![p]);
    }
    let procs = procfs
        .processes()
        .map_err(|e| FindError::Proc(procfs.root().to_path_buf(), e))?;
    let mut matched: Vec<ProcInfo> = procs
        .into_iter()
        .filter(|p| p.pid != own && Some(p.pid) != exclude && selector.matches(procfs, p))
        .collect();
    if matched.is_empty() {
        return Err(FindError::NotFound);
    }
    if let Some(uid) = app_uid {
        let (app, other): (Vec<_>, Vec<_>) = matched
            .into_iter()
            .map(|p| {
                let u = procfs.status(p.pid).map(|s| s.uid).ok();
                (p, u)
            })
            .partition(|(_, u)| *u == Some(uid));
        if app.is_empty() {
            let seen = other
                .into_iter()
                .filter_map(|(p, u)| u.map(|u| (p, u)))
                .collect::<Vec<_>>();
            return Err(if seen.is_empty() {
                FindError::NotFound
            } else {
                FindError::OtherIdentity { uid, seen }
            });
        }
        matched = app.into_iter().map(|(p, _)| p).collect();
    }
    if all {
        return Ok(matched);
    }
    let mut top: Vec<ProcInfo> = matched
        .iter()
        .filter(|p| !matched.iter().any(|q| q.pid == p.ppid))
        .cloned()
        .collect();
    top.sort_by_key(|p| (p.start_ticks, p.pid));
    match top.len() {
        1 => Ok(top),
        // Every match has a matching parent: a loop of reparented processes; take the oldest.
        0 => Ok(matched
            .into_iter()
            .min_by_key(|p| (p.start_ticks, p.pid))
            .into_iter()
            .collect()),
        _ => Err(FindError::Ambiguous(top)),
    }
}

/// The process a pid file names: its first line, never the sidecar, of the app's uid when
/// declared, matching `also` when given, and started before the file was last written.
fn read_pid_file(
    procfs: &ProcFs,
    path: &std::path::Path,
    also: Option<&Selector>,
    own: i32,
    app_uid: Option<u32>,
) -> Result<ProcInfo, FindError> {
    let PidFile { pid, written } = read_pid(path)?;
    let status = procfs
        .status(pid)
        .map_err(|_| FindError::PidFileStale(path.to_path_buf(), pid))?;
    // A thread id names its process too: kill() on it signals the whole thread group.
    if pid == own || status.tgid == own {
        return Err(FindError::PidFileSelf(path.to_path_buf(), pid));
    }
    let info = match procfs.stat(pid) {
        Ok(info) if info.is_live() => info,
        _ => return Err(FindError::PidFileStale(path.to_path_buf(), pid)),
    };
    if let Ok(after) = info.start_time().duration_since(written)
        && after > PID_FILE_SLACK
    {
        return Err(FindError::PidFileOutdated {
            path: path.to_path_buf(),
            info,
            after,
        });
    }
    if let Some(uid) = app_uid
        && status.uid != uid
    {
        return Err(FindError::OtherIdentity {
            uid,
            seen: vec![(info, status.uid)],
        });
    }
    if let Some(also) = also
        && !also.matches(procfs, &info)
    {
        return Err(FindError::PidFileMismatch {
            path: path.to_path_buf(),
            info,
            declared: also.describe(),
        });
    }
    Ok(info)
}

/// What a pid file says: the pid on its first line, and when it was last written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PidFile {
    /// The pid.
    pub pid: i32,
    /// Its modification time.
    pub written: SystemTime,
}

/// Reads a pid file: its first line, and its modification time from the same descriptor.
pub(crate) fn read_pid(path: &std::path::Path) -> Result<PidFile, FindError> {
    let bad = |why: String| FindError::PidFile(path.to_path_buf(), why);
    crate::lane::at(path);
    let (file, md) = files::open_regular(path).map_err(|e| bad(e.to_string()))?;
    let raw = files::read_open(&file, &md, PID_FILE_LIMIT).map_err(|e| bad(e.to_string()))?;
    let first = raw
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let pid = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            bad(format!(
                "its first line '{}' is not a pid",
                text::bytes(&first[..first.len().min(32)])
            ))
        })?;
    let written = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(PidFile { pid, written })
}

/// This process's pid (asked once: it is a system call on musl).
pub(crate) fn own_pid() -> i32 {
    static PID: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *PID.get_or_init(|| std::process::id() as i32)
}

/// Basename of the first word of argv[0] (`nginx: master process ...` gives `nginx`).
fn argv0_basename(cmdline: &str) -> &str {
    let first = cmdline.split(' ').next().unwrap_or("");
    let first = first.trim_end_matches(':');
    first.rsplit('/').next().unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_of_rewritten_titles() {
        assert_eq!(
            argv0_basename("nginx: master process /usr/sbin/nginx -c /x.conf"),
            "nginx"
        );
        assert_eq!(
            argv0_basename("/usr/lib/postgresql/15/bin/postgres -D /d"),
            "postgres"
        );
        assert_eq!(argv0_basename(""), "");
    }

    #[test]
    fn pid_files_read_their_first_line_and_never_name_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = ProcFs::new("/proc");
        let f = dir.path().join("postmaster.pid");
        let me = std::process::id();
        std::fs::write(&f, format!("{me}\n/var/lib/postgresql/data\n1700000000\n")).unwrap();
        assert!(matches!(
            read_pid_file(&procfs, &f, None, me as i32, None),
            Err(FindError::PidFileSelf(..))
        ));
        std::fs::write(&f, "1\nmore\n").unwrap();
        let p = read_pid_file(&procfs, &f, None, me as i32, None).unwrap();
        assert_eq!(p.pid, 1);
        std::fs::write(&f, "x1\n").unwrap();
        let e = read_pid_file(&procfs, &f, None, me as i32, None).unwrap_err();
        assert!(
            e.to_string().contains("first line 'x1' is not a pid"),
            "{e}"
        );
    }
}
