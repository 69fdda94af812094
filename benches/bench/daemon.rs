//! The daemon under measurement: a separate process (the binary that ships), with readings of
//! its resident memory and CPU time from /proc.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Daemon {
    /// Starts the daemon at the default log level (info, as in production) and waits until ready.
    /// Its log goes to a file (as a container runtime collects it, without a reader in this
    /// process competing for the CPU); warnings and errors are echoed at the end.
    pub fn start(bin: &str, args: &[&str]) -> Daemon {
        Daemon::try_start(bin, args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Daemon::start`], optionally under an open-files limit (soft and hard), and with an
    /// error instead of a panic when it is not ready within 60 s.
    pub fn try_start(bin: &str, args: &[&str], nofile: Option<u64>) -> Result<Daemon, String> {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"));
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|e| format!("start the daemon: {e}"))?;
        let (mut d, deadline) = Daemon::started(child, log);
        d.addr = d.logged("addr=", deadline)?;
        d.ready(d.addr, deadline)?;
        Ok(d)
    }

    /// A process just started, its stderr in `log`, its address not known yet; and the deadline
    /// for it to say it (60 s).
    fn started(child: std::process::Child, log: tempfile::NamedTempFile) -> (Daemon, Instant) {
        let d = Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        (d, Instant::now() + Duration::from_secs(60))
    }

    /// `secret-reloader-inject webhook` with `args` (which name its `--listen` and `--admin-listen`):
    /// the process, its `addr` the HTTPS listener, and the admin address, once `/readyz` answers
    /// there; an error when it is not ready within 60 s.
    pub fn try_start_webhook(bin: &str, args: &[&str]) -> Result<(Daemon, SocketAddr), String> {
        let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
        let stderr = log.reopen().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(bin)
            .arg("webhook")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("start the webhook: {e}"))?;
        let (mut d, deadline) = Daemon::started(child, log);
        d.addr = d.logged("addr=", deadline)?;
        let admin = d.logged(" admin=", deadline)?;
        d.ready(admin, deadline)?;
        Ok((d, admin))
    }

    /// The address its log gives after `key` (the first such), waited for until `deadline`.
    fn logged(&mut self, key: &str, deadline: Instant) -> Result<SocketAddr, String> {
        loop {
            let text = self.log_text();
            if let Some(a) = text.split(key).nth(1) {
                return a
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|e| format!("address after {key:?}: {e}\n{text}"));
            }
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Err(format!(
                    "exited ({status}) before listening; its log:\n{text}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("no {key:?} in its log within 60 s:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `/readyz` on `at` answers 200, or `deadline`.
    fn ready(&mut self, at: SocketAddr, deadline: Instant) -> Result<(), String> {
        while get(at, "/readyz") != Some(200) {
            if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                return Err(format!("not ready within 60 s:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// utime + stime in clock ticks, all threads.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14, stime 15 (1-based overall).
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    }

    /// Number of threads.
    pub fn threads(&self) -> u64 {
        status_field(self.pid(), "Threads:")
    }

    /// Sends SIGTERM and waits up to `within` for the exit; the time it took, or None (then the
    /// process is killed when dropped).
    pub fn terminate(&mut self, within: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        // SAFETY: a signal to the child this struct owns (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        while t0.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self.log_text();
        let noted: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        for line in noted.iter().take(10) {
            eprintln!("  daemon: {line}");
        }
        if noted.len() > 10 {
            eprintln!("  daemon: … {} more warnings and errors", noted.len() - 10);
        }
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

pub fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    timed_get(addr, path, Duration::from_secs(2)).map(|(status, _)| status)
}

/// GET `path` on a fresh connection: the status and the time from connect to the whole answer.
pub fn timed_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    let left = timeout
        .checked_sub(t0.elapsed())?
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).ok()?;
    s.set_write_timeout(Some(left)).ok()?;
    let _ = s.set_nodelay(true);
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut r = Vec::new();
    s.read_to_end(&mut r).ok()?;
    let took = t0.elapsed();
    let status = String::from_utf8_lossy(&r)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, took))
}

/// GET `path` on a fresh connection: the whole answer as text (head and body).
pub fn get_text(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut r = Vec::new();
    s.read_to_end(&mut r).ok()?;
    Some(String::from_utf8_lossy(&r).into_owned())
}
