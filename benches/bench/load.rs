//! A paced, open-loop load of HTTPS POSTs over a few kept-alive connections (rustls, one thread
//! each, hand-written HTTP/1.1): request `i` is due at `start + i × period` whatever came before
//! it. The first connection free takes the next request due, so a request waits when every
//! connection is busy, and its latency, from its due time to the last byte of its answer, counts
//! that wait (a closed loop would hide it by sending less).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Time a connection or an answer may take before the request counts as failed.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer head read.
const MAX_HEAD: usize = 64 * 1024;

pub type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Connections to one HTTPS server on 127.0.0.1, trusting one CA.
pub struct Client {
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
}

impl Client {
    /// A client of `addr` (an IP address the certificate names) trusting the CA in `ca_pem`.
    pub fn new(ca_pem: &[u8], addr: SocketAddr) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| format!("the CA: {e}"))?;
            roots.add(cert).map_err(|e| format!("the CA: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            config: Arc::new(config),
            addr,
        })
    }

    /// A new connection (its handshake made with the first request).
    pub fn connect(&self) -> Result<Stream, String> {
        let tcp =
            TcpStream::connect_timeout(&self.addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(TIMEOUT)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| format!("socket options: {e}"))?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

/// `POST path` with a JSON `body` on `s` (kept alive): the answer and the instant its last byte
/// was read.
pub fn post(s: &mut Stream, path: &str, body: &[u8]) -> Result<(Answer, Instant), String> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request)
        .and_then(|()| s.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    // (where the body starts, where it ends), once the head is in.
    let mut body_at: Option<(usize, usize)> = None;
    loop {
        if let Some((_, end)) = body_at
            && buf.len() >= end
        {
            break;
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the connection closed before the whole answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if body_at.is_none() {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]);
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or("an answer without Content-Length")?;
                body_at = Some((at + 4, at + 4 + length));
            } else if buf.len() > MAX_HEAD {
                return Err("an answer head over 64 KiB".into());
            }
        }
    }
    let done = Instant::now();
    let (from, to) = body_at.unwrap_or_default();
    let status = String::from_utf8_lossy(&buf[..from])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf[from..to].to_vec();
    Ok((Answer { status, body }, done))
}

/// What a paced load gave.
#[derive(Default)]
pub struct Outcome {
    /// Due time → last byte of the answer, of the requests answered as `check` wants.
    pub latencies: Vec<Duration>,
    /// Requests not answered, or answered otherwise.
    pub failed: usize,
    /// Connections made again after one failed.
    pub reconnects: usize,
    pub first_error: Option<String>,
}

impl Outcome {
    fn fail(&mut self, i: usize, e: String) {
        self.failed += 1;
        self.first_error.get_or_insert(format!("request {i}: {e}"));
    }
}

/// How a paced load runs: `total` requests to `path`, request `i` due at `start + i × period`.
pub struct Pace {
    pub path: &'static str,
    pub start: Instant,
    pub period: Duration,
    pub total: usize,
}

/// Runs `pace` over `streams` (one thread each; a connection that fails is made again for the
/// next request). `body(i)` is request `i`'s body; `check(i, answer)` says what is wrong with its
/// answer.
pub fn paced(
    client: &Client,
    streams: Vec<Stream>,
    pace: &Pace,
    body: &(dyn Fn(usize) -> Vec<u8> + Sync),
    check: &(dyn Fn(usize, &Answer) -> Result<(), String> + Sync),
) -> Outcome {
    let next = AtomicUsize::new(0);
    let parts: Vec<Outcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = streams
            .into_iter()
            .map(|stream| {
                let next = &next;
                scope.spawn(move || {
                    let mut o = Outcome::default();
                    let mut stream = Some(stream);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= pace.total {
                            break o;
                        }
                        let due = pace.start + pace.period * i as u32;
                        let request = body(i);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let s = match stream.take() {
                            Some(s) => s,
                            None => match client.connect() {
                                Ok(s) => {
                                    o.reconnects += 1;
                                    s
                                }
                                Err(e) => {
                                    o.fail(i, e);
                                    continue;
                                }
                            },
                        };
                        let mut s = s;
                        match post(&mut s, pace.path, &request) {
                            Ok((answer, done)) => {
                                match check(i, &answer) {
                                    Ok(()) => o.latencies.push(done.saturating_duration_since(due)),
                                    Err(e) => o.fail(i, e),
                                }
                                stream = Some(s);
                            }
                            Err(e) => o.fail(i, e),
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut all = Outcome::default();
    for p in parts {
        all.latencies.extend(p.latencies);
        all.failed += p.failed;
        all.reconnects += p.reconnects;
        if all.first_error.is_none() {
            all.first_error = p.first_error;
        }
    }
    all
}
