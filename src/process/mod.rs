//! Processes of the shared PID namespace, read from procfs: who they are, which one is the app,
//! and a handle on one that cannot be confused with another.
//!
//! - this file: [`ProcFs`] and the parsers of `/proc/<pid>/stat` and `status` (pure functions);
//! - `select`: [`Selector`] and finding the app's process (candidates, ambiguity, pid files);
//! - `handle`: `ProcessHandle`, a pidfd and an open `status` descriptor of one process;
//! - `tracker`: the app's process followed across reloads, without a `/proc` walk each time;
//! - `workers`: the app's workers (its process's children) and which predate a version;
//! - `sockets`: an endpoint's TCP sockets (its listeners, the server side of one connection),
//!   from `net/tcp`; `holders`: which processes hold them, from their descriptors;
//! - [`identity`]: who the app and the sidecar run as.
//!
//! The procfs mount point is injected ([`ProcFs::new`]) so that tests and `--proc-root` can point
//! elsewhere.

pub(crate) mod environ;
pub(crate) mod handle;
pub(crate) mod holders;
pub mod identity;
pub(crate) mod select;
pub(crate) mod sockets;
pub(crate) mod tracker;
pub(crate) mod workers;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::time::{ClockId, clock_gettime};
use nix::unistd::{SysconfVar, sysconf};

use crate::files;
pub use select::{FindError, Selector};

/// Most of a `stat` or `status` file read (they are a few KiB).
const PROC_FILE_LIMIT: usize = 64 * 1024;
/// Most of a command line read: matching looks at this much.
const CMDLINE_LIMIT: usize = 64 * 1024;

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
    /// Threads of the process (its leader, a zombie once it exited, counts as one).
    pub threads: u64,
}

impl ProcInfo {
    /// `pid 42 (nginx)`, with the name escaped.
    pub(crate) fn shown(&self) -> String {
        format!("pid {} ({})", self.pid, crate::text::value(&self.comm))
    }

    /// Wall-clock estimate of when it started, exact to a clock tick plus the sampling error of
    /// two clocks (microseconds).
    pub(crate) fn start_time(&self) -> SystemTime {
        boot_time()
            + Duration::from_nanos(
                self.start_ticks.saturating_mul(1_000_000_000) / clock_ticks_per_sec(),
            )
    }

    /// Whether it is still running: not dead, and not a zombie unless other threads of it run
    /// on (a main thread that called `pthread_exit` leaves a zombie leader; the process lives
    /// in its other threads and handles signals).
    pub(crate) fn is_live(&self) -> bool {
        live(u8::try_from(self.state).unwrap_or(b'?'), self.threads)
    }
}

/// What `/proc/<pid>/status` says about identity and signal handling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Thread group id: the process a pid (or thread id) belongs to.
    pub tgid: i32,
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
        self.dispositions().catches(sig)
    }

    /// Whether `sig` is ignored.
    pub fn ignores(&self, sig: i32) -> bool {
        self.dispositions().ignores(sig)
    }

    /// Which signals it catches and ignores.
    pub(crate) fn dispositions(&self) -> Dispositions {
        Dispositions {
            caught: self.sig_cgt,
            ignored: self.sig_ign,
        }
    }
}

/// Which signals a process catches with a handler and which it ignores (bit n-1 for signal n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dispositions {
    /// Signals with a handler.
    pub caught: u64,
    /// Signals ignored.
    pub ignored: u64,
}

impl Dispositions {
    /// Whether a handler for `sig` is installed.
    pub(crate) fn catches(&self, sig: i32) -> bool {
        sig > 0 && sig <= 64 && self.caught & (1u64 << (sig - 1)) != 0
    }

    /// Whether `sig` is ignored.
    pub(crate) fn ignores(&self, sig: i32) -> bool {
        sig > 0 && sig <= 64 && self.ignored & (1u64 << (sig - 1)) != 0
    }
}

/// The highest signal whose disposition `/proc/<pid>/stat` shows (its `sigignore` and `sigcatch`
/// fields hold signals 1–31 only; `status` has them all).
pub(crate) const STAT_SIGNALS: i32 = 31;

/// What a reload needs of `/proc/<pid>/stat`: whether the process runs, which one it is, and
/// what it does with signals 1–31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatSignals {
    /// State letter (`b'R'`, `b'S'`, `b'Z'`, ...).
    pub state: u8,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
    /// Signals 1–31 caught and ignored.
    pub dispositions: Dispositions,
    /// Threads of the process.
    pub threads: u64,
}

impl StatSignals {
    /// Whether it is still running (see [`ProcInfo::is_live`]).
    pub(crate) fn is_live(&self) -> bool {
        live(self.state, self.threads)
    }
}

/// Whether a process in `state` with `threads` threads still runs.
fn live(state: u8, threads: u64) -> bool {
    match state {
        b'X' => false,
        b'Z' => threads > 1,
        _ => true,
    }
}

impl ProcFs {
    /// procfs mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    /// The mount point.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `/proc/<pid>/<file>`.
    pub(crate) fn pid_path(&self, pid: i32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// The stat line of one process.
    pub fn stat(&self, pid: i32) -> io::Result<ProcInfo> {
        let raw = files::read_proc(&self.pid_path(pid, "stat"), PROC_FILE_LIMIT)?;
        parse_stat(&String::from_utf8_lossy(&raw))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))
    }

    /// Identity and signal masks of one process.
    pub(crate) fn status(&self, pid: i32) -> io::Result<ProcStatus> {
        let raw = files::read_proc(&self.pid_path(pid, "status"), PROC_FILE_LIMIT)?;
        parse_status(&String::from_utf8_lossy(&raw))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable status"))
    }

    /// The command line, arguments joined by spaces (at most 64 KiB of it).
    pub(crate) fn cmdline(&self, pid: i32) -> io::Result<String> {
        let raw = files::read_proc(&self.pid_path(pid, "cmdline"), CMDLINE_LIMIT)?;
        let trimmed = raw.strip_suffix(b"\0").unwrap_or(&raw);
        Ok(String::from_utf8_lossy(trimmed).replace('\0', " "))
    }

    /// The pids listed now, sorted.
    pub fn pids(&self) -> io::Result<Vec<i32>> {
        let mut out: Vec<i32> = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Every live process.
    pub(crate) fn processes(&self) -> io::Result<Vec<ProcInfo>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
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
                && info.is_live()
            {
                out.push(info);
            }
        }
        Ok(out)
    }
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
    // Fields 5 to 19 skipped, then num_threads (20) and starttime (22).
    let threads = rest.nth(15)?.parse().ok()?;
    let start_ticks = rest.nth(1)?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        comm,
        state,
        start_ticks,
        threads,
    })
}

/// Parses state, start time and signal dispositions out of `/proc/<pid>/stat`, allocating
/// nothing. Fields are counted from the last `)`, which ends the command name.
pub(crate) fn parse_stat_signals(raw: &[u8]) -> Option<StatSignals> {
    fn number(field: &[u8]) -> Option<u64> {
        std::str::from_utf8(field).ok()?.parse().ok()
    }
    let close = raw.iter().rposition(|&b| b == b')')?;
    let mut fields = raw[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    // Field 3 (state), then 20 (num_threads), 22 (starttime), 33 (sigignore), 34 (sigcatch).
    let state = *fields.next()?.first()?;
    let threads = number(fields.nth(16)?)?;
    let start_ticks = number(fields.nth(1)?)?;
    let ignored = number(fields.nth(10)?)?;
    let caught = number(fields.next()?)?;
    Some(StatSignals {
        state,
        start_ticks,
        dispositions: Dispositions { caught, ignored },
        threads,
    })
}

/// Parses the identity and signal lines of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<ProcStatus> {
    // Bits of the lines read: Uid, Gid, SigCgt, SigIgn are required; Tgid, CapEff, Groups are
    // read when present. Every line after the last of them (CapEff) is left unread.
    const REQUIRED: u32 = 0b1111;
    const ALL: u32 = 0b111_1111;
    let mut st = ProcStatus::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let bit = match key {
            "Tgid" => {
                st.tgid = value.parse().ok()?;
                16
            }
            "Uid" => {
                (st.uid, st.fsuid) = real_and_fs(value)?;
                1
            }
            "Gid" => {
                (st.gid, st.fsgid) = real_and_fs(value)?;
                2
            }
            "CapEff" => {
                st.cap_eff = u64::from_str_radix(value, 16).ok()?;
                32
            }
            "Groups" => {
                st.groups = value
                    .split_ascii_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect();
                64
            }
            "SigCgt" => {
                st.sig_cgt = u64::from_str_radix(value, 16).ok()?;
                4
            }
            "SigIgn" => {
                st.sig_ign = u64::from_str_radix(value, 16).ok()?;
                8
            }
            _ => 0,
        };
        seen |= bit;
        if seen == ALL {
            break;
        }
    }
    (seen & REQUIRED == REQUIRED).then_some(st)
}

/// The first (real) and last (filesystem) of the four ids on a `Uid:` or `Gid:` line.
fn real_and_fs(value: &str) -> Option<(u32, u32)> {
    let mut ids = value
        .split_ascii_whitespace()
        .filter_map(|v| v.parse().ok());
    let real = ids.next()?;
    Some((real, ids.next_back().unwrap_or(real)))
}

/// Clock ticks per second: the resolution of a process's start time in `/proc/<pid>/stat`.
pub(crate) fn clock_ticks_per_sec() -> u64 {
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
            now.checked_sub(since_boot)
                .unwrap_or(SystemTime::UNIX_EPOCH)
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
        assert_eq!(p.threads, 1);
        assert!(p.is_live());
        // A zombie leader: dead alone, alive while other threads run.
        let zombie = text.replacen(") S 1", ") Z 1", 1);
        assert!(!parse_stat(&zombie).unwrap().is_live());
        let leader = zombie.replacen(" 20 0 1 0 987654", " 20 0 2 0 987654", 1);
        let p = parse_stat(&leader).unwrap();
        assert_eq!((p.threads, p.start_ticks), (2, 987654));
        assert!(p.is_live());
        let s = parse_stat_signals(leader.as_bytes()).unwrap();
        assert_eq!((s.threads, s.start_ticks), (2, 987654));
        assert!(s.is_live());
    }

    #[test]
    fn stat_truncated_is_rejected() {
        assert!(parse_stat("12 (x) S 1 2 3").is_none());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn stat_signals_of_an_odd_command_name() {
        let text = b"4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 4096 16899 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat_signals(text).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.start_ticks, 987654);
        assert_eq!(s.dispositions.ignored, 4096);
        assert_eq!(s.dispositions.caught, 16899);
        assert!(s.dispositions.catches(1) && s.dispositions.ignores(13));
        assert!(parse_stat_signals(b"12 (x) S 1 2 3").is_none());
        assert!(parse_stat_signals(b"garbage").is_none());
        let without_sigcatch = text.len() - b" 16899 0 0 0 17 0 0 0 0 0 0".len();
        assert!(parse_stat_signals(&text[..without_sigcatch]).is_none());
    }

    #[test]
    fn stat_and_status_agree_on_signals_below_32_of_a_real_process() {
        // A shell that ignores USR2 and catches HUP and TERM, read both ways.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' USR2; trap 'exit 0' HUP TERM; while :; do sleep 1; done",
            ])
            .spawn()
            .unwrap();
        let procs = ProcFs::new("/proc");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (from_stat, from_status) = loop {
            let raw = files::read_proc(&procs.pid_path(pid, "stat"), PROC_FILE_LIMIT).unwrap();
            let from_stat = parse_stat_signals(&raw).unwrap().dispositions;
            let from_status = procs.status(pid).unwrap().dispositions();
            if from_status.catches(1) || std::time::Instant::now() > deadline {
                break (from_stat, from_status);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        let low = (1u64 << STAT_SIGNALS) - 1;
        assert!(from_status.catches(1) && from_status.catches(15) && from_status.ignores(12));
        assert_eq!(from_stat.caught, from_status.caught & low);
        assert_eq!(from_stat.ignored, from_status.ignored & low);
    }

    #[test]
    fn status_masks_and_ids() {
        let text = "Name:\tnginx\nTgid:\t77\nUid:\t101\t101\t101\t103\nGid:\t102\t102\t102\t102\nGroups:\t102 2000 \n\
                    SigIgn:\t0000000000001000\nSigCgt:\t0000000180004a03\n";
        let st = parse_status(text).unwrap();
        assert_eq!(st.tgid, 77);
        assert_eq!((st.uid, st.gid, st.fsuid, st.fsgid), (101, 102, 103, 102));
        assert_eq!(st.groups, vec![102, 2000]);
        assert!(st.catches(1)); // HUP
        assert!(st.catches(10)); // USR1 is bit 9: 0x200 is set in 0x4a03
        assert!(!st.catches(3)); // QUIT is bit 2: not set
        assert!(st.ignores(13)); // PIPE
        assert!(parse_status("Name:\tx\n").is_none());
    }

    #[test]
    fn finds_this_test_process() {
        let procs = ProcFs::new("/proc");
        let me = procs.stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        let started = me.start_time();
        let age = SystemTime::now().duration_since(started).unwrap();
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }
}
