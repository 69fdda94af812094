//! Stalls: a file that would block or take long to read, in one watch group, and what that does
//! to the rest of the daemon. The daemon runs with a configuration file of two groups, `stalled`
//! (with the trap) and `other` (a kubelet volume with an HTTP target):
//!
//! - (a) a FIFO as the `stalled` group's `pid_file` (a signal target), its volume rotated;
//! - (b) a FIFO as the `bearer_token_file` of the `stalled` group's HTTP target, rotated;
//! - (c) a 2 GiB sparse file created in the `stalled` group's watched plain directory, and a
//!   small file written beside it so that a scan happens;
//! - (d) the `stalled` group's volume served by a FUSE mount whose reads never return (the
//!   tests' `stallfs`), read after a rotation (SIGHUP asks for the scan: FUSE carries no
//!   events of its backing directory). SIGTERM → exit is then the time until every thread but
//!   the one the kernel holds in the read has ended; the process is reaped once the read
//!   returns (released after the measurement).
//!
//! Meanwhile: /healthz timed every 50 ms on a fresh connection for about 5 s, 5 rotations of the
//! `other` group timed swap → call; then the time from SIGTERM to exit (default --shutdown-grace).

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secret_reloader::demo::atomic_writer::AtomicWriter;

use crate::admin::probe_healthz;
use crate::daemon::Daemon;
use crate::probe::HttpProbe;
use crate::util::{Stats, failed_probes, ms, ms_cell, rotate, stats};
use crate::{Figures, Opts};

/// The daemon's default --shutdown-grace.
pub const GRACE: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(50);
const ROTATIONS: usize = 5;

pub struct StallRow {
    pub stall: &'static str,
    pub healthz: Stats,
    pub healthz_failed: usize,
    pub other: Stats,
    /// The other group's reloads before the trap.
    pub quiet: Stats,
    pub exit: Option<Duration>,
    pub stalled_called: Option<bool>,
    /// The daemon's first warning or error in the window, shortened.
    pub said: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Stall {
    PidFifo,
    TokenFifo,
    Sparse,
    Fuse,
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a plain system call on a path owned here.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {}", path.display());
}

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(
        out,
        "## Stalls: one group's trap, the other group and the daemon\n"
    );
    let http = HttpProbe::start();
    for (stall, label) in [
        (
            Stall::PidFifo,
            "(a) FIFO as the pid file of a signal target",
        ),
        (
            Stall::TokenFifo,
            "(b) FIFO as the bearer token file of an HTTP target",
        ),
        (
            Stall::Sparse,
            "(c) 2 GiB sparse file in a watched plain directory",
        ),
        (
            Stall::Fuse,
            "(d) FUSE mount whose reads never return (the watched volume)",
        ),
    ] {
        f.stalls.push(one(o, &http, stall, label));
    }
    let _ = writeln!(
        out,
        "Two watch groups; the trap is in `stalled`. /healthz every {} ms on a fresh connection over \
         about {} s, {ROTATIONS} rotations of `other` meanwhile, then SIGTERM (grace {} s, the \
         default).\n",
        EVERY.as_millis(),
        WINDOW.as_secs(),
        GRACE.as_secs()
    );
    let _ = writeln!(
        out,
        "| stall | /healthz max ms | other group's reload median ms (quiet) | SIGTERM → exit ms |\n|---|---|---|---|"
    );
    for r in &f.stalls {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "| {} | daemon did not start: {e} | | |", r.stall);
            continue;
        }
        let failed = failed_probes(r.healthz_failed, r.healthz.n);
        let other = if r.other.n < ROTATIONS {
            format!(" ({} of {ROTATIONS} reloaded)", r.other.n)
        } else {
            String::new()
        };
        let exit = match r.exit {
            Some(d) => format!("{:.0}", ms(d)),
            None => "**did not exit within 20 s** (killed)".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {}{failed} | {}{other} ({}) | {exit} |",
            r.stall,
            ms_cell(Some(r.healthz.max)),
            ms_cell(Some(r.other.median)),
            ms_cell(Some(r.quiet.median)),
        );
    }
    let _ = writeln!(out);
    for r in f.stalls.iter().filter(|r| r.error.is_none()) {
        let called = match r.stalled_called {
            Some(true) => "was called within the window",
            Some(false) => "was not called within the window",
            None => "is a signal (not observed here)",
        };
        let said = match &r.said {
            Some(m) => format!("; the daemon's first warning: “{m}”"),
            None => "; no warning or error logged in the window".into(),
        };
        let _ = writeln!(
            out,
            "- {}: /healthz median {} ms over {} answers; the stalled group's target {called}{said}.",
            r.stall.split(' ').next().unwrap_or(""),
            ms_cell(Some(r.healthz.median)),
            r.healthz.n
        );
    }
    let _ = writeln!(out);
}

fn one(o: &Opts, http: &HttpProbe, stall: Stall, label: &'static str) -> StallRow {
    let dir = tempfile::Builder::new()
        .prefix("sr-bench-stall-")
        .tempdir()
        .unwrap();
    let other = AtomicWriter::new(dir.path().join("other"));
    other.write(&[("token", "version=start\n")]).unwrap();
    let stalled_url = http.url_for("/stalled");
    let kubelet = AtomicWriter::new(dir.path().join("stalled"));
    let plain = dir.path().join("plain");
    let fifo = dir.path().join("fifo");
    let backing = dir.path().join("backing");
    let fuse_vol = AtomicWriter::new(backing.join("vol"));
    let mut fuse = None;
    let (watch, target) = match stall {
        Stall::Fuse => {
            fuse_vol.write(&[("token", "version=start\n")]).unwrap();
            let fs = crate::support::native::StallFs::mount(&backing, &dir.path().join("mnt"));
            let vol = fs.path().join("vol");
            fuse = Some(fs);
            (vol, serde_json::json!({"type": "http", "url": stalled_url}))
        }
        Stall::PidFifo => {
            kubelet.write(&[("token", "version=start\n")]).unwrap();
            mkfifo(&fifo);
            (
                kubelet.dir().to_path_buf(),
                serde_json::json!({"type": "signal", "pid_file": fifo}),
            )
        }
        Stall::TokenFifo => {
            kubelet.write(&[("token", "version=start\n")]).unwrap();
            mkfifo(&fifo);
            (
                kubelet.dir().to_path_buf(),
                serde_json::json!({"type": "http", "url": stalled_url, "bearer_token_file": fifo}),
            )
        }
        Stall::Sparse => {
            std::fs::create_dir(&plain).unwrap();
            std::fs::write(plain.join("token"), "version=start\n").unwrap();
            (
                plain.clone(),
                serde_json::json!({"type": "http", "url": stalled_url}),
            )
        }
    };
    let config = serde_json::json!({"groups": [
        {"name": "stalled", "watch": [watch], "min_reload_interval": "0",
         "reload_on_start": "never", "targets": [target]},
        {"name": "other", "watch": [other.dir()], "min_reload_interval": "0",
         "reload_on_start": "never",
         "targets": [{"type": "http", "url": http.url_for("/other")}]},
    ]});
    let config_file = dir.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let mut row = StallRow {
        stall: label,
        healthz: stats(Vec::new()),
        healthz_failed: 0,
        other: stats(Vec::new()),
        quiet: stats(Vec::new()),
        exit: None,
        stalled_called: None,
        said: None,
        error: None,
    };
    let mut d = match Daemon::try_start(&o.bin, &["--config", config_file.to_str().unwrap()], None)
    {
        Ok(d) => d,
        Err(e) => {
            row.error = Some(e.lines().next().unwrap_or("").to_string());
            return row;
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    http.drain();
    // The other group's reloads with nothing stalled, for comparison.
    let mut quiet = Vec::new();
    for r in 0..ROTATIONS {
        http.drain_path("/other");
        let swapped = rotate(&other, 100 + r);
        if let Some(h) = http.next_on("/other", Duration::from_secs(3)) {
            quiet.push(h.at.saturating_duration_since(swapped));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    row.quiet = stats(quiet);

    // The trap.
    match stall {
        Stall::PidFifo | Stall::TokenFifo => {
            rotate(&kubelet, 1);
        }
        Stall::Sparse => {
            let big = std::fs::File::create(plain.join("big")).unwrap();
            big.set_len(2 << 30).unwrap();
            drop(big);
            std::fs::write(plain.join("small"), "x\n").unwrap();
        }
        Stall::Fuse => {
            let fs = fuse.as_ref().expect("mounted");
            fs.stall(&["read"], Some("token"));
            rotate(&fuse_vol, 1);
            // SAFETY: a signal to the child the daemon handle owns.
            unsafe {
                libc::kill(d.pid() as libc::pid_t, libc::SIGHUP);
            }
            fs.wait_stalled("read", "token");
        }
    }
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let healthz = {
        let (stop, addr) = (stop.clone(), d.addr);
        std::thread::spawn(move || probe_healthz(addr, &stop, EVERY))
    };
    let mut v = Vec::new();
    for r in 0..ROTATIONS {
        let at = t0 + Duration::from_millis(200) + WINDOW / ROTATIONS as u32 * r as u32;
        if let Some(left) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        http.drain_path("/other");
        let swapped = rotate(&other, r + 1);
        match http.next_on("/other", Duration::from_secs(3)) {
            Some(h) => v.push(h.at.saturating_duration_since(swapped)),
            None => eprintln!("  stalls {label}: rotation {r} of `other` without a call in 3 s"),
        }
    }
    if let Some(left) = (t0 + WINDOW).checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    stop.store(true, Ordering::Relaxed);
    let (hz, failed) = healthz.join().unwrap_or_default();
    row.healthz = stats(hz);
    row.healthz_failed = failed;
    row.other = stats(v);
    row.stalled_called = match stall {
        Stall::PidFifo => None,
        _ => Some(http.next_on("/stalled", Duration::ZERO).is_some()),
    };
    row.said = d
        .log_text()
        .lines()
        .find(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(|l| {
            let m = l.split_once("}: ").map_or(l, |(_, m)| m);
            let m = [" target=", " watch=", " version="]
                .iter()
                .fold(m, |m, field| m.split(field).next().unwrap_or(m));
            let m: String = m.chars().take(160).collect();
            m.replace('|', "/")
        });
    row.exit = match &fuse {
        Some(fs) => {
            let exited = held_exit(&d, Duration::from_secs(20));
            fs.release();
            let _ = d.terminate(Duration::from_secs(20));
            exited
        }
        None => d.terminate(Duration::from_secs(20)),
    };
    row
}

/// Sends SIGTERM and waits up to `within` until every thread of the daemon but those held in
/// the kernel (state `D`) has ended (the leader a zombie); the time it took.
fn held_exit(d: &Daemon, within: Duration) -> Option<Duration> {
    let pid = d.pid() as i32;
    let t0 = Instant::now();
    // SAFETY: a signal to the child the daemon handle owns (not yet reaped).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    while t0.elapsed() < within {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        let ended = tasks.iter().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .map_or('?', |(_, r)| r.chars().next().unwrap_or('?'));
            let tid = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok());
            if tid == Some(pid) {
                state == 'Z'
            } else {
                state == 'D'
            }
        });
        if ended {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}
