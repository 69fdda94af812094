//! A connection held open through a proxy (nginx, HAProxy), as a websocket or a long download
//! holds one: the proxy's worker that carries it cannot exit after a reload until it closes.
//!
//! - [`Upstream`]: a TCP server on 127.0.0.1 behind the proxy; it answers each request's head
//!   with the start of a response (`held`) and never finishes it until [`Upstream::release`].
//! - [`Client`]: the test's end, through the proxy, once the upstream's `held` came back.
//! - [`holders`] and [`ns_pid`]: which process carries a connection, as `/proc` says, and its pid
//!   in the PID namespace the daemon sees.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::eventually;

/// What the upstream sends before it holds the response: the client waits for it.
const HELD: &str = "held\n";

/// A held request: its head, as the proxy sent it, and the connection.
struct Held {
    head: String,
    stream: TcpStream,
}

/// A TCP server on 127.0.0.1 that holds every response open; stopped on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    held: Arc<Mutex<Vec<Held>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (held.clone(), stop.clone());
        // Blocking: the drop wakes it with a connection of its own after setting `stop`.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    let h = h.clone();
                    std::thread::spawn(move || hold(stream, &h));
                }
            }
        });
        Upstream { addr, held, stop }
    }

    /// Waits until `n` requests are held; their heads.
    pub fn wait_held(&self, n: usize) -> Vec<String> {
        eventually(
            &format!("{n} requests held by the upstream"),
            || {
                let h = self.held.lock().unwrap();
                h.iter().map(|h| h.head.clone()).collect::<Vec<_>>()
            },
            |heads| heads.len() >= n,
        )
    }

    /// Finishes every held response (closes its connection): the proxy ends the client's.
    pub fn release(&self) {
        self.held.lock().unwrap().clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        self.release();
    }
}

/// Reads a request head, answers the start of a response, keeps the connection.
fn hold(mut stream: TcpStream, held: &Mutex<Vec<Held>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    // HTTP/1.0 without a length: the body ends when the connection closes.
    if stream
        .write_all(format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{HELD}").as_bytes())
        .is_ok()
    {
        let head = String::from_utf8_lossy(&head).into_owned();
        held.lock().unwrap().push(Held { head, stream });
    }
}

/// The test's end of a held connection through a proxy on 127.0.0.1:`port`.
pub struct Client {
    stream: TcpStream,
}

impl Client {
    /// `GET path` through the proxy; returns once the upstream's response started.
    pub fn connect(port: u16, path: &str) -> Client {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(super::DEADLINE)).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with(HELD) {
            match stream.read(&mut buf) {
                Ok(0) => panic!(
                    "the proxy closed before the upstream's response: {}",
                    String::from_utf8_lossy(&got)
                ),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("no held response through the proxy: {e}"),
            }
        }
        Client { stream }
    }

    /// The (host) pids of the processes that hold the proxy's end of this connection.
    pub fn proxy_side_holders(&self) -> Vec<i32> {
        holders(
            self.stream.peer_addr().unwrap(),
            self.stream.local_addr().unwrap(),
        )
    }

    /// Waits until the proxy closes this connection (after the upstream's end closed).
    pub fn wait_closed(mut self) {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => panic!("the proxy did not close the held connection: {e}"),
            }
        }
    }
}

/// The pids (as this test sees them) of the processes holding a TCP socket whose local end is
/// `local` and remote end `remote` (IPv4): the socket's inode from `/proc/net/tcp`, then every
/// process's descriptors.
pub fn holders(local: SocketAddr, remote: SocketAddr) -> Vec<i32> {
    let Some(inode) = inode_of(local, remote) else {
        return Vec::new();
    };
    let link = format!("socket:[{inode}]");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A process may end while it is looked at: skip it.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()))
        {
            out.push(pid);
        }
    }
    out
}

/// The inode of the TCP socket `local` ↔ `remote` in this network namespace's `/proc/net/tcp`.
fn inode_of(local: SocketAddr, remote: SocketAddr) -> Option<String> {
    let hex = |a: SocketAddr| match a {
        // The address as the kernel's u32 in host (little-endian) order, the port big-endian.
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 only: {a}"),
    };
    let (l, r) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == l && f[2] == r).then(|| f[9].to_string())
    })
}

/// The pid of `pid` (as this test sees it) in the innermost PID namespace it belongs to (the
/// last `NSpid` field of its status): what a daemon in that namespace reports.
pub fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}
