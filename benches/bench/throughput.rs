//! Fingerprinting throughput on a 50 MB file: the daemon's keyed HMAC-SHA256 (the same code, in
//! this process) against `sha256sum`, both reading from the page cache.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use secret_reloader::scan::fingerprint::FingerprintKey;

pub fn run(out: &mut String) {
    let _ = writeln!(out, "## Fingerprinting throughput (50 MB file)\n");
    let dir = tempfile::Builder::new()
        .prefix("sr-bench-hash-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("big");
    let data: Vec<u8> = (0..50_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let _ = std::fs::read(&path); // into the page cache
    let key = FingerprintKey::new(vec![7; 32]);
    let best = |mut f: Box<dyn FnMut() -> f64>| (0..3).map(|_| f()).fold(f64::INFINITY, f64::min);
    let ours = best(Box::new(|| {
        let t = Instant::now();
        key.digest_reader(std::fs::File::open(&path).unwrap())
            .unwrap();
        t.elapsed().as_secs_f64()
    }));
    let theirs = best(Box::new(|| {
        let t = Instant::now();
        let ok = Command::new("sha256sum")
            .arg(&path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            t.elapsed().as_secs_f64()
        } else {
            f64::NAN
        }
    }));
    let mbs = |s: f64| 50.0 / s;
    let _ = writeln!(out, "| hasher | MB/s (best of 3) |\n|---|---|");
    let _ = writeln!(
        out,
        "| secret-reloader (HMAC-SHA256, streaming) | {:.0} |",
        mbs(ours)
    );
    let _ = writeln!(out, "| sha256sum (coreutils) | {:.0} |", mbs(theirs));
    let _ = writeln!(
        out,
        "\nRatio: {:.2}× sha256sum's throughput.\n",
        theirs / ours
    );
}
