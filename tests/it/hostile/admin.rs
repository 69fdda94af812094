//! The admin port under abuse: clients outside the pod (from a network namespace of the test's
//! own, so the peer is not loopback), slow clients holding connections, oversized heads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::process::{in_netns_of, running, vm_rss_kib};
use crate::support::{Daemon, Fixture, bin, body_of, eventually, get_with, http_get, metric};

/// The daemon in a new network namespace, listening on 10.9.9.9 (not loopback). The address
/// sits on a dummy interface where the kernel has one, else on the namespace's own `lo`.
fn daemon_in_netns(args: &[&str]) -> Daemon {
    let script = "ip link set lo up && \
        { { ip link add d0 type dummy && ip addr add 10.9.9.9/32 dev d0 && ip link set d0 up; } 2>/dev/null \
          || ip addr add 10.9.9.9/32 dev lo; } && exec \"$0\" \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "sh", "-c", script, bin()])
        .args(args)
        .args(["--listen", "10.9.9.9:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Daemon::spawn(cmd)
}

#[test]
fn status_is_refused_to_clients_outside_the_pod_without_the_token() {
    let f = Fixture::new();
    let token_file = f.dir.path().join("status-token");
    std::fs::write(&token_file, "st4tus-t0ken-one\n").unwrap();
    let url = f.url();
    let d = daemon_in_netns(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &url,
        "--status-token-file",
        token_file.to_str().unwrap(),
    ]);
    let (addr, pid) = (d.addr, d.pid());
    assert_eq!(addr.ip().to_string(), "10.9.9.9");
    let get = move |path: &'static str, extra: Vec<String>| {
        in_netns_of(pid, move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            get_with(addr, path, &extra).expect("request inside the namespace")
        })
    };
    eventually(
        "the daemon to be ready",
        || get("/readyz", vec![]).0,
        |c| *c == 200,
    );
    assert_eq!(get("/status", vec![]).0, 403);
    assert_eq!(
        get("/status", vec!["Authorization: Bearer wrong".into()]).0,
        403
    );
    assert_eq!(
        get(
            "/status",
            vec!["Authorization: Bearer st4tus-t0ken-on".into()]
        )
        .0,
        403
    );
    let (code, resp) = get(
        "/status",
        vec!["Authorization: Bearer st4tus-t0ken-one".into()],
    );
    assert_eq!(code, 200, "{resp}");
    let status: serde_json::Value = serde_json::from_str(body_of(&resp)).unwrap();
    let files = status["watches"][0]["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for file in files {
        assert!(file.get("size").is_none(), "a size is shown: {file}");
        assert!(file["empty"].is_boolean(), "{file}");
    }
    assert!(!body_of(&resp).contains("\"size\""), "{resp}");
    assert!(
        !body_of(&resp).contains("st4tus-t0ken"),
        "the token is shown"
    );
    let (code, resp) = get("/metrics", vec![]);
    assert_eq!(code, 200);
    assert!(body_of(&resp).contains("secret_reloader_build_info"));
    assert_eq!(get("/healthz", vec![]).0, 200);
    // The token is read at every request: a rotated one replaces the old one.
    std::fs::write(&token_file, "st4tus-t0ken-two\n").unwrap();
    assert_eq!(
        get(
            "/status",
            vec!["Authorization: Bearer st4tus-t0ken-one".into()]
        )
        .0,
        403
    );
    assert_eq!(
        get(
            "/status",
            vec!["Authorization: Bearer st4tus-t0ken-two".into()]
        )
        .0,
        200
    );
    assert!(!d.log().contains("st4tus-t0ken"), "{}", d.log());

    // Without a token file, nothing outside the pod reads /status.
    let d2 = daemon_in_netns(&["--watch", f.vol(), "--reload-url", &url]);
    let addr2 = d2.addr;
    let pid2 = d2.pid();
    let code = eventually(
        "an answer",
        || {
            in_netns_of(pid2, move || {
                get_with(
                    addr2,
                    "/status",
                    &["Authorization: Bearer st4tus-t0ken-two"],
                )
                .map(|r| r.0)
                .unwrap_or(0)
            })
        },
        |c| *c != 0,
    );
    assert_eq!(code, 403);
}

/// A connection that sent a partial request head of about 4 KiB and holds it.
fn slow_head(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let mut head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    head.push_str(&"a".repeat(4096 - head.len()));
    s.write_all(head.as_bytes()).ok()?;
    Some(s)
}

fn timed_healthz(addr: SocketAddr) -> (u16, Duration) {
    let t = Instant::now();
    let code = http_get(addr, "/healthz").map(|r| r.0).unwrap_or(0);
    (code, t.elapsed())
}

/// What probes saw while slow clients held the port.
#[derive(Debug, Default)]
struct Under {
    times: Vec<Duration>,
    open_max: f64,
    rss_max_kib: u64,
}

/// `n` probes of `/healthz` from fresh connections, each followed by a `/metrics` scrape (the
/// open connections gauge) and a look at the daemon's VmRSS.
fn probe(d: &Daemon, n: usize) -> Under {
    let mut u = Under::default();
    for _ in 0..n {
        let (code, took) = timed_healthz(d.addr);
        assert_eq!(
            code, 200,
            "/healthz failed under the slow clients after {took:?}"
        );
        u.times.push(took);
        let (code, metrics) = http_get(d.addr, "/metrics").unwrap();
        assert_eq!(code, 200);
        let open = metric(&metrics, "secret_reloader_admin_connections_open", &[]).unwrap();
        u.open_max = u.open_max.max(open);
        u.rss_max_kib = u.rss_max_kib.max(vm_rss_kib(d.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    u.times.sort();
    u
}

/// Every probe under 2 s (a probe held out waits for a slow head's 5 s), the median under
/// 500 ms, and the daemon's memory at most 4 MiB above `idle_kib`, its VmRSS before the slow
/// clients came (64 connections are kept at most, each with its head buffer: about 2 MiB; one
/// per slow client would be several more).
fn answered_fast(u: &Under, idle_kib: u64, what: &str) {
    let slowest = *u.times.last().unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "{what}: a probe took {slowest:?}: {u:?}"
    );
    let median = u.times[u.times.len() / 2];
    assert!(
        median < Duration::from_millis(500),
        "{what}: most probes must answer fast: {u:?}"
    );
    assert!(
        u.rss_max_kib < idle_kib + 4 * 1024,
        "{what}: VmRSS reached {} KiB, {} KiB idle",
        u.rss_max_kib,
        idle_kib
    );
}

#[test]
fn slow_clients_holding_partial_heads_keep_no_probe_out() {
    let f = Fixture::new();
    let url = f.url();
    let d = Daemon::start(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    let addr = d.addr;
    // The daemon's memory once its admin server has answered a few probes and scrapes.
    let idle_kib = probe(&d, 3).rss_max_kib;
    // 500 connections, each holding a partial head. The probes fit in the 5 s the daemon gives
    // a head, so the slow clients are there all along.
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..500).filter_map(|_| slow_head(addr)).collect();
    assert!(
        held.len() >= 450,
        "only {} slow connections opened",
        held.len()
    );
    let under = probe(&d, 15);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the probes took too long to be made under the slow clients: {:?}",
        started.elapsed()
    );
    answered_fast(&under, idle_kib, "500 slow heads held");
    assert!(
        under.open_max <= 64.0,
        "{} admin connections open: {under:?}",
        under.open_max
    );
    let dropped = d
        .metric("admin_connections_dropped_total", &[("reason", "capacity")])
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "the slow clients were never evicted");

    // A flood that keeps replacing its slow connections while the probes run. (The open
    // connections gauge is not checked here: a connection evicted for a new one is closed when
    // its task runs next, so a scrape can count it for a moment.)
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = slow_head(addr) {
                    let n = held.len();
                    held[i % n] = s;
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            i
        })
    };
    let under = probe(&d, 20);
    stop.store(true, Ordering::Relaxed);
    let replaced = attacker.join().unwrap();
    assert!(
        replaced >= 100,
        "the flood made only {replaced} connections"
    );
    answered_fast(&under, idle_kib, "reconnecting slow heads");
    assert!(
        under.open_max <= 64.0 + 8.0,
        "{} admin connections open: {under:?}",
        under.open_max
    );
    // The reload path was never held up.
    f.rotate("2");
    let calls = eventually("the reload", || f.sink.calls(), |c| !c.is_empty());
    assert_eq!(calls[0].version.as_deref(), Some("2"));
}

#[test]
fn oversized_request_head_gets_431_or_a_close_and_the_daemon_goes_on() {
    let f = Fixture::new();
    let url = f.url();
    let d = Daemon::start(&["--watch", f.vol(), "--reload-url", &url]);
    d.wait_ready();
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", d.addr);
    for i in 0..32 {
        head.push_str(&format!("X-Pad-{i:02}: {}\r\n", "b".repeat(1012)));
    }
    head.push_str("\r\n");
    assert!(head.len() >= 32 * 1024);
    // The daemon may close before all of it is written.
    let _ = s.write_all(head.as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431"),
        "an oversized head was answered: {resp}"
    );
    let (code, _) = http_get(d.addr, "/healthz").unwrap();
    assert_eq!(code, 200);
    f.rotate("2");
    eventually("the reload", || f.sink.count(), |n| *n == 1);
    assert!(running(d.pid()));
}
