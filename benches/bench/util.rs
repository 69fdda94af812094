//! Shared pieces: statistics, volumes, rotation.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use secret_reloader::demo::atomic_writer::AtomicWriter;

/// Median, p99 and max in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(mut v: Vec<Duration>) -> Stats {
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

pub fn row(out: &mut String, what: &str, s: &Stats) {
    let _ = writeln!(
        out,
        "| {what} | {:.3} | {:.3} | {:.3} | {} |",
        s.median, s.p99, s.max, s.n
    );
}

/// A temporary kubelet-style volume with a first version written, on a memory filesystem
/// (`/dev/shm`) as kubelet mounts every Secret volume; in the temporary directory where there is
/// none.
pub fn volume(tag: &str) -> (tempfile::TempDir, AtomicWriter) {
    let shm = std::path::Path::new("/dev/shm");
    let prefix = format!("sr-bench-{tag}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    let dir = b.tempdir_in(shm).or_else(|_| b.tempdir()).unwrap();
    let w = AtomicWriter::new(dir.path().join("vol"));
    w.write(&[("token", "version=start\n")]).unwrap();
    (dir, w)
}

/// As [`volume`], in the temporary directory (a disk filesystem here, as a ConfigMap's volume
/// is on the node's disk): the daemon reads it on a lane.
pub fn volume_on_disk(tag: &str) -> (tempfile::TempDir, AtomicWriter) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("sr-bench-{tag}-"))
        .tempdir()
        .unwrap();
    let w = AtomicWriter::new(dir.path().join("vol"));
    w.write(&[("token", "version=start\n")]).unwrap();
    (dir, w)
}

/// Writes version `i` of the `token` key; the instant the `..data` rename was entered.
pub fn rotate(writer: &AtomicWriter, i: usize) -> Instant {
    writer
        .write(&[("token", format!("version={i}\nsecret={}\n", i * 7919))])
        .expect("rotate")
}

/// A cell in milliseconds, or `—` for no figure.
pub fn ms_cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "—".into(),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A table cell's note on /healthz probes left unanswered (3 s each), or nothing.
pub fn failed_probes(failed: usize, answered: usize) -> String {
    if failed == 0 {
        return String::new();
    }
    format!(" (**{failed} of {} failed** within 3 s)", failed + answered)
}
