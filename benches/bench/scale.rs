//! Scale: 1, 100 and 1,000 watched volumes, each its own watch group with its own target. Start-up
//! time (spawn → ready), RSS, and the latency of one change among many, which must give exactly one
//! action (the changed group's).

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
        "| volumes | start-up to ready (ms) | RSS (MiB) | one change → call, median (ms) | max (ms) | actions per change |\n|---|---|---|---|---|---|"
    );
    for n in [1usize, 100, 1000] {
        let http = HttpProbe::start();
        let dir = tempfile::Builder::new()
            .prefix("sr-bench-scale-")
            .tempdir()
            .unwrap();
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
        f.scale.push((n, s.median));
        let per = 1.0 + extra as f64 / rounds as f64;
        let _ = writeln!(
            out,
            "| {n} | {:.0} | {:.2} | {:.3} | {:.3} | {per:.2} |",
            startup.as_secs_f64() * 1e3,
            mib(rss),
            s.median,
            s.max
        );
        drop(d);
    }
    let _ = writeln!(out);
}
