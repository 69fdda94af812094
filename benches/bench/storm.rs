//! Storm: 1,000 kubelet updates back to back, default storm protection (one action per second):
//! how many actions, and how long from the last update until the app holds it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::probe::HttpProbe;
use crate::util::volume;
use crate::{Figures, Opts};

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Storm: {} updates in a burst\n", o.storm);
    let (dir, w) = volume("storm");
    let vol = dir.path().join("vol");
    let http = HttpProbe::start_reading(Some(vol.join("token")));
    let url = http.url();
    let d = Daemon::start(
        &o.bin,
        &["--watch", vol.to_str().unwrap(), "--reload-url", &url],
    );
    let t0 = Instant::now();
    let mut last = t0;
    for i in 1..=o.storm {
        last = w.write(&[("token", format!("version={i}\n"))]).unwrap();
    }
    let burst = t0.elapsed();
    let final_line = format!("version={}", o.storm);
    let mut actions = 0;
    let mut held_final_after = None;
    while let Some(hit) = http.next_hit(Duration::from_secs(3)) {
        actions += 1;
        if held_final_after.is_none() && hit.loaded.as_deref() == Some(final_line.as_str()) {
            held_final_after = Some(hit.at.saturating_duration_since(last));
        }
    }
    f.storm = Some((o.storm, actions, held_final_after));
    let _ = writeln!(out, "| reading | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| burst duration | {:.0} ms |",
        burst.as_secs_f64() * 1e3
    );
    let _ = writeln!(out, "| reload actions | {actions} |");
    match held_final_after {
        Some(t) => {
            let _ = writeln!(
                out,
                "| last update → the action that carries it | {:.1} ms |",
                t.as_secs_f64() * 1e3
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| last update → the action that carries it | never (a defect) |"
            );
        }
    }
    let _ = writeln!(out);
    drop(d);
}
