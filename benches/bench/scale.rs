//! Scale: 1, 100, 500, 1,000 and 5,000 watched volumes, each its own watch group with its own
//! target: start-up time (spawn → ready), RSS before and after a scrape of `/metrics`, and the
//! latency of one change among many, which must give exactly one action (the changed group's).
//! And one group of 1,000 and 10,000 files (a kubelet volume on tmpfs, the app's identity
//! declared, so every file gets an access verdict): start-up, change → call, and the slowest
//! `/healthz` while the daemon scans them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use secret_reloader::demo::atomic_writer::AtomicWriter;

use crate::daemon::Daemon;
use crate::probe::HttpProbe;
use crate::util::{mib, stats};
use crate::{Figures, Opts};

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Scale: watched volumes\n");
    let _ = writeln!(
        out,
        "| volumes | start-up to ready (ms) | RSS (MiB) | /metrics (KiB) → RSS (MiB) | one change → call, median (ms) | max (ms) | actions per change |\n|---|---|---|---|---|---|---|"
    );
    let sizes: &[usize] = if o.quick {
        &[1, 100, 500, 1000]
    } else {
        &[1, 100, 500, 1000, 5000]
    };
    for &n in sizes {
        let http = HttpProbe::start();
        // On tmpfs, as kubelet mounts Secret volumes (read on the runtime thread).
        let mut b = tempfile::Builder::new();
        b.prefix("sr-bench-scale-");
        let dir = b.tempdir_in("/dev/shm").or_else(|_| b.tempdir()).unwrap();
        let writers: Vec<AtomicWriter> = (0..n)
            .map(|i| {
                let w = AtomicWriter::new(dir.path().join(format!("vol{i}")));
                w.write(&[("token", "version=start\n")]).unwrap();
                w
            })
            .collect();
        let groups: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "name": format!("g{i}"),
                    "watch": [dir.path().join(format!("vol{i}"))],
                    "min_reload_interval": "0",
                    "targets": [{"type": "http", "url": format!("http://{}/-/reload/{i}", http.addr)}],
                })
            })
            .collect();
        let config = dir.path().join("config.json");
        std::fs::write(&config, serde_json::json!({ "groups": groups }).to_string()).unwrap();
        let t0 = Instant::now();
        let d = Daemon::start(&o.bin, &["--config", config.to_str().unwrap()]);
        let startup = t0.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let rss = d.rss_kib();
        let metrics_len = crate::daemon::get_text(d.addr, "/metrics").map_or(0, |t| t.len());
        let rss_scraped = d.rss_kib();
        let mut lat = Vec::new();
        let mut extra = 0;
        let rounds = if o.quick { 10 } else { 30 };
        for r in 0..rounds {
            let i = (r * 7919) % n;
            http.drain();
            let swapped = writers[i]
                .write(&[("token", format!("version={r}\n"))])
                .unwrap();
            match http.next_hit(Duration::from_secs(3)) {
                Some(hit) if hit.path == format!("/-/reload/{i}") => {
                    lat.push(hit.at.saturating_duration_since(swapped))
                }
                Some(hit) => eprintln!("  scale {n}: change in vol{i} called {}", hit.path),
                None => eprintln!("  scale {n}: no call for vol{i}"),
            }
            // Any other call within the next quarter second would be a second action.
            while http.next_hit(Duration::from_millis(250)).is_some() {
                extra += 1;
            }
        }
        let s = stats(lat);
        if n == 1000 {
            f.rss_1000_kib = Some(rss);
        }
        f.groups_scale
            .push((n, startup.as_secs_f64() * 1e3, rss, rss_scraped));
        f.scale.push((n, s.median));
        let per = 1.0 + extra as f64 / rounds as f64;
        let _ = writeln!(
            out,
            "| {n} | {:.0} | {:.2} | {} → {:.2} | {:.3} | {:.3} | {per:.2} |",
            startup.as_secs_f64() * 1e3,
            mib(rss),
            metrics_len / 1024,
            mib(rss_scraped),
            s.median,
            s.max
        );
        drop(d);
    }
    let _ = writeln!(out);
}

/// One group of many files.
pub fn files(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Scale: files in one group\n");
    let _ = writeln!(
        out,
        "A kubelet volume on tmpfs holding every file, an HTTP target, `--app-uid`/`--app-gid` \
         declared (every file gets an access verdict). `/healthz` is asked every 20 ms from the \
         daemon's start to the end of the changes.\n"
    );
    let _ = writeln!(
        out,
        "| files | start-up to ready (ms) | RSS (MiB) | change → call, median (ms) | max (ms) | /healthz max (ms) | /healthz failed |\n|---|---|---|---|---|---|---|"
    );
    let uid = nix::unistd::geteuid().to_string();
    let gid = nix::unistd::getegid().to_string();
    for n in [1000usize, 10_000] {
        let http = HttpProbe::start();
        let (_dir, w) = crate::util::volume(&format!("files-{n}"));
        let content = |r: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("key{i:05}"), format!("v{r}-{i}\n")))
                .collect()
        };
        w.write(&content(0)).unwrap();
        let url = http.url_for("/files");
        let vol = w.dir().to_str().unwrap().to_string();
        let args = [
            "--watch",
            vol.as_str(),
            "--reload-url",
            url.as_str(),
            "--app-uid",
            uid.as_str(),
            "--app-gid",
            gid.as_str(),
            "--min-reload-interval",
            "0",
        ];
        let probe = HealthProbe::new();
        let t0 = Instant::now();
        let d = Daemon::start(&o.bin, &args);
        let startup = t0.elapsed();
        let watching = probe.watch(d.addr);
        // The rescan that follows the first watches is part of starting.
        std::thread::sleep(Duration::from_millis(500));
        let rss = d.rss_kib();
        let mut lat = Vec::new();
        let rounds = if o.quick { 5 } else { 10 };
        for r in 1..=rounds {
            http.drain();
            let swapped = w.write(&content(r)).unwrap();
            match http.next_hit(Duration::from_secs(30)) {
                Some(hit) => lat.push(hit.at.saturating_duration_since(swapped)),
                None => eprintln!("  files {n}: no call for change {r}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (max, failed) = watching.stop();
        let s = stats(lat);
        f.files_scale
            .push((n, startup.as_secs_f64() * 1e3, s.median, max));
        let _ = writeln!(
            out,
            "| {n} | {:.0} | {:.2} | {:.3} | {:.3} | {:.1} | {failed} |",
            startup.as_secs_f64() * 1e3,
            mib(rss),
            s.median,
            s.max,
            max.as_secs_f64() * 1e3,
        );
        drop(d);
    }
    let _ = writeln!(out);
}

/// Asks `/healthz` every 20 ms on a thread of its own, keeping the slowest answer and counting
/// failures (not 200, or nothing within 3 s).
struct HealthProbe;

struct Watching {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, usize)>,
}

impl HealthProbe {
    fn new() -> HealthProbe {
        HealthProbe
    }

    fn watch(&self, addr: std::net::SocketAddr) -> Watching {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = Duration::ZERO;
            let mut failed = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match crate::daemon::timed_get(addr, "/healthz", Duration::from_secs(3)) {
                    Some((200, took)) => max = max.max(took),
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (max, failed)
        });
        Watching { stop, thread }
    }
}

impl Watching {
    fn stop(self) -> (Duration, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or((Duration::MAX, 0))
    }
}
