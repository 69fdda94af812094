//! Receivers that timestamp what a watcher does: an HTTP endpoint on 127.0.0.1 and a SIGHUP
//! handler in this very process (the daemon signals it through `--pid-file`). Both stamp with
//! `Instant`, so latencies compare with the writer's swap instant in one clock.
//!
//! The endpoint speaks HTTP/1.1 with keep-alive (a connection stays open unless the request says
//! `Connection: close`, or is HTTP/1.0 without `keep-alive`) and stamps each request at its first
//! byte, not when its head is complete: every watcher is timed to the moment its request reaches
//! this process, whatever it sends after. Over plain TCP that moment is the kernel's receive
//! timestamp of the segment carrying the first byte (`SO_TIMESTAMPNS`): the endpoint itself costs
//! nothing in the figure, not even its own wakeup (an idle vCPU of this VM takes a few hundred
//! microseconds to wake, the same for every watcher). The moment its thread read the byte is kept
//! too (`read_at`); over TLS only that one exists, after decryption. Threads blocked in `accept` are
//! spawned ahead, so a new connection never waits for a thread to be created; each stamp carries
//! the request path, so several watchers share one endpoint and each stamp is attributed.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};

/// One request received.
pub struct Hit {
    /// When its first byte arrived: the kernel's receive timestamp over plain TCP, `read_at` over
    /// TLS.
    pub at: Instant,
    /// When this process's thread read its first byte.
    pub read_at: Instant,
    /// Request path.
    pub path: String,
    /// Whether it came on a connection that had carried an earlier request.
    pub reused: bool,
    /// First line of the probe file when its head was complete (what the app would load).
    pub loaded: Option<String>,
}

#[derive(Default)]
struct Hits {
    queue: Mutex<VecDeque<Hit>>,
    arrived: Condvar,
}

/// Threads kept blocked in `accept`, ready for the next connection.
const SPARE: usize = 3;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

struct Server {
    listener: TcpListener,
    idle: AtomicUsize,
    hits: Arc<Hits>,
    file: Option<PathBuf>,
    /// HTTPS: each connection is a rustls session (the stamp is the first decrypted byte).
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A blocking HTTP endpoint: every request is answered 200 and stamped.
pub struct HttpProbe {
    pub addr: SocketAddr,
    hits: Arc<Hits>,
    https: bool,
}

impl HttpProbe {
    pub fn start() -> HttpProbe {
        HttpProbe::start_reading(None)
    }

    /// A probe that also reads the first line of `file` at every request.
    pub fn start_reading(file: Option<PathBuf>) -> HttpProbe {
        HttpProbe::start_with(file, None)
    }

    /// An HTTPS probe serving the certificate chain and key (PEM) given.
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> HttpProbe {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("probe certificate");
        let key = PrivateKeyDer::from_pem_slice(key_pem).expect("probe key");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("probe TLS configuration");
        HttpProbe::start_with(None, Some(Arc::new(cfg)))
    }

    fn start_with(file: Option<PathBuf>, tls: Option<Arc<rustls::ServerConfig>>) -> HttpProbe {
        let https = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        // Turns the kernel's receive timestamps on (accepted sockets ask for them again).
        setsockopt(&listener, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Hits::default());
        let server = Arc::new(Server {
            listener,
            idle: AtomicUsize::new(0),
            hits: hits.clone(),
            file,
            tls,
        });
        for _ in 0..SPARE {
            spawn_acceptor(&server);
        }
        HttpProbe { addr, hits, https }
    }

    /// The URL of path `/-/reload`.
    pub fn url(&self) -> String {
        self.url_for("/-/reload")
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url_for(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Drops stamps of earlier calls.
    pub fn drain(&self) {
        self.hits.queue.lock().unwrap().clear();
    }

    /// Drops stamps of earlier calls to `path`.
    pub fn drain_path(&self, path: &str) {
        self.hits.queue.lock().unwrap().retain(|h| h.path != path);
    }

    pub fn next(&self, within: Duration) -> Option<Instant> {
        self.next_hit(within).map(|h| h.at)
    }

    /// The next request, whatever its path.
    pub fn next_hit(&self, within: Duration) -> Option<Hit> {
        self.take(within, |_| true)
    }

    /// The next request to `path`; requests to other paths stay queued.
    pub fn next_on(&self, path: &str, within: Duration) -> Option<Hit> {
        self.take(within, |h| h.path == path)
    }

    fn take(&self, within: Duration, want: impl Fn(&Hit) -> bool) -> Option<Hit> {
        let deadline = Instant::now() + within;
        let mut q = self.hits.queue.lock().unwrap();
        loop {
            if let Some(i) = q.iter().position(&want) {
                return q.remove(i);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            q = self.hits.arrived.wait_timeout(q, left).unwrap().0;
        }
    }
}

fn spawn_acceptor(server: &Arc<Server>) {
    server.idle.fetch_add(1, Ordering::SeqCst);
    let counted = server.clone();
    let server = server.clone();
    let spawned = std::thread::Builder::new()
        .name("probe".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            loop {
                let accepted = server.listener.accept();
                // Fewer than SPARE left in accept: add one, once this connection's first
                // request is stamped (creating a thread is not on the path being timed).
                let replenish = server.idle.fetch_sub(1, Ordering::SeqCst) <= SPARE;
                match accepted {
                    Ok((stream, _)) => {
                        let mut replenish = replenish;
                        let _ = stream.set_nodelay(true);
                        let _ = setsockopt(&stream, sockopt::ReceiveTimestampns, &true);
                        match &server.tls {
                            None => serve(stream, &server, &mut replenish),
                            Some(cfg) => {
                                if let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) {
                                    let tls = rustls::StreamOwned::new(conn, stream);
                                    serve(tls, &server, &mut replenish);
                                }
                            }
                        }
                        if replenish {
                            spawn_acceptor(&server);
                        }
                    }
                    Err(_) if replenish => spawn_acceptor(&server),
                    Err(_) => {}
                }
                if server.idle.load(Ordering::SeqCst) >= 2 * SPARE {
                    return;
                }
                server.idle.fetch_add(1, Ordering::SeqCst);
            }
        });
    if spawned.is_err() {
        counted.idle.fetch_sub(1, Ordering::SeqCst);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A connection whose first byte of a request can be stamped.
trait Stamped: Read + Write {
    /// Reads like `read`; also the moment the bytes arrived, if this stream knows it.
    fn read_stamped(&mut self, buf: &mut [u8]) -> io::Result<(usize, Option<Instant>)> {
        self.read(buf).map(|n| (n, None))
    }
}

impl Stamped for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {}

impl Stamped for TcpStream {
    /// One byte with its segment's receive timestamp (`SCM_TIMESTAMPNS`, the real-time clock),
    /// converted to an `Instant` by its age now.
    fn read_stamped(&mut self, buf: &mut [u8]) -> io::Result<(usize, Option<Instant>)> {
        let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let (n, stamp) = {
            let mut iov = [IoSliceMut::new(&mut buf[..1])];
            let msg = recvmsg::<()>(
                self.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let stamp = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(t) => Some(t),
                    _ => None,
                })
            });
            (msg.bytes, stamp)
        };
        let at = stamp.and_then(|t| {
            let arrived =
                SystemTime::UNIX_EPOCH + Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32);
            let (now, wall) = (Instant::now(), SystemTime::now());
            now.checked_sub(wall.duration_since(arrived).unwrap_or_default())
        });
        Ok((n, at))
    }
}

/// Serves the requests of one connection until it closes.
fn serve<S: Stamped>(mut s: S, server: &Arc<Server>, replenish: &mut bool) {
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut served = 0usize;
    loop {
        // The first byte of the next request: stamp as soon as it is read.
        let (at, read_at) = if pending.is_empty() {
            match s.read_stamped(&mut chunk) {
                Ok((0, _)) | Err(_) => return,
                Ok((n, arrived)) => {
                    let read_at = Instant::now();
                    pending.extend_from_slice(&chunk[..n]);
                    (arrived.unwrap_or(read_at), read_at)
                }
            }
        } else {
            let now = Instant::now();
            (now, now)
        };
        let head_end = loop {
            if let Some(p) = find(&pending, b"\r\n\r\n") {
                break p + 4;
            }
            if pending.len() > MAX_HEAD {
                return;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let http10 = request_line.ends_with("HTTP/1.0");
        let mut length = 0usize;
        let mut connection = String::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    length = value.trim().parse().unwrap_or(0);
                } else if name == "connection" {
                    connection = value.trim().to_ascii_lowercase();
                }
            }
        }
        while pending.len() < head_end + length {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
        pending.drain(..head_end + length);
        let close = connection.contains("close") || (http10 && !connection.contains("keep-alive"));
        let response: &[u8] = if close {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        };
        let loaded = server
            .file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().next().unwrap_or("").to_string());
        let written = s.write_all(response).and_then(|()| s.flush());
        server.hits.queue.lock().unwrap().push_back(Hit {
            at,
            read_at,
            path,
            reused: served > 0,
            loaded,
        });
        server.hits.arrived.notify_all();
        served += 1;
        if std::mem::take(replenish) {
            spawn_acceptor(server);
        }
        if close || written.is_err() {
            return;
        }
    }
}

static BASE: OnceLock<Instant> = OnceLock::new();
static LAST_HUP_NS: AtomicU64 = AtomicU64::new(0);
/// Write end of the pipe the handler wakes the waiter through (-1 until installed).
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// SIGHUP handler of this process, stamping delivery inside the handler itself. The waiter
/// sleeps in `poll` on a pipe the handler writes to (the self-pipe pattern): it does not wake
/// the CPU while it waits, so nothing of this process competes with the watcher being timed.
pub struct SignalProbe {
    read_end: std::os::fd::OwnedFd,
}

impl SignalProbe {
    pub fn install() -> SignalProbe {
        let base = *BASE.get_or_init(Instant::now);
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .expect("pipe");
        WAKE_FD.store(
            std::os::fd::IntoRawFd::into_raw_fd(write_end),
            Ordering::SeqCst,
        );
        // SAFETY: the action reads a clock, stores atomics and calls write(2), all
        // async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal_hook::consts::SIGHUP, move || {
                let ns = base.elapsed().as_nanos() as u64;
                LAST_HUP_NS.store(ns.max(1), Ordering::SeqCst);
                let fd = WAKE_FD.load(Ordering::SeqCst);
                if fd >= 0 {
                    let _ = libc::write(fd, [1u8].as_ptr().cast(), 1);
                }
            })
        }
        .expect("install SIGHUP handler");
        SignalProbe { read_end }
    }

    pub fn reset(&self) {
        let mut sink = [0u8; 64];
        while matches!(nix::unistd::read(&self.read_end, &mut sink), Ok(n) if n > 0) {}
        LAST_HUP_NS.store(0, Ordering::SeqCst);
    }

    /// Waits for the next SIGHUP after `reset`; the stamp was taken in the handler, so how
    /// soon this notices does not change the figure.
    pub fn wait(&self, within: Duration) -> Option<Instant> {
        use std::os::fd::AsFd;
        let deadline = Instant::now() + within;
        loop {
            let ns = LAST_HUP_NS.load(Ordering::SeqCst);
            if ns != 0 {
                return Some(*BASE.get().unwrap() + Duration::from_nanos(ns));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut fds = [nix::poll::PollFd::new(
                self.read_end.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
    }
}
