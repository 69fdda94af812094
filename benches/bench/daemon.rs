//! The daemon under measurement: a separate process (the binary that ships), with readings of
//! its resident memory and CPU time from /proc.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
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
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("start the daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = loop {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            if let Some(a) = text.split("addr=").nth(1) {
                break a
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse()
                    .expect("address");
            }
            assert!(Instant::now() < deadline, "daemon not listening:\n{text}");
            std::thread::sleep(Duration::from_millis(5));
        };
        let d = Daemon { child, addr, log };
        while get(d.addr, "/readyz") != Some(200) {
            assert!(Instant::now() < deadline, "daemon not ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
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
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("Threads:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            eprintln!("  daemon: {line}");
        }
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split(' ').nth(1)?.parse().ok()
}
