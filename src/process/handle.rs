//! A handle on one process that cannot turn into another: a pidfd, and its `/proc/<pid>/status`
//! and `stat` kept open.
//!
//! These descriptors refer to the process itself, not to its pid: once it exits, signalling
//! through the pidfd fails with ESRCH and reading the status fails too, even when the pid is
//! already reused. They are opened, then the start time is read through the open `stat`: if the
//! pid was recycled in between, the handle is refused. After that, checking that the process
//! still lives and whether it handles a signal is one `pread` of an open file (the kernel
//! regenerates it for each read from the start): `stat` for signals 1–31, which also carries
//! the start time, else `status`; sending is one `pidfd_send_signal`: no `/proc` walk on the
//! reload path.
//!
//! Where pidfds cannot be had ([`delivery`]: a kernel before 5.3, or a seccomp profile that
//! refuses `pidfd_open` or `pidfd_send_signal`, as older container runtimes' default profiles
//! do), a signal is sent with `kill(2)` right after a read of the open `stat` has shown the
//! process to be the one found: a pid recycled within those microseconds would be hit. That
//! lost guarantee is said at start, in `/status`, in a metric and by the doctor.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::{
    Dispositions, ProcFs, ProcInfo, ProcStatus, STAT_SIGNALS, parse_stat, parse_stat_signals,
    parse_status,
};
use crate::files;

/// Most of a `status` or `stat` file read.
const STATUS_LIMIT: usize = 64 * 1024;

/// How this process signals another, found once at start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Delivery {
    /// `pidfd_open` and `pidfd_send_signal`: a signal reaches the process found, never one that
    /// took its pid.
    Pidfd,
    /// `kill(2)`, right after a read of the process's open `stat` showed it is the one found.
    Kill {
        /// What refused pidfds, and what is lost.
        why: String,
    },
}

impl Delivery {
    /// `pidfd` or `kill`: the metric label.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Delivery::Pidfd => "pidfd",
            Delivery::Kill { .. } => "kill",
        }
    }
}

/// How signals are sent in this process: pidfds when the kernel and the seccomp profile allow
/// them (tried once, on this process itself: `pidfd_open` of its own pid, then the null signal
/// through it), else `kill(2)`.
pub(crate) fn delivery() -> &'static Delivery {
    static DELIVERY: OnceLock<Delivery> = OnceLock::new();
    DELIVERY.get_or_init(|| {
        let pid = std::process::id() as i32;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            return refused("pidfd_open", Errno::last());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: the null signal through a descriptor we own: permission and existence are
        // checked, nothing is sent.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                0,
                std::ptr::null::<()>(),
                0,
            )
        };
        if rc != 0 {
            return refused("pidfd_send_signal", Errno::last());
        }
        Delivery::Pidfd
    })
}

/// Whether a seccomp filter is installed on this process (`Seccomp: 2` in its status).
pub(crate) fn seccomp_filtered() -> bool {
    files::read_proc(std::path::Path::new("/proc/self/status"), STATUS_LIMIT).is_ok_and(|s| {
        String::from_utf8_lossy(&s)
            .lines()
            .any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
    })
}

fn refused(call: &str, e: Errno) -> Delivery {
    let cause = if seccomp_filtered() {
        format!(
            "{call} is refused ({e}) by the container's seccomp profile (older runtimes' default \
             profiles do not know it): allow pidfd_open and pidfd_send_signal, or use a current \
             runtime's RuntimeDefault"
        )
    } else if e == Errno::ENOSYS {
        format!("the kernel has no {call} (Linux before 5.3)")
    } else {
        format!("{call} fails ({e})")
    };
    Delivery::Kill {
        why: format!(
            "{cause}; signals are sent with kill(2) right after a check that the process is still \
             the one found, so a pid recycled within those microseconds would be hit"
        ),
    }
}

/// An open handle on one process.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    /// What the process was when the handle was opened.
    pub info: ProcInfo,
    /// `None` on kernels without pidfds.
    pidfd: Option<OwnedFd>,
    /// `/proc/<pid>/status`, open.
    status: File,
    /// `/proc/<pid>/stat`, open.
    stat: File,
    /// Reused read buffer.
    buf: Vec<u8>,
    /// Where the fallback re-checks the start time.
    procfs: ProcFs,
}

/// The process is gone (exited, or its pid names another process now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

/// Why a handle could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The process is not the one found any more.
    Gone,
    /// The daemon ran out of descriptors or memory (recorded): try again later.
    Exhausted(io::Error),
}

impl From<Gone> for OpenError {
    fn from(_: Gone) -> OpenError {
        OpenError::Gone
    }
}

impl ProcessHandle {
    /// Opens a handle on the process `info` describes; [`Gone`] when it is not that process any
    /// more.
    pub(crate) fn open(procfs: &ProcFs, info: &ProcInfo) -> Result<ProcessHandle, OpenError> {
        let pidfd = if *delivery() == Delivery::Pidfd {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, info.pid, 0) };
            if raw >= 0 {
                // SAFETY: the kernel just returned this descriptor; nothing else owns it.
                Some(unsafe { OwnedFd::from_raw_fd(raw as i32) })
            } else {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    return Err(OpenError::Gone);
                }
                // Out of descriptors is no reason to signal without one.
                if crate::report::resources::check(&e) {
                    return Err(OpenError::Exhausted(e));
                }
                None
            }
        } else {
            None
        };
        let open = |file| {
            files::open_proc(&procfs.pid_path(info.pid, file)).map_err(|e| {
                if crate::report::resources::of(&e).is_some() {
                    OpenError::Exhausted(e)
                } else {
                    OpenError::Gone
                }
            })
        };
        let mut h = ProcessHandle {
            info: info.clone(),
            pidfd,
            status: open("status")?,
            stat: open("stat")?,
            buf: Vec::new(),
            procfs: procfs.clone(),
        };
        // Every descriptor is taken; is the pid still the process that was found?
        files::pread_proc(&h.stat, &mut h.buf, STATUS_LIMIT).map_err(|_| OpenError::Gone)?;
        match parse_stat(&String::from_utf8_lossy(&h.buf)) {
            Some(now) if now.start_ticks == info.start_ticks && now.is_live() => Ok(h),
            _ => Err(OpenError::Gone),
        }
    }

    /// The process's status now; [`Gone`] once it has exited (a zombie counts as exited).
    pub(crate) fn status(&mut self) -> Result<ProcStatus, Gone> {
        match files::pread_proc(&self.status, &mut self.buf, STATUS_LIMIT) {
            Ok(_) => {}
            Err(_) => return Err(Gone),
        }
        let text = String::from_utf8_lossy(&self.buf);
        if zombie(&text) {
            return Err(Gone);
        }
        parse_status(&text).ok_or(Gone)
    }

    /// Which signals the process catches and ignores now, for sending `sig`; [`Gone`] once it
    /// has exited. Below 32 from `stat` (less for the kernel to write and for us to parse than
    /// `status`, and its start time checks the handle's identity once more), else from `status`.
    pub(crate) fn dispositions(&mut self, sig: i32) -> Result<Dispositions, Gone> {
        if sig > STAT_SIGNALS {
            return self.status().map(|s| s.dispositions());
        }
        files::pread_proc(&self.stat, &mut self.buf, STATUS_LIMIT).map_err(|_| Gone)?;
        match parse_stat_signals(&self.buf) {
            Some(s) if s.start_ticks != self.info.start_ticks || !s.is_live() => Err(Gone),
            Some(s) => Ok(s.dispositions),
            // Not the kernel's layout (`--proc-root` elsewhere): the status says it all the same.
            None => self.status().map(|s| s.dispositions()),
        }
    }

    /// Sends `sig`. ESRCH means the process is gone; EPERM that the sidecar may not signal it.
    /// Without a pidfd, `kill(2)` right after the open `stat` showed the process is still the
    /// one found.
    pub(crate) fn signal(&mut self, sig: Signal) -> Result<(), Errno> {
        let Some(fd) = &self.pidfd else {
            return self.kill_checked(sig);
        };
        // SAFETY: pidfd_send_signal(fd, sig, NULL, 0) with a descriptor we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<()>(),
                0,
            )
        };
        match (rc, Errno::last()) {
            (0, _) => Ok(()),
            // Refused though the kernel would let this process signal that one (the null
            // signal through kill(2) says so): a seccomp profile that filters on arguments.
            (_, Errno::EPERM | Errno::ENOSYS)
                if nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.info.pid), None)
                    .is_ok() =>
            {
                self.kill_checked(sig)
            }
            (_, e) => Err(e),
        }
    }

    /// `kill(2)`, right after a read of the open `stat` showed that the pid still names the
    /// process found (ESRCH otherwise).
    fn kill_checked(&mut self, sig: Signal) -> Result<(), Errno> {
        if files::pread_proc(&self.stat, &mut self.buf, STATUS_LIMIT).is_err() {
            return Err(Errno::ESRCH);
        }
        match parse_stat_signals(&self.buf) {
            Some(s) if s.start_ticks == self.info.start_ticks && s.is_live() => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.info.pid), sig)
            }
            Some(_) => Err(Errno::ESRCH),
            // Not the kernel's layout (`--proc-root` elsewhere): by path, as the handle was made.
            None => match self.procfs.stat(self.info.pid) {
                Ok(now) if now.start_ticks == self.info.start_ticks && now.is_live() => {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.info.pid), sig)
                }
                _ => Err(Errno::ESRCH),
            },
        }
    }

    /// The process's environment (`/proc/<pid>/environ`, NUL-separated `NAME=value`), in a
    /// buffer wiped when dropped. The error is the kernel's: EACCES when the sidecar may not
    /// read it (another uid without CAP_SYS_PTRACE); [`Gone`] shows as ESRCH.
    pub(crate) fn environ(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, io::Error> {
        use std::io::Read;
        let mut file = files::open_proc(&self.procfs.pid_path(self.info.pid, "environ"))?;
        let mut buf = zeroize::Zeroizing::new(vec![0u8; 64 * 1024]);
        let mut len = 0;
        loop {
            if len == buf.len() {
                if len >= super::environ::ENVIRON_LIMIT {
                    break;
                }
                // Grown by copying into a new wiped buffer: the old one is wiped on drop.
                let mut bigger = zeroize::Zeroizing::new(vec![0u8; len * 2]);
                bigger[..len].copy_from_slice(&buf[..len]);
                buf = bigger;
            }
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(len);
        // Read from the process the handle names, not from a process that took its pid.
        if !self.is_alive() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(buf)
    }

    /// Whether the handle still names a live process.
    pub(crate) fn is_alive(&mut self) -> bool {
        self.status().is_ok()
    }
}

/// Whether a `status` says the process has exited: dead, or a zombie with no other thread
/// running (a zombie leader whose other threads run is a live process).
fn zombie(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim_start)
    };
    let threads = field("Threads:")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1);
    match field("State:").and_then(|s| s.chars().next()) {
        Some('X') => true,
        Some('Z') => threads <= 1,
        _ => false,
    }
}

impl From<Gone> for io::Error {
    fn from(_: Gone) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, "the process is gone")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_sees_its_process_exit_and_never_another() {
        let procfs = ProcFs::new("/proc");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let info = procfs.stat(child.id() as i32).unwrap();
        let mut h = ProcessHandle::open(&procfs, &info).unwrap();
        assert!(h.status().is_ok());
        h.signal(Signal::SIGKILL).unwrap();
        let _ = child.wait();
        assert_eq!(h.status().unwrap_err(), Gone);
        assert_eq!(h.signal(Signal::SIGHUP), Err(Errno::ESRCH));
        let mut other = info.clone();
        other.start_ticks += 1;
        assert!(ProcessHandle::open(&procfs, &other).is_err());
    }
}
