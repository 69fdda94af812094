//! The admin port under abuse: what a client on the pod network can do to the daemon's
//! `--listen` port, and what that costs the daemon (memory), its probes (/healthz) and its reloads.
//!
//! Each abuse runs for about 10 s against a fresh daemon watching a kubelet volume with an HTTP
//! target; meanwhile RSS is sampled every 100 ms, /healthz is timed every 100 ms on a fresh
//! connection, and 10 rotations are timed swap → call (beside 10 measured just before, quiet).
//!
//! - (a) idle heads: 2,000 connections, each sending 4 KiB of a request head that never ends and
//!   then holding the connection (a connection the daemon closes stays closed);
//! - (b) big heads: 100 connections, each trying to send 350 KiB of headers;
//! - (c) (a) against a daemon started with RLIMIT_NOFILE 1024 (soft and hard);
//! - (d) a flood: (a), but every connection the daemon closes is opened again at once. No
//!   server with a bounded number of connections keeps every newcomer served then (the kernel's
//!   accept queue overflows); reported, not a goal;
//! - (e) a flood of big heads: (b), each connection opened again once answered; reported, not a
//!   goal (on two cores the abusers' own CPU decides the probes' latency).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use secret_reloader::demo::atomic_writer::AtomicWriter;

use crate::daemon::{Daemon, get_text, rss_kib, timed_get};
use crate::probe::HttpProbe;
use crate::util::{Stats, failed_probes, mib, ms_cell, rotate, stats, volume};
use crate::{Figures, Opts};

const WINDOW: Duration = Duration::from_secs(10);
const RAMP: Duration = Duration::from_secs(1);
const SAMPLE: Duration = Duration::from_millis(100);
const ROTATIONS: usize = 10;
const PATH: &str = "/admin";
/// Connections of abuse (a) and (c), and of (b).
const SLOW: usize = 2000;
const BIG: usize = 100;
/// Descriptors this process keeps for everything else.
const RESERVE: u64 = 256;

/// One abuse's figures.
pub struct AdminRow {
    pub abuse: String,
    pub rss_start_kib: u64,
    pub rss_max_kib: u64,
    pub healthz: Stats,
    pub healthz_failed: usize,
    pub quiet: Stats,
    pub loaded: Stats,
    pub counts: String,
    pub error: Option<String>,
}

#[derive(Clone, Copy)]
enum Abuse {
    Idle(usize),
    Flood(usize),
    Big(usize),
    BigFlood(usize),
}

#[derive(Default)]
struct Counts {
    connects: AtomicU64,
    connect_failed: AtomicU64,
    closed: AtomicU64,
    answered: AtomicU64,
    status_431: AtomicU64,
}

/// Raises this process's soft open-files limit to the hard one; the hard limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct owned here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Admin port under abuse\n");
    let limit = raise_nofile();
    let slow = SLOW.min(limit.saturating_sub(RESERVE) as usize);
    let fewer = if slow < SLOW {
        format!(" (only {slow}: this process's open-files limit is {limit})")
    } else {
        String::new()
    };
    let cases = [
        (
            format!("(a) {slow} idle connections × 4 KiB of a head that never ends{fewer}"),
            Abuse::Idle(slow),
            None,
        ),
        (
            format!("(b) {BIG} connections × 350 KiB of headers"),
            Abuse::Big(BIG),
            None,
        ),
        (
            format!("(c) as (a), daemon under RLIMIT_NOFILE 1024{fewer}"),
            Abuse::Idle(slow),
            Some(1024),
        ),
        (
            format!("(d) a flood: as (a), every closed connection opened again at once{fewer}"),
            Abuse::Flood(slow),
            None,
        ),
        (
            "(e) a flood: as (b), every connection opened again once answered".to_string(),
            Abuse::BigFlood(BIG),
            None,
        ),
    ];
    let http = HttpProbe::start();
    let url = http.url_for(PATH);
    for (label, abuse, nofile) in cases {
        let (_dir, w) = volume("admin");
        let vol = w.dir().to_str().unwrap().to_string();
        let args = [
            "--watch",
            &vol,
            "--reload-url",
            &url,
            "--min-reload-interval",
            "0",
            "--reload-on-start",
            "never",
        ];
        let row = match Daemon::try_start(&o.bin, &args, nofile) {
            Ok(d) => measure(&d, &w, &http, abuse, label),
            Err(e) => AdminRow {
                abuse: label,
                rss_start_kib: 0,
                rss_max_kib: 0,
                healthz: stats(Vec::new()),
                healthz_failed: 0,
                quiet: stats(Vec::new()),
                loaded: stats(Vec::new()),
                counts: String::new(),
                error: Some(e.lines().next().unwrap_or("").to_string()),
            },
        };
        f.admin.push(row);
    }
    let _ = writeln!(
        out,
        "Each abuse about {} s against a fresh daemon; RSS and a fresh-connection GET /healthz every \
         {} ms throughout; {ROTATIONS} rotations swap → call before (quiet) and during.\n",
        WINDOW.as_secs(),
        SAMPLE.as_millis()
    );
    let _ = writeln!(
        out,
        "| abuse | RSS max (MiB) | /healthz median ms | /healthz max ms | reload median ms (quiet → under abuse) |\n|---|---|---|---|---|"
    );
    for r in &f.admin {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "| {} | daemon did not start: {e} | | | |", r.abuse);
            continue;
        }
        let failed = failed_probes(r.healthz_failed, r.healthz.n);
        let _ = writeln!(
            out,
            "| {} | {:.2} (start {:.2}) | {} | {}{failed} | {} → {}{} |",
            r.abuse,
            mib(r.rss_max_kib),
            mib(r.rss_start_kib),
            ms_cell(Some(r.healthz.median)),
            ms_cell(Some(r.healthz.max)),
            ms_cell(Some(r.quiet.median)),
            ms_cell(Some(r.loaded.median)),
            if r.loaded.n < ROTATIONS {
                format!(" ({} of {ROTATIONS} reloaded)", r.loaded.n)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out);
    for r in f.admin.iter().filter(|r| r.error.is_none()) {
        let _ = writeln!(
            out,
            "- {}: {}",
            r.abuse.split(' ').next().unwrap_or(""),
            r.counts
        );
    }
    let _ = writeln!(out);
}

/// Rotations swap → call, one at a time, `gap` apart (the first at `from`).
fn reloads(w: &AtomicWriter, http: &HttpProbe, n: usize, from: Instant, gap: Duration) -> Stats {
    let mut v = Vec::new();
    for r in 0..n {
        sleep_until(from + gap * r as u32);
        http.drain_path(PATH);
        let swapped = rotate(w, r + 1);
        match http.next_on(PATH, Duration::from_secs(3)) {
            Some(h) => v.push(h.at.saturating_duration_since(swapped)),
            None => eprintln!("  admin: rotation {r} without a call within 3 s"),
        }
    }
    stats(v)
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

fn measure(
    d: &Daemon,
    w: &AtomicWriter,
    http: &HttpProbe,
    abuse: Abuse,
    label: String,
) -> AdminRow {
    std::thread::sleep(Duration::from_millis(300));
    let quiet = reloads(
        w,
        http,
        ROTATIONS,
        Instant::now(),
        Duration::from_millis(50),
    );
    let rss_start = d.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let (addr, pid) = (d.addr, d.pid());
    let overflows0 = listen_overflows();
    let (daemon_ticks0, own_ticks0) = (d.cpu_ticks(), own_ticks());
    let t0 = Instant::now();

    let rss = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(rss_kib(pid));
                std::thread::sleep(SAMPLE);
            }
            max
        })
    };
    let healthz = {
        let stop = stop.clone();
        std::thread::spawn(move || probe_healthz(addr, &stop, SAMPLE))
    };
    let abusers: Vec<JoinHandle<()>> = match abuse {
        Abuse::Idle(n) => spawn_abusers(n, addr, &stop, &counts, idle_head),
        Abuse::Flood(n) => spawn_abusers(n, addr, &stop, &counts, slow_head),
        Abuse::Big(n) => spawn_abusers(n, addr, &stop, &counts, big_head),
        Abuse::BigFlood(n) => spawn_abusers(n, addr, &stop, &counts, big_head_flood),
    };
    let loaded = reloads(
        w,
        http,
        ROTATIONS,
        t0 + RAMP,
        (WINDOW - RAMP - Duration::from_millis(500)) / ROTATIONS as u32,
    );
    sleep_until(t0 + WINDOW);
    stop.store(true, Ordering::Relaxed);
    let abusers_n = abusers.len();
    for a in abusers {
        let _ = a.join();
    }
    let window = t0.elapsed();
    let (daemon_ticks, own) = (d.cpu_ticks() - daemon_ticks0, own_ticks() - own_ticks0);
    let overflows = listen_overflows().zip(overflows0).map(|(a, b)| a - b);
    let rss_max = rss.join().unwrap_or(0).max(rss_start);
    let (hz, hz_failed) = healthz.join().unwrap_or_default();
    let slow_probes = hz
        .iter()
        .filter(|d| **d >= Duration::from_millis(900))
        .count();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let dropped = get_text(addr, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("admin_connections_dropped_total{"))
        .map(|l| {
            let reason = l.split('"').nth(1).unwrap_or("?");
            let n = l.rsplit(' ').next().unwrap_or("?");
            format!("{reason} {n}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut summary = format!(
        "{abusers_n} abuser threads; {} connections made, {} connects failed or timed out (1 s), \
         {} closed by the daemon, {} answered",
        c(&counts.connects),
        c(&counts.connect_failed),
        c(&counts.closed),
        c(&counts.answered),
    );
    if matches!(abuse, Abuse::Big(_)) {
        let _ = write!(summary, " ({} with 431)", c(&counts.status_431));
    }
    let _ = write!(
        summary,
        "; the daemon's admin_connections_dropped_total: {}",
        if dropped.is_empty() {
            "not found".into()
        } else {
            dropped
        }
    );
    let tick = ticks_per_second();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_else(|| "?".into());
    let _ = write!(
        summary,
        "; the daemon's open-files limit (soft/hard): {nofile}"
    );
    let _ = write!(
        summary,
        "; /healthz answers after ≥ 0.9 s (a SYN retried): {slow_probes}; the kernel's \
         ListenOverflows over the window: {}; CPU over {:.1} s (2 cores): daemon {:.1} s, this \
         process (abusers, probes) {:.1} s",
        overflows.map_or("?".into(), |n| n.to_string()),
        window.as_secs_f64(),
        daemon_ticks as f64 / tick,
        own as f64 / tick,
    );
    AdminRow {
        abuse: label,
        rss_start_kib: rss_start,
        rss_max_kib: rss_max,
        healthz: stats(hz),
        healthz_failed: hz_failed,
        quiet,
        loaded,
        counts: summary,
        error: None,
    }
}

/// GET /healthz on a fresh connection every `every` until `stop`: the times of the answers that
/// were 200, and how many were not (or not within 3 s).
pub fn probe_healthz(
    addr: SocketAddr,
    stop: &AtomicBool,
    every: Duration,
) -> (Vec<Duration>, usize) {
    let mut v = Vec::new();
    let mut failed = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match timed_get(addr, "/healthz", Duration::from_secs(3)) {
            Some((200, d)) => v.push(d),
            _ => failed += 1,
        }
        next = (next + every).max(Instant::now());
        sleep_until(next);
    }
    (v, failed)
}

fn spawn_abusers(
    n: usize,
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
    body: fn(SocketAddr, &AtomicBool, &Counts),
) -> Vec<JoinHandle<()>> {
    (0..n)
        .filter_map(|_| {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || body(addr, &stop, &counts))
                .ok()
        })
        .collect()
}

fn connect(addr: SocketAddr, stop: &AtomicBool, c: &Counts) -> Option<TcpStream> {
    while !stop.load(Ordering::Relaxed) {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => {
                c.connects.fetch_add(1, Ordering::Relaxed);
                return Some(s);
            }
            Err(_) => {
                c.connect_failed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    None
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// (a): 4 KiB of a request head without its end, then wait for the daemon to close; again.
/// (a), (c): one connection, 4 KiB of a head that never ends, held until the daemon closes it.
fn idle_head(addr: SocketAddr, stop: &AtomicBool, c: &Counts) {
    slow_heads(addr, stop, c, false)
}

/// (d): as (a), opened again whenever the daemon closes it.
fn slow_head(addr: SocketAddr, stop: &AtomicBool, c: &Counts) {
    slow_heads(addr, stop, c, true)
}

fn slow_heads(addr: SocketAddr, stop: &AtomicBool, c: &Counts, again: bool) {
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
    head.resize(4096, b'a');
    let mut first = true;
    while let Some(mut s) = (first || again).then(|| connect(addr, stop, c)).flatten() {
        first = false;
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        if s.write_all(&head).is_err() {
            c.closed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut buf = [0u8; 512];
        let mut answered = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    c.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(_) => {
                    if !std::mem::replace(&mut answered, true) {
                        c.answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if timed_out(&e) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Err(_) => {
                    c.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// (b): up to 350 KiB of headers, then read what the daemon answers; again.
/// (b): one connection sending 350 KiB of headers, then reading what the daemon answers.
fn big_head(addr: SocketAddr, stop: &AtomicBool, c: &Counts) {
    big_heads(addr, stop, c, false)
}

/// (e): as (b), again and again.
fn big_head_flood(addr: SocketAddr, stop: &AtomicBool, c: &Counts) {
    big_heads(addr, stop, c, true)
}

fn big_heads(addr: SocketAddr, stop: &AtomicBool, c: &Counts, again: bool) {
    let mut line = b"X-Big: ".to_vec();
    line.resize(1022, b'b');
    line.extend_from_slice(b"\r\n");
    let mut first = true;
    while let Some(mut s) = (first || again).then(|| connect(addr, stop, c)).flatten() {
        first = false;
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut ok = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").is_ok();
        let mut sent = 0;
        while ok && sent < 350 * 1024 && !stop.load(Ordering::Relaxed) {
            ok = s.write_all(&line).is_ok();
            sent += line.len();
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                c.answered.fetch_add(1, Ordering::Relaxed);
                if buf[..n].starts_with(b"HTTP/1.1 431") {
                    c.status_431.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// TcpExt ListenOverflows (system-wide): connections dropped because a listen queue was full.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// utime + stime of this process, in clock ticks.
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    // SAFETY: a plain query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}
