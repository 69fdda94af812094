//! Receivers that timestamp what the daemon does: an HTTP endpoint on 127.0.0.1 and a SIGHUP
//! handler in this very process (the daemon signals it through `--pid-file`). Both stamp with
//! `Instant`, so latencies compare with the writer's swap instant in one clock.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One request received.
pub struct Hit {
    /// When its head was complete.
    pub at: Instant,
    /// Request path.
    pub path: String,
    /// First line of the probe file when it arrived (what the app would load).
    pub loaded: Option<String>,
}

/// A blocking HTTP endpoint: every request is answered 200 and stamped.
pub struct HttpProbe {
    pub addr: SocketAddr,
    pub rx: mpsc::Receiver<Hit>,
}

impl HttpProbe {
    pub fn start() -> HttpProbe {
        HttpProbe::start_reading(None)
    }

    /// A probe that also reads the first line of `file` at every request.
    pub fn start_reading(file: Option<std::path::PathBuf>) -> HttpProbe {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                // Stamp when the request head is complete: that is when an app would act.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let at = Instant::now();
                let loaded = file
                    .as_ref()
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .map(|t| t.lines().next().unwrap_or("").to_string());
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let head = String::from_utf8_lossy(&seen);
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                if tx.send(Hit { at, path, loaded }).is_err() {
                    return;
                }
            }
        });
        HttpProbe { addr, rx }
    }

    pub fn url(&self) -> String {
        format!("http://{}/-/reload", self.addr)
    }

    /// Drops stamps of earlier calls.
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    pub fn next(&self, within: Duration) -> Option<Instant> {
        self.rx.recv_timeout(within).ok().map(|h| h.at)
    }

    pub fn next_hit(&self, within: Duration) -> Option<Hit> {
        self.rx.recv_timeout(within).ok()
    }
}

static BASE: OnceLock<Instant> = OnceLock::new();
static LAST_HUP_NS: AtomicU64 = AtomicU64::new(0);

/// SIGHUP handler of this process, stamping delivery inside the handler itself.
pub struct SignalProbe;

impl SignalProbe {
    pub fn install() -> SignalProbe {
        let base = *BASE.get_or_init(Instant::now);
        // SAFETY: the action reads a clock and stores an atomic, both async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal_hook::consts::SIGHUP, move || {
                let ns = base.elapsed().as_nanos() as u64;
                LAST_HUP_NS.store(ns.max(1), Ordering::SeqCst);
            })
        }
        .expect("install SIGHUP handler");
        SignalProbe
    }

    pub fn reset(&self) {
        LAST_HUP_NS.store(0, Ordering::SeqCst);
    }

    /// Waits (spinning briefly, then sleeping) for the next SIGHUP after `reset`.
    pub fn wait(&self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let ns = LAST_HUP_NS.load(Ordering::SeqCst);
            if ns != 0 {
                return Some(*BASE.get().unwrap() + Duration::from_nanos(ns));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}
