//! The target process, found through procfs in the shared PID namespace.
//!
//! The procfs mount point is injected ([`ProcFs::new`]) so that tests and `--proc-root` can point
//! elsewhere. Parsers are pure functions over the text of `/proc/<pid>/stat` and `status`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::time::{ClockId, clock_gettime};
use nix::unistd::{SysconfVar, sysconf};

use crate::config::Selector;

/// A procfs mount.
#[derive(Debug, Clone)]
pub struct ProcFs {
    /// Mount point, normally `/proc`.
    root: PathBuf,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id in this namespace.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Executable name, at most 15 bytes.
    pub comm: String,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Start time in clock ticks since boot: with the pid, it names one process for good.
    pub start_ticks: u64,
}

/// What `/proc/<pid>/status` says about identity and signal handling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Filesystem uid: the one file permissions are checked against.
    pub fsuid: u32,
    /// Filesystem gid.
    pub fsgid: u32,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Signals the process catches with a handler (bit n-1 for signal n).
    pub sig_cgt: u64,
    /// Signals the process ignores.
    pub sig_ign: u64,
}

impl ProcStatus {
    /// Whether a handler for `sig` is installed.
    pub fn catches(&self, sig: i32) -> bool {
        sig > 0 && sig <= 64 && self.sig_cgt & (1u64 << (sig - 1)) != 0
    }

    /// Whether `sig` is ignored.
    pub fn ignores(&self, sig: i32) -> bool {
        sig > 0 && sig <= 64 && self.sig_ign & (1u64 << (sig - 1)) != 0
    }
}

impl ProcFs {
    /// procfs mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pid_path(&self, pid: i32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// Reads a small procfs file: open, one `read`, close. procfs generates `stat` and `status`
    /// whole, so a read shorter than the buffer has everything (the standard library would stat
    /// the file and read until an empty read). This is on the reload path.
    fn read_small(&self, pid: i32, file: &str) -> io::Result<String> {
        read_short_file(&self.pid_path(pid, file))
    }

    /// The stat line of one process.
    pub fn stat(&self, pid: i32) -> io::Result<ProcInfo> {
        let text = self.read_small(pid, "stat")?;
        parse_stat(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))
    }

    /// Identity and signal masks of one process.
    pub fn status(&self, pid: i32) -> io::Result<ProcStatus> {
        let text = self.read_small(pid, "status")?;
        parse_status(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable status"))
    }

    /// The command line, arguments joined by spaces.
    pub fn cmdline(&self, pid: i32) -> io::Result<String> {
        let raw = fs::read(self.pid_path(pid, "cmdline"))?;
        let trimmed = raw.strip_suffix(b"\0").unwrap_or(&raw);
        Ok(String::from_utf8_lossy(trimmed).replace('\0', " "))
    }

    /// Every live (non-zombie) process.
    pub fn processes(&self) -> io::Result<Vec<ProcInfo>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // A process may exit between listing and reading: skip it.
            if let Ok(info) = self.stat(pid)
                && info.state != 'Z'
                && info.state != 'X'
            {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Whether `info` matches `selector` (pid files are resolved by [`ProcFs::find`]).
    pub fn matches(&self, info: &ProcInfo, selector: &Selector) -> bool {
        match selector {
            // comm is cut at 15 bytes; argv[0] covers longer names and renamed executables.
            Selector::Name(name) => info.comm == *name || self.argv0_is(info.pid, name),
            Selector::Cmdline(re) => self
                .cmdline(info.pid)
                .map(|c| re.is_match(&c))
                .unwrap_or(false),
            Selector::PidFile(_) => false,
        }
    }

    fn argv0_is(&self, pid: i32, name: &str) -> bool {
        self.cmdline(pid)
            .map(|c| argv0_basename(&c) == name)
            .unwrap_or(false)
    }

    /// Processes selected by `selector`, never `own_pid`. Without `all`, only the oldest match
    /// whose parent does not match (the master of a master/workers app).
    pub fn find(
        &self,
        selector: &Selector,
        all: bool,
        own_pid: i32,
    ) -> Result<Vec<ProcInfo>, FindError> {
        if let Selector::PidFile(path) = selector {
            return self.read_pid_file(path).map(|p| vec![p]);
        }
        let procs = self
            .processes()
            .map_err(|e| FindError::Proc(self.root.clone(), e))?;
        let matched: Vec<ProcInfo> = procs
            .into_iter()
            .filter(|p| p.pid != own_pid && self.matches(p, selector))
            .collect();
        if matched.is_empty() {
            return Err(FindError::NotFound);
        }
        if all {
            return Ok(matched);
        }
        let top = matched
            .iter()
            .filter(|p| !matched.iter().any(|q| q.pid == p.ppid))
            .min_by_key(|p| (p.start_ticks, p.pid))
            .or_else(|| matched.iter().min_by_key(|p| (p.start_ticks, p.pid)))
            .cloned();
        Ok(top.into_iter().collect())
    }

    fn read_pid_file(&self, path: &Path) -> Result<ProcInfo, FindError> {
        let text = fs::read_to_string(path)
            .map_err(|e| FindError::PidFile(path.to_path_buf(), e.to_string()))?;
        let pid: i32 = text.trim().parse().map_err(|_| {
            FindError::PidFile(
                path.to_path_buf(),
                format!("'{}' is not a pid", text.trim()),
            )
        })?;
        match self.stat(pid) {
            Ok(info) if info.state != 'Z' => Ok(info),
            _ => Err(FindError::PidFileStale(path.to_path_buf(), pid)),
        }
    }

    /// Wall-clock estimate of when a process started, exact to a clock tick plus the sampling
    /// error of two clocks (microseconds).
    pub fn start_time(&self, info: &ProcInfo) -> SystemTime {
        boot_time()
            + Duration::from_nanos(
                info.start_ticks.saturating_mul(1_000_000_000) / clock_ticks_per_sec(),
            )
    }
}

/// Reads a file of at most a few KiB with as few system calls as possible: a read that does not
/// fill the buffer has reached the end (procfs files and small local files are read whole).
fn read_short_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = file.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Why no process was found.
#[derive(Debug)]
pub enum FindError {
    /// Nothing matches (yet).
    NotFound,
    /// The pid file cannot be read or parsed.
    PidFile(PathBuf, String),
    /// The pid file names a process that is gone.
    PidFileStale(PathBuf, i32),
    /// procfs cannot be listed.
    Proc(PathBuf, io::Error),
}

impl std::fmt::Display for FindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindError::NotFound => f.write_str("no matching process"),
            FindError::PidFile(p, e) => write!(f, "cannot use pid file {}: {e}", p.display()),
            FindError::PidFileStale(p, pid) => write!(
                f,
                "pid file {} names pid {pid}, which is not running",
                p.display()
            ),
            FindError::Proc(root, e) => write!(
                f,
                "cannot list processes in {}: {e} (the pod needs shareProcessNamespace: true)",
                root.display()
            ),
        }
    }
}

/// Basename of the first word of argv[0] (`nginx: master process ...` gives `nginx`).
fn argv0_basename(cmdline: &str) -> &str {
    let first = cmdline.split(' ').next().unwrap_or("");
    let first = first.trim_end_matches(':');
    first.rsplit('/').next().unwrap_or(first)
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    // Fields after ppid up to starttime (field 22; state is field 3): 18 fields to skip.
    let start_ticks = rest.nth(17)?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        comm,
        state,
        start_ticks,
    })
}

/// Parses the identity and signal lines of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<ProcStatus> {
    let mut st = ProcStatus::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" => {
                (st.uid, st.fsuid) = real_and_fs(value)?;
                seen |= 1;
            }
            "Gid" => {
                (st.gid, st.fsgid) = real_and_fs(value)?;
                seen |= 2;
            }
            "CapEff" => st.cap_eff = u64::from_str_radix(value, 16).ok()?,
            "Groups" => {
                st.groups = value
                    .split_ascii_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            }
            "SigCgt" => {
                st.sig_cgt = u64::from_str_radix(value, 16).ok()?;
                seen |= 4;
            }
            "SigIgn" => {
                st.sig_ign = u64::from_str_radix(value, 16).ok()?;
                seen |= 8;
            }
            _ => {}
        }
    }
    (seen == 15).then_some(st)
}

/// The first (real) and last (filesystem) of the four ids on a `Uid:` or `Gid:` line.
fn real_and_fs(value: &str) -> Option<(u32, u32)> {
    let ids: Vec<u32> = value
        .split_ascii_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*ids.first()?, *ids.last()?))
}

fn clock_ticks_per_sec() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    }
}

/// Wall-clock time of boot, from CLOCK_REALTIME − CLOCK_BOOTTIME (what process start ticks count
/// from), to the nanosecond rather than the whole second of `/proc/stat`'s btime.
fn boot_time() -> SystemTime {
    let real = clock_gettime(ClockId::CLOCK_REALTIME);
    let boot = clock_gettime(ClockId::CLOCK_BOOTTIME);
    match (real, boot) {
        (Ok(r), Ok(b)) => {
            let since_boot = Duration::new(b.tv_sec() as u64, b.tv_nsec() as u32);
            let now = SystemTime::UNIX_EPOCH + Duration::new(r.tv_sec() as u64, r.tv_nsec() as u32);
            now - since_boot
        }
        _ => SystemTime::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let text = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let p = parse_stat(text).unwrap();
        assert_eq!(p.pid, 4242);
        assert_eq!(p.comm, "we ird) (x)");
        assert_eq!(p.state, 'S');
        assert_eq!(p.ppid, 1);
        assert_eq!(p.start_ticks, 987654);
    }

    #[test]
    fn stat_truncated_is_rejected() {
        assert!(parse_stat("12 (x) S 1 2 3").is_none());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn status_masks_and_ids() {
        let text = "Name:\tnginx\nUid:\t101\t101\t101\t103\nGid:\t102\t102\t102\t102\nGroups:\t102 2000 \n\
                    SigIgn:\t0000000000001000\nSigCgt:\t0000000180004a03\n";
        let st = parse_status(text).unwrap();
        assert_eq!((st.uid, st.gid, st.fsuid, st.fsgid), (101, 102, 103, 102));
        assert_eq!(st.groups, vec![102, 2000]);
        assert!(st.catches(1)); // HUP
        assert!(st.catches(10)); // USR1 is bit 9: 0x200 is set in 0x4a03
        assert!(!st.catches(3)); // QUIT is bit 2: not set
        assert!(st.ignores(13)); // PIPE
        assert!(parse_status("Name:\tx\n").is_none());
    }

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
    fn finds_this_test_process() {
        let procs = ProcFs::new("/proc");
        let me = procs.stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        let started = procs.start_time(&me);
        let age = SystemTime::now().duration_since(started).unwrap();
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }
}
