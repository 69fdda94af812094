//! Idle cost and leaks: RSS after start and after many updates, CPU ticks while idle, and the
//! soak (RSS sampled along a long run of updates).

use std::fmt::Write as _;
use std::time::Duration;

use secret_reloader::demo::atomic_writer::AtomicWriter;

use crate::daemon::Daemon;
use crate::probe::HttpProbe;
use crate::util::{mib, volume};
use crate::{Figures, Opts};

/// Writes `n` updates, each waited for (so each is its own reload); returns how many got none.
fn updates(
    w: &secret_reloader::demo::atomic_writer::AtomicWriter,
    http: &HttpProbe,
    from: usize,
    n: usize,
) -> usize {
    let mut missed = 0;
    for i in from..from + n {
        http.drain();
        w.write(&[("token", format!("version={i}\n"))]).unwrap();
        if http.next(Duration::from_secs(3)).is_none() {
            missed += 1;
        }
    }
    missed
}

/// A volume, an endpoint, and a daemon calling it for every change (no storm protection).
fn reloading_daemon(o: &Opts, tag: &str) -> (tempfile::TempDir, AtomicWriter, HttpProbe, Daemon) {
    let http = HttpProbe::start();
    let (dir, w) = volume(tag);
    let vol = dir.path().join("vol");
    let url = http.url();
    let d = Daemon::start(
        &o.bin,
        &[
            "--watch",
            vol.to_str().unwrap(),
            "--reload-url",
            &url,
            "--min-reload-interval",
            "0",
        ],
    );
    (dir, w, http, d)
}

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Footprint\n");
    let (_dir, w, http, d) = reloading_daemon(o, "footprint");
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = d.rss_kib();
    let threads = d.threads();
    let missed = updates(&w, &http, 0, o.updates);
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = d.rss_kib();
    let t0 = d.cpu_ticks();
    std::thread::sleep(o.idle);
    let idle_ticks = d.cpu_ticks() - t0;
    f.rss_start_kib = Some(rss_start);
    f.rss_after_kib = Some(rss_after);
    f.idle_ticks = Some(idle_ticks);
    let _ = writeln!(out, "| reading | value |\n|---|---|");
    let _ = writeln!(out, "| RSS after start | {:.2} MiB |", mib(rss_start));
    let _ = writeln!(
        out,
        "| RSS after {} updates (each reloaded) | {:.2} MiB |",
        o.updates,
        mib(rss_after)
    );
    let _ = writeln!(out, "| threads after start | {threads} |");
    let _ = writeln!(
        out,
        "| CPU ticks over {} s idle | {idle_ticks} |",
        o.idle.as_secs()
    );
    if missed > 0 {
        let _ = writeln!(out, "| updates without a reload within 3 s | {missed} |");
    }
    let _ = writeln!(out);
}

pub fn soak(out: &mut String, o: &Opts) {
    let total = o.soak;
    let _ = writeln!(out, "## Soak: {total} updates, RSS along the way\n");
    let (_dir, w, http, d) = reloading_daemon(o, "soak");
    let step = (total / 20).max(1);
    let _ = writeln!(out, "| updates | RSS (MiB) |\n|---|---|");
    let _ = writeln!(out, "| 0 | {:.2} |", mib(d.rss_kib()));
    let mut missed = 0;
    let mut done = 0;
    while done < total {
        let n = step.min(total - done);
        missed += updates(&w, &http, done, n);
        done += n;
        let _ = writeln!(out, "| {done} | {:.2} |", mib(d.rss_kib()));
    }
    let _ = writeln!(out, "\nUpdates without a reload within 3 s: {missed}.\n");
}
