//! Fuzzes what the admin server answers: any method, path, header and peer, against a status
//! board holding arbitrary (non-UTF-8, control-character) paths, messages and names. Every
//! answer must be produced without a panic, and /status must be valid JSON whatever it holds.
#![no_main]

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use secret_reloader::assess::Assessment;
use secret_reloader::process::ProcFs;
use secret_reloader::process::identity::Sidecar;
use secret_reloader::report::metrics::Metrics;
use secret_reloader::report::server::{Admin, Liveness, respond};
use secret_reloader::report::status::{Board, LastScan};
use secret_reloader::scan::fingerprint::FingerprintKey;
use secret_reloader::scan::{FileEntry, Layout, Problem, ProblemKind, Scan};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, header, file, watch, message) =
        (next(), next(), next(), next(), next(), next());
    let peer_byte = data.first().copied().unwrap_or(0);

    let mut config =
        secret_reloader::Config::from_argv(["secret-reloader", "--watch", "/v", "--exec", "true"])
            .unwrap();
    Arc::make_mut(&mut config.groups[0]).paths = vec![PathBuf::from(OsStr::from_bytes(watch))];
    static SIDECAR: OnceLock<Sidecar> = OnceLock::new();
    let sidecar = SIDECAR.get_or_init(|| Sidecar::current(&ProcFs::new("/proc")));
    let board = Arc::new(Board::new(Arc::new(config), sidecar));
    let group = board.register_group("default");
    let key = FingerprintKey::new(b"k".to_vec());
    let file_path = PathBuf::from(OsStr::from_bytes(file));
    let scan = Scan {
        files: vec![FileEntry {
            path: file_path.clone(),
            real_path: file_path.clone(),
            uid: 0,
            gid: 0,
            mode: 0o640,
            empty: false,
            fingerprint: key.digest(data),
        }],
        layouts: vec![(file_path.clone(), Layout::File)],
        problems: vec![Problem {
            kind: ProblemKind::Unreadable,
            message: String::from_utf8_lossy(message).into_owned(),
        }],
        skipped: vec![String::from_utf8_lossy(message).into_owned()],
        fingerprint: None,
        inconsistent: Vec::new(),
        not_checked: Vec::new(),
        cert_expiry: vec![(file_path, SystemTime::UNIX_EPOCH)],
        tokens: Vec::new(),
        certs: Vec::new(),
        content_time: None,
        watch: Default::default(),
        work: secret_reloader::scan::Budget {
            bytes: 0,
            entries: 0,
        },
        torn: false,
        closing: Default::default(),
    };
    group.lock().unwrap().update(
        &scan,
        &Assessment::default(),
        LastScan {
            at: SystemTime::now(),
            started_monotonic_ns: 0,
            duration_ms: 0.0,
        },
        &secret_reloader::scan::fingerprint::FingerprintKey::new(b"fuzz".to_vec()),
    );
    board.register_target(
        &String::from_utf8_lossy(message),
        "default",
        secret_reloader::action::Kind::Exec,
    );

    let rt = runtime();
    let (liveness, responder) = Liveness::new();
    let responder = rt.spawn(responder);
    let admin = Admin {
        board,
        metrics: Arc::new(Metrics::new()),
        liveness,
        status_token_file: None,
    };
    let method = hyper::Method::from_bytes(method).unwrap_or(hyper::Method::GET);
    let path = String::from_utf8_lossy(path);
    let mut headers = hyper::HeaderMap::new();
    if let Ok(v) = hyper::header::HeaderValue::from_bytes(header) {
        headers.insert(hyper::header::AUTHORIZATION, v);
    }
    let peer: SocketAddr = if peer_byte & 1 == 0 {
        "127.0.0.1:1".parse().unwrap()
    } else {
        "10.0.0.1:1".parse().unwrap()
    };
    let resp = rt.block_on(respond(&admin, &method, &path, &headers, peer));
    if path == "/status" && method == hyper::Method::GET && peer_byte & 1 == 0 {
        let body = rt.block_on(http_body_util::BodyExt::collect(resp.into_body()));
        let bytes = body.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("/status is JSON");
        assert!(doc["watches"].is_array());
    }
    responder.abort();
});
