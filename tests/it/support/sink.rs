//! A real HTTP reload endpoint on 127.0.0.1 (hyper, on its own thread and runtime) that records
//! every call and can be told to answer an error, hang, or stop listening (connection refused).
//!
//! Like an app reloading on an HTTP call, it loads the credential at each call: with a probe
//! file, every recorded call says which version the app would hold after it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;

/// What the app would load at a call: read from disk when the call arrives.
pub type Probe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer with this status.
    Status(u16),
    /// Accept, read the request, never answer.
    Hang,
}

/// One call received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Version in the probe file when the call arrived (what the app loads).
    pub version: Option<String>,
    /// Status answered (None when hanging).
    pub answered: Option<u16>,
}

struct Inner {
    mode: Mutex<Mode>,
    calls: Mutex<Vec<Call>>,
    probe: Option<Probe>,
}

enum Control {
    Listen(std::sync::mpsc::Sender<()>),
    Refuse(std::sync::mpsc::Sender<()>),
}

/// The endpoint; stops on drop (the control channel closes, the server's runtime ends).
pub struct Sink {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    control: mpsc::UnboundedSender<Control>,
}

impl Sink {
    /// An endpoint answering 200.
    pub fn start() -> Sink {
        Sink::start_with_probe(None)
    }

    /// An endpoint that reads the version in `probe` at every call.
    pub fn start_with_probe(probe: Option<PathBuf>) -> Sink {
        Sink::start_with(probe.map(|p| -> Probe {
            Arc::new(move || {
                std::fs::read_to_string(&p).ok().map(|t| {
                    t.lines()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("version=")
                        .to_string()
                })
            })
        }))
    }

    /// An endpoint that records what `probe` says at every call.
    pub fn start_with(probe: Option<Probe>) -> Sink {
        let inner = Arc::new(Inner {
            mode: Mutex::new(Mode::Status(200)),
            calls: Mutex::new(Vec::new()),
            probe,
        });
        let (control, mut rx) = mpsc::unbounded_channel::<Control>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let shared = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
                let mut listener = Some(bind(addr).await);
                addr = listener.as_ref().unwrap().local_addr().unwrap();
                addr_tx.send(addr).unwrap();
                loop {
                    let accepted = async {
                        match &listener {
                            Some(l) => l.accept().await.ok(),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        c = rx.recv() => match c {
                            Some(Control::Refuse(done)) => { listener = None; let _ = done.send(()); }
                            Some(Control::Listen(done)) => {
                                if listener.is_none() { listener = Some(bind(addr).await); }
                                let _ = done.send(());
                            }
                            None => return,
                        },
                        Some((stream, _)) = accepted => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| handle(shared.clone(), req));
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv().expect("sink address");
        Sink {
            addr,
            inner,
            control,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets how the endpoint answers.
    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// Stops listening: connections are refused until [`Sink::listen`].
    pub fn refuse(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Refuse(tx)).unwrap();
        rx.recv().unwrap();
    }

    /// Listens again on the same port.
    pub fn listen(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Listen(tx)).unwrap();
        rx.recv().unwrap();
    }

    /// Calls received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Number of calls received so far.
    pub fn count(&self) -> usize {
        self.inner.calls.lock().unwrap().len()
    }

    /// Calls answered with 2xx (successful deliveries).
    pub fn delivered(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }
}

async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mode = *inner.mode.lock().unwrap();
    let version = inner.probe.as_ref().and_then(|p| p());
    let call = Call {
        at: Instant::now(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        version,
        answered: match mode {
            Mode::Status(s) => Some(s),
            Mode::Hang => None,
        },
    };
    inner.calls.lock().unwrap().push(call);
    match mode {
        Mode::Status(s) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            *resp.status_mut() = hyper::StatusCode::from_u16(s).unwrap();
            Ok(resp)
        }
        Mode::Hang => std::future::pending().await,
    }
}
