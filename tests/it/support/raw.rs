//! An HTTP endpoint on 127.0.0.1 written on raw TCP, for what [`super::sink::Sink`] (hyper)
//! would normalise away: it records every request head exactly as it arrived.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a [`RawEndpoint`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMode {
    /// `200 OK` with the body, then close.
    Answer,
    /// Read the request head, never answer, keep the connection open.
    Hang,
}

struct RawInner {
    mode: Mutex<RawMode>,
    heads: Mutex<Vec<String>>,
    held: Mutex<Vec<TcpStream>>,
    body: String,
    stop: AtomicBool,
}

/// An HTTP endpoint on 127.0.0.1 written on raw TCP: it records every request head exactly as it
/// arrived (request line with its query, every header line, duplicates included).
pub struct RawEndpoint {
    pub addr: SocketAddr,
    inner: Arc<RawInner>,
}

impl RawEndpoint {
    /// An endpoint answering `200` with `body`.
    pub fn start(body: &str) -> RawEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(RawInner {
            mode: Mutex::new(RawMode::Answer),
            heads: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            body: body.to_string(),
            stop: AtomicBool::new(false),
        });
        let shared = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve_raw(&shared, stream));
            }
        });
        RawEndpoint { addr, inner }
    }

    /// `http://127.0.0.1:<port><path_and_query>`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn set(&self, mode: RawMode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// Request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.inner.heads.lock().unwrap().clone()
    }

    /// Request heads whose request line starts with `method`.
    pub fn requests(&self, method: &str) -> Vec<String> {
        self.heads()
            .into_iter()
            .filter(|h| h.starts_with(&format!("{method} ")))
            .collect()
    }
}

impl Drop for RawEndpoint {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.held.lock().unwrap().clear();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_raw(inner: &RawInner, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
            if head.len() > 64 * 1024 {
                return;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        inner.heads.lock().unwrap().push(head);
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        match *inner.mode.lock().unwrap() {
            RawMode::Answer => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{}",
                    inner.body.len(),
                    inner.body
                );
                let _ = stream.write_all(resp.as_bytes());
                return;
            }
            RawMode::Hang => {
                if let Ok(s) = stream.try_clone() {
                    inner.held.lock().unwrap().push(s);
                }
                // Read on (nothing more should come) until the client or the endpoint closes.
            }
        }
    }
}

/// The header lines of a raw request head named `name` (case-insensitive), values trimmed.
pub fn header_lines(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}
