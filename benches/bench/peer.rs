//! The peer: configmap-reload (`CMR_BIN`), watching its own volume and calling a webhook, run
//! the same way as the daemon (its own process, log to a file).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Peer {
    /// Starts `bin` on `dir` with `url` as its webhook; waits until it says it watches.
    pub fn start(bin: &str, dir: &Path, url: &str) -> Result<Peer, String> {
        let mut last = String::new();
        // It takes no ephemeral port: pick a free one, and again if another took it meanwhile.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            let log = tempfile::NamedTempFile::new().expect("log file");
            let child = Command::new(bin)
                .arg(format!("--volume-dir={}", dir.display()))
                .arg(format!("--webhook-url={url}"))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.reopen().expect("log file"))
                .spawn()
                .map_err(|e| format!("start {bin}: {e}"))?;
            let mut p = Peer { child, log };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(p.log.path()).unwrap_or_default();
                if p.child.try_wait().ok().flatten().is_some() {
                    last = text;
                    break;
                }
                if text.contains("Watching directory") {
                    // It prints this as it adds the watch; the warm-up rotations confirm it.
                    std::thread::sleep(Duration::from_millis(100));
                    if p.child.try_wait().ok().flatten().is_none() {
                        return Ok(p);
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("{bin} did not start:\n{text}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = p.child.wait();
        }
        Err(format!("{bin} exited at start:\n{last}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
