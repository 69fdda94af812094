//! Benchmark: how fast and how small the daemon is, measured against the floor in the same run.
//!
//! `cargo bench --bench bench [-- --quick] [-- --write BENCHMARKS.md]`, or `scripts/bench` to
//! measure the static release binary that ships. Prints Markdown; no pass/fail (this machine is
//! shared and noisy: compare ratios within one run).

mod daemon;
mod floor;
mod probe;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::Daemon;
use probe::{HttpProbe, SignalProbe};
use secret_reloader::atomic_writer::AtomicWriter;

struct Opts {
    bin: String,
    iterations: usize,
    updates: usize,
    idle: Duration,
    write: Option<PathBuf>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let opts = Opts {
        bin: std::env::var("SECRET_RELOADER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secret-reloader").to_string()),
        iterations: if quick { 40 } else { 200 },
        updates: if quick { 200 } else { 1000 },
        idle: Duration::from_secs(if quick { 5 } else { 30 }),
        write: args
            .iter()
            .position(|a| a == "--write")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from),
    };
    let mut out = String::new();
    header(&mut out, &opts);
    latency(&mut out, &opts);
    footprint(&mut out, &opts);
    print!("{out}");
    if let Some(path) = &opts.write {
        std::fs::write(path, &out).expect("write the report");
        eprintln!("wrote {}", path.display());
    }
}

fn header(out: &mut String, o: &Opts) {
    let size = std::fs::metadata(&o.bin).map(|m| m.len()).unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(out, "# secret-reloader benchmark\n");
    let _ = writeln!(
        out,
        "- date: {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let _ = writeln!(
        out,
        "- machine: {cpu}, {cores} cores, Linux {}",
        kernel.trim()
    );
    let _ = writeln!(
        out,
        "- binary: `{}`, {:.2} MiB, {}",
        o.bin,
        size as f64 / 1048576.0,
        if is_static(Path::new(&o.bin)) {
            "static"
        } else {
            "dynamically linked"
        }
    );
    let _ = writeln!(out, "- iterations per latency row: {}\n", o.iterations);
}

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. is statically linked.
fn is_static(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return false;
    }
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (
        u16::from_le_bytes([b[54], b[55]]) as usize,
        u16::from_le_bytes([b[56], b[57]]) as usize,
    );
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        b.get(at..at + 4)
            .is_none_or(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// Median, p99 and max in milliseconds.
struct Stats {
    median: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = v.len();
    if n == 0 {
        return Stats {
            median: f64::NAN,
            p99: f64::NAN,
            max: f64::NAN,
            n,
        };
    }
    Stats {
        median: ms(v[n / 2]),
        p99: ms(v[(n * 99 / 100).min(n - 1)]),
        max: ms(v[n - 1]),
        n,
    }
}

fn row(out: &mut String, what: &str, s: &Stats) {
    let _ = writeln!(
        out,
        "| {what} | {:.3} | {:.3} | {:.3} | {} |",
        s.median, s.p99, s.max, s.n
    );
}

/// Rotates `iterations` times and times each swap → `wait` stamp.
fn measure(
    writer: &AtomicWriter,
    iterations: usize,
    mut wait: impl FnMut() -> Option<Instant>,
    mut before: impl FnMut(),
) -> Vec<Duration> {
    let mut v = Vec::with_capacity(iterations);
    for i in 0..iterations {
        before();
        let swapped = writer
            .write(&[("token", format!("version={i}\nsecret={}\n", i * 7919))])
            .expect("rotate");
        match wait() {
            Some(at) => v.push(at.saturating_duration_since(swapped)),
            None => eprintln!("  iteration {i}: no action within the deadline"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    v
}

fn volume(tag: &str) -> (tempfile::TempDir, AtomicWriter) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("sr-bench-{tag}-"))
        .tempdir()
        .unwrap();
    let w = AtomicWriter::new(dir.path().join("vol"));
    w.write(&[("token", "version=start\n")]).unwrap();
    (dir, w)
}

fn latency(out: &mut String, o: &Opts) {
    let _ = writeln!(out, "## Latency: kubelet `..data` swap → action (ms)\n");
    let _ = writeln!(
        out,
        "| path | median | p99 | max | n |\n|---|---|---|---|---|"
    );
    let deadline = Duration::from_secs(3);
    let common = ["--min-reload-interval", "0", "--reload-on-start", "never"];

    let http = HttpProbe::start();
    let (dir, w) = volume("http");
    let vol = dir.path().join("vol");
    let url = http.url();
    let mut args = vec!["--watch", vol.to_str().unwrap(), "--reload-url", &url];
    args.extend(common);
    let d = Daemon::start(&o.bin, &args);
    let http_s = stats(measure(
        &w,
        o.iterations,
        || http.next(deadline),
        || http.drain(),
    ));
    row(
        out,
        "secret-reloader → HTTP call (kubelet fast path)",
        &http_s,
    );
    drop(d);

    let sig = SignalProbe::install();
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
    let sig_s = stats(measure(
        &w,
        o.iterations,
        || sig.wait(deadline),
        || sig.reset(),
    ));
    row(
        out,
        "secret-reloader → SIGHUP delivered (kubelet fast path)",
        &sig_s,
    );
    drop(d);

    let (dir, w) = volume("floor-signal");
    floor::start(w.dir(), floor::FloorAction::Signal);
    let floor_sig = stats(measure(
        &w,
        o.iterations,
        || sig.wait(deadline),
        || sig.reset(),
    ));
    row(out, "floor: inotify read → kill(SIGHUP)", &floor_sig);
    drop(dir);

    let (dir, w) = volume("floor-http");
    floor::start(w.dir(), floor::FloorAction::Http(http.addr));
    let floor_http = stats(measure(
        &w,
        o.iterations,
        || http.next(deadline),
        || http.drain(),
    ));
    row(out, "floor: inotify read → one HTTP request", &floor_http);
    drop(dir);

    // A writer without a commit point: the quiet period (default 100ms) is the latency.
    let dir = tempfile::Builder::new()
        .prefix("sr-bench-plain-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "version=start\n").unwrap();
    let mut args = vec![
        "--watch",
        dir.path().to_str().unwrap(),
        "--reload-url",
        &url,
    ];
    args.extend(common);
    let d = Daemon::start(&o.bin, &args);
    let mut v = Vec::new();
    for i in 0..o.iterations.min(30) {
        http.drain();
        std::fs::write(&file, format!("version={i}\n")).unwrap();
        let written = Instant::now();
        if let Some(at) = http.next(deadline) {
            v.push(at - written);
        }
    }
    row(
        out,
        "secret-reloader → HTTP call (in-place writer, default --debounce 100ms)",
        &stats(v),
    );
    drop(d);

    let _ = writeln!(
        out,
        "\nRatio to the floor (median): HTTP {:.2}×, SIGHUP {:.2}×. Reference, configmap-reload measured on this \
         machine kind: 1.0–1.2 ms median swap → webhook.\n",
        http_s.median / floor_http.median,
        sig_s.median / floor_sig.median
    );
}

fn footprint(out: &mut String, o: &Opts) {
    let _ = writeln!(out, "## Footprint\n");
    let http = HttpProbe::start();
    let (dir, w) = volume("footprint");
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
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = d.rss_kib();
    let threads = d.threads();
    let mut missed = 0;
    for i in 0..o.updates {
        http.drain();
        w.write(&[("token", format!("version={i}\n"))]).unwrap();
        if http.next(Duration::from_secs(3)).is_none() {
            missed += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = d.rss_kib();
    let t0 = d.cpu_ticks();
    std::thread::sleep(o.idle);
    let idle_ticks = d.cpu_ticks() - t0;
    let _ = writeln!(out, "| reading | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| RSS after start | {:.2} MiB |",
        rss_start as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| RSS after {} updates (each reloaded) | {:.2} MiB |",
        o.updates,
        rss_after as f64 / 1024.0
    );
    let _ = writeln!(out, "| threads | {threads} |");
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
