//! Latency from kubelet's `..data` swap (and from a plain write) to the action, for HTTP and
//! SIGHUP targets, beside the floor measured in the same run.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::floor;
use crate::probe::{HttpProbe, SignalProbe};
use crate::util::{Stats, measure, row, stats, volume};
use crate::{Figures, Opts};

const DEADLINE: Duration = Duration::from_secs(3);

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Latency: write → action (ms)\n");
    let _ = writeln!(
        out,
        "| path | median | p99 | max | n |\n|---|---|---|---|---|"
    );
    let common = ["--min-reload-interval", "0", "--reload-on-start", "never"];
    let http = HttpProbe::start();
    let url = http.url();
    let sig = SignalProbe::install();

    let (dir, w) = volume("http");
    let vol = dir.path().join("vol");
    let mut args = vec!["--watch", vol.to_str().unwrap(), "--reload-url", &url];
    args.extend(common);
    let d = Daemon::start(&o.bin, &args);
    let s = stats(measure(
        &w,
        o.iterations,
        || http.next(DEADLINE),
        || http.drain(),
    ));
    row(out, "kubelet swap → HTTP call (fast path)", &s);
    f.http_fast = Some(s);
    drop(d);

    let (dir, w) = volume("signal");
    let vol = dir.path().join("vol");
    let pid_file = dir.path().join("bench.pid");
    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let mut args = vec![
        "--watch",
        vol.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ];
    args.extend(common);
    let d = Daemon::start(&o.bin, &args);
    let s = stats(measure(
        &w,
        o.iterations,
        || sig.wait(DEADLINE),
        || sig.reset(),
    ));
    row(out, "kubelet swap → SIGHUP delivered (fast path)", &s);
    f.sig_fast = Some(s);
    drop(d);

    let (dir, w) = volume("floor-signal");
    floor::start(w.dir(), floor::FloorAction::Signal);
    let s = stats(measure(
        &w,
        o.iterations,
        || sig.wait(DEADLINE),
        || sig.reset(),
    ));
    row(out, "floor: inotify read → kill(SIGHUP)", &s);
    f.floor_sig = Some(s);
    drop(dir);

    let (dir, w) = volume("floor-http");
    floor::start(w.dir(), floor::FloorAction::Http(http.addr));
    let s = stats(measure(
        &w,
        o.iterations,
        || http.next(DEADLINE),
        || http.drain(),
    ));
    row(out, "floor: inotify read → one HTTP request", &s);
    f.floor_http = Some(s);
    drop(dir);

    // Writers without a commit point: the quiet period (--debounce, default 100ms) is the latency.
    let plain = |out: &mut String,
                 what: &str,
                 target: &[&str],
                 wait: &mut dyn FnMut() -> Option<Instant>,
                 reset: &mut dyn FnMut()| {
        let dir = tempfile::Builder::new()
            .prefix("sr-bench-plain-")
            .tempdir()
            .unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "version=start\n").unwrap();
        let mut args = vec!["--watch", dir.path().to_str().unwrap()];
        args.extend(target);
        args.extend(common);
        let d = Daemon::start(&o.bin, &args);
        let mut v = Vec::new();
        for i in 0..o.iterations.min(30) {
            reset();
            std::fs::write(&file, format!("version={i}\n")).unwrap();
            let written = Instant::now();
            if let Some(at) = wait() {
                v.push(at.saturating_duration_since(written));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        row(out, what, &stats(v));
        drop(d);
    };
    plain(
        out,
        "plain write → HTTP call (default --debounce)",
        &["--reload-url", &url],
        &mut || http.next(DEADLINE),
        &mut || http.drain(),
    );
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pid_file.path(), std::process::id().to_string()).unwrap();
    let pid = pid_file.path().to_str().unwrap().to_string();
    plain(
        out,
        "plain write → SIGHUP delivered (default --debounce)",
        &["--pid-file", &pid],
        &mut || sig.wait(DEADLINE),
        &mut || sig.reset(),
    );

    let ratio = |a: &Option<Stats>, b: &Option<Stats>| match (a, b) {
        (Some(a), Some(b)) => format!(
            "{:.2}× (+{:.3} ms)",
            a.median / b.median,
            a.median - b.median
        ),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        out,
        "\nAgainst the floor (median): HTTP {}, SIGHUP {}. configmap-reload, measured on this machine kind: \
         1.0–1.2 ms median swap → webhook.\n",
        ratio(&f.http_fast, &f.floor_http),
        ratio(&f.sig_fast, &f.floor_sig)
    );
}
