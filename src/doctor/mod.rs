//! `secret-reloader doctor`: a one-shot report of the live state, in the order an operator
//! troubleshoots: time and versions; who the sidecar and the app are; each watched path (layout,
//! age, owners, modes, whether the app can read it, single-file mounts kubelet never updates);
//! each target (found, allowed, reachable, likely stale). Text for people, `--output json` for
//! tools. Exit 0 when healthy, 1 when it found a problem, 2 on usage errors.
//!
//! It reads what the daemon reads, with the same flags and `SECRET_RELOADER_*` variables (so
//! `kubectl exec <pod> -c secret-reloader -- secret-reloader doctor` checks that pod), and asks the
//! daemon running on the listen address for what it applied: no daemon answering there is a
//! problem (the sidecar is not running, or runs with another `--listen`), unless `--standalone`
//! (a check before the sidecar runs). It never reloads anything.

mod gather;
mod render;
pub(crate) mod report;
mod targets;

use crate::config::Config;

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// Runs the report of what `config` describes (`standalone`: without asking a running daemon)
/// and prints it as `format`; returns the exit code (1 when it found a problem).
pub fn run(config: &Config, standalone: bool, format: Format) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let report = runtime.block_on(gather::gather(config, standalone));
    match format {
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return 1;
            }
        },
        Format::Text => print!("{}", render::text(&report)),
    }
    if report.problems.is_empty() { 0 } else { 1 }
}
