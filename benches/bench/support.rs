//! What the tests' native fixtures need of their support module, so that the bench uses the same
//! FUSE filesystem (`tests/it/support/native.rs`, `stallfs.c`) for its stalled-read case.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// How long a fixture waits for what it expects.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `probe` every 10 ms until `cond` holds or [`DEADLINE`] passes (then panics).
pub fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    cond: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = probe();
        if cond(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sr-bench-")
        .tempdir()
        .expect("temp dir")
}

/// A short random hex string.
pub fn unique() -> String {
    format!("{:06x}", getrandom::u32().unwrap_or(0) & 0xff_ffff)
}

#[path = "../../tests/it/support/native.rs"]
pub mod native;
