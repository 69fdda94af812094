//! The hostile suite: regressions of bugs found from outside (each test named after what must
//! hold), and standing abuse of every input the daemon takes from others: paths and values that
//! are not UTF-8 or carry control characters, FIFOs and devices where files are expected, URLs and
//! headers that carry credentials, processes that pose as the app, the admin port held open by
//! slow clients, clients outside the pod (a network namespace of the test's own).
//!
//! Everything goes through the built binary. Negative assertions wait on the daemon's barrier
//! (`Daemon::passed`), never on a fixed sleep. The helpers are the support module's; what is
//! here is the suite's own: what a daemon given hostile input must still do (end in time), and
//! how text leaving it is searched for raw control characters and forged lines.

mod actions;
mod admin;
mod command_output;
mod confinement;
mod doctor;
mod impostors;
mod limits;
mod paths;
mod seccomp;
mod signals;
mod special_files;
mod stalls;
mod starved;
mod state_file;
mod stray_signals;
mod usage;
mod watching;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Daemon;

/// SIGTERM, then the exit within `limit`: the daemon never hangs on what it was given.
pub fn terminates_within(d: &mut Daemon, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    let status = d.terminate();
    let took = started.elapsed();
    assert!(
        took < limit,
        "SIGTERM took {took:?} (limit {limit:?}); log:\n{}",
        d.log()
    );
    status
}

/// `s` with every byte below 0x20 (but tab and newline) and DEL reported: text leaving the daemon
/// must hold none (an escape sequence on a terminal, a forged log line).
pub fn raw_controls(s: &str) -> Vec<(usize, char)> {
    s.char_indices()
        .filter(|(_, c)| c.is_control() && *c != '\n' && *c != '\t' && *c != '\r')
        .collect()
}

/// Lines of `text` that start with `prefix` (after nothing: a forged line starts there).
pub fn lines_starting_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Every string in `v` (keys included) that carries a control character once decoded: text
/// leaving the daemon as JSON must be escaped before it is encoded (a JSON `\u001b` is still an
/// escape sequence for whoever prints the value).
pub fn json_controls(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.chars().any(char::is_control) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                for (k, x) in o {
                    if k.chars().any(char::is_control) {
                        out.push(k.clone());
                    }
                    walk(x, out);
                }
            }
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}
