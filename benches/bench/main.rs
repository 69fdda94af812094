//! Benchmark: how fast and how small the daemon is, measured against the floor in the same run.
//!
//! `scripts/bench` measures the static release binary that ships and writes BENCHMARKS.md;
//! `cargo bench --bench bench -- [--quick] [--write FILE] [--only a,b] [--soak N]` runs it by hand.
//! Sections: latency, footprint, scale, storm, throughput, admin, stalls, injection, soak. Prints Markdown;
//! no pass/fail
//! assertions (this machine is shared and noisy: compare ratios within one run), but the goals are
//! listed with the figure beside each.
//!
//! `CMR_BIN` names a configmap-reload binary to measure beside the daemon in the latency section.
//! The bench binary also runs the floor (see `floor.rs`): re-executed with `--floor-signal` or
//! `--floor-http`, it is that and nothing else.

mod admin;
mod daemon;
mod floor;
mod footprint;
mod injection;
mod latency;
mod load;
mod peer;
mod probe;
mod scale;
mod stalls;
mod storm;
mod support;
mod throughput;
mod tls;
mod util;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use util::{Stats, mib};

/// What to measure and how long.
pub struct Opts {
    pub bin: String,
    /// `secret-reloader-inject` (inject and the webhook): `SECRET_RELOADER_INJECT_BIN`, else the
    /// file of that name beside `bin`.
    pub inject_bin: String,
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
    /// The same from a volume on a disk filesystem (read on a lane).
    pub http_disk: Option<Stats>,
    pub sig_fast: Option<Stats>,
    pub floor_http: Option<Stats>,
    pub floor_sig: Option<Stats>,
    pub cmr_http: Option<Stats>,
    pub plain_http: Option<Stats>,
    pub plain_sig: Option<Stats>,
    pub rss_start_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub idle_ticks: Option<u64>,
    pub rss_1000_kib: Option<u64>,
    /// Volumes → median one change → call (ms).
    pub scale: Vec<(usize, f64)>,
    /// Groups: (groups, start-up ms, RSS KiB, RSS after a scrape KiB).
    pub groups_scale: Vec<(usize, f64, u64, u64)>,
    /// Files in one group: (files, start-up ms, change → call median ms, /healthz max).
    pub files_scale: Vec<(usize, f64, f64, Duration)>,
    /// Updates in the burst, actions, last update → the action that carries it.
    pub storm: Option<(usize, usize, Option<Duration>)>,
    pub admin: Vec<admin::AdminRow>,
    pub stalls: Vec<stalls::StallRow>,
    /// Swap → call over plain HTTP and over HTTPS, one run.
    pub tls: Option<(Stats, Stats)>,
    /// Swap → nginx's new certificate confirmed served.
    pub served: Option<Stats>,
    /// `inject` of a 1,000-document stream, median.
    pub inject_1000: Option<Duration>,
    /// The webhook at 200 reviews/s of a 20-container, 30-volume pod: p99 (ms), from each
    /// review's scheduled send time to its answer's last byte.
    pub webhook_p99: Option<f64>,
    /// Reviews of that load not answered with a patch.
    pub webhook_failed: Option<usize>,
    /// The webhook's RSS: max under that load, and after start (KiB).
    pub webhook_rss_kib: Option<u64>,
    pub webhook_rss_start_kib: Option<u64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The floor's own process (never returns when asked for).
    floor::hidden_mode(&args);
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let bin = std::env::var("SECRET_RELOADER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secret-reloader").to_string());
    let inject_bin = std::env::var("SECRET_RELOADER_INJECT_BIN").unwrap_or_else(|_| {
        Path::new(&bin)
            .with_file_name("secret-reloader-inject")
            .display()
            .to_string()
    });
    let o = Opts {
        bin,
        inject_bin,
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
        scale::files(&mut out, &o, &mut f);
    }
    if wanted("storm") {
        storm::run(&mut out, &o, &mut f);
    }
    if wanted("throughput") {
        throughput::run(&mut out);
    }
    if wanted("tls") {
        tls::run(&mut out, &o, &mut f);
    }
    if wanted("admin") {
        admin::run(&mut out, &o, &mut f);
    }
    if wanted("stalls") {
        stalls::run(&mut out, &o, &mut f);
    }
    if wanted("injection") {
        injection::inject(&mut out, &o, &mut f);
        injection::webhook(&mut out, &o, &mut f);
    }
    if [
        "latency",
        "footprint",
        "scale",
        "storm",
        "tls",
        "admin",
        "stalls",
        "injection",
    ]
    .iter()
    .any(|s| wanted(s))
    {
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
    let inject_size = std::fs::metadata(&o.inject_bin).map_or(0, |m| m.len());
    let _ = writeln!(
        out,
        "- injector: `{}`, {:.2} MiB (`secret-reloader-inject`: inject and the webhook, never in a pod)",
        o.inject_bin,
        inject_size as f64 / 1048576.0
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
        "static binary at most 4.5 MiB",
        Some(format!("{:.2} MiB", size as f64 / 1048576.0)),
        Some(size <= 4608 * 1024),
    );
    add(
        "inject of a 1,000-document stream within 1 s",
        f.inject_1000
            .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        f.inject_1000.map(|d| d <= Duration::from_secs(1)),
    );
    let failed = |n: usize| {
        if n > 0 {
            format!(" ({n} reviews failed)")
        } else {
            String::new()
        }
    };
    add(
        "webhook: p99 of a 20-container, 30-volume review at 200/s within 5 ms",
        f.webhook_p99
            .zip(f.webhook_failed)
            .map(|(p, n)| format!("{p:.2} ms{}", failed(n))),
        f.webhook_p99
            .zip(f.webhook_failed)
            .map(|(p, n)| p <= 5.0 && n == 0),
    );
    add(
        "webhook: RSS under load at most 16 MiB",
        f.webhook_rss_kib.map(|k| {
            format!(
                "{:.2} MiB (after start {})",
                mib(k),
                f.webhook_rss_start_kib
                    .map_or("-".into(), |s| format!("{:.2} MiB", mib(s)))
            )
        }),
        f.webhook_rss_kib.map(|k| k <= 16 * 1024),
    );
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
    let within = |a: &Option<Stats>, b: &Option<Stats>, what: &str, factor: f64| match (a, b) {
        (Some(a), Some(b)) if a.n > 0 && b.n > 0 => (
            Some(format!(
                "{:.3} ms vs {what} {:.3} ms ({:.2}×)",
                a.median,
                b.median,
                a.median / b.median
            )),
            Some(a.median <= factor * b.median),
        ),
        _ => (None, None),
    };
    let (fig, met) = within(&f.http_fast, &f.floor_http, "floor", 2.5);
    add("fast path within 2.5× the floor: HTTP (median)", fig, met);
    let (fig, met) = within(&f.sig_fast, &f.floor_sig, "floor", 2.5);
    add("fast path within 2.5× the floor: SIGHUP (median)", fig, met);
    let (fig, met) = within(&f.http_fast, &f.cmr_http, "configmap-reload", 0.5);
    add("HTTP at most 0.5× configmap-reload's median", fig, met);
    let scaled = |a: f64, b: f64| b <= 12.0 * a;
    let files = |n: usize| f.files_scale.iter().find(|r| r.0 == n);
    add(
        "10,000 files at most 12× the cost of 1,000: start-up",
        files(1000)
            .zip(files(10_000))
            .map(|(a, b)| format!("{:.0} ms vs {:.0} ms ({:.1}×)", b.1, a.1, b.1 / a.1)),
        files(1000)
            .zip(files(10_000))
            .map(|(a, b)| scaled(a.1, b.1)),
    );
    add(
        "10,000 files at most 12× the cost of 1,000: change → call",
        files(1000)
            .zip(files(10_000))
            .map(|(a, b)| format!("{:.1} ms vs {:.1} ms ({:.1}×)", b.2, a.2, b.2 / a.2)),
        files(1000)
            .zip(files(10_000))
            .map(|(a, b)| scaled(a.2, b.2)),
    );
    add(
        "10,000 files: /healthz max within 50 ms during the scans",
        files(10_000).map(|b| format!("{:.1} ms", b.3.as_secs_f64() * 1e3)),
        files(10_000).map(|b| b.3 <= Duration::from_millis(50)),
    );
    let groups = |n: usize| f.groups_scale.iter().find(|r| r.0 == n);
    add(
        "5,000 groups at most 12× the figures of 500: start-up",
        groups(500)
            .zip(groups(5000))
            .map(|(a, b)| format!("{:.0} ms vs {:.0} ms ({:.1}×)", b.1, a.1, b.1 / a.1)),
        groups(500).zip(groups(5000)).map(|(a, b)| scaled(a.1, b.1)),
    );
    add(
        "5,000 groups at most 12× the figures of 500: RSS (after a /metrics scrape)",
        groups(500).zip(groups(5000)).map(|(a, b)| {
            format!(
                "{:.1} MiB ({:.1} after a scrape) vs {:.1} MiB ({:.1})",
                mib(b.2),
                mib(b.3),
                mib(a.2),
                mib(a.3)
            )
        }),
        groups(500)
            .zip(groups(5000))
            .map(|(a, b)| scaled(a.2 as f64, b.2 as f64) && scaled(a.3 as f64, b.3 as f64)),
    );
    add(
        "1,000 volumes under 16 MiB RSS",
        f.rss_1000_kib.map(|k| format!("{:.2} MiB", mib(k))),
        f.rss_1000_kib.map(|k| k < 16 * 1024),
    );
    let ok: Vec<&admin::AdminRow> = f.admin.iter().filter(|r| r.error.is_none()).collect();
    let failed_start = f.admin.len() - ok.len();
    let tag = |abuse: &str| abuse.split(' ').next().unwrap_or("").to_string();
    add(
        "admin port under abuse: RSS under 8 MiB",
        (!f.admin.is_empty()).then(|| {
            let mut s = ok
                .iter()
                .map(|r| format!("{} {:.2} MiB", tag(&r.abuse), mib(r.rss_max_kib)))
                .collect::<Vec<_>>()
                .join(", ");
            if failed_start > 0 {
                let _ = write!(s, "; {failed_start} daemon(s) did not start");
            }
            s
        }),
        (!f.admin.is_empty())
            .then(|| failed_start == 0 && ok.iter().all(|r| r.rss_max_kib < 8 * 1024)),
    );
    add(
        "admin port under abuse (a)–(c): /healthz max within 50 ms",
        (!f.admin.is_empty()).then(|| {
            ok.iter()
                .filter(|r| !r.abuse.contains("a flood"))
                .map(|r| {
                    let mut s = format!("{} {:.1} ms", tag(&r.abuse), r.healthz.max);
                    if r.healthz_failed > 0 {
                        let _ = write!(s, " ({} failed)", r.healthz_failed);
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", ")
        }),
        (!f.admin.is_empty()).then(|| {
            failed_start == 0
                && ok
                    .iter()
                    .filter(|r| !r.abuse.contains("a flood"))
                    .all(|r| r.healthz_failed == 0 && r.healthz.n > 0 && r.healthz.max <= 50.0)
        }),
    );
    let ok: Vec<&stalls::StallRow> = f.stalls.iter().filter(|r| r.error.is_none()).collect();
    let failed_start = f.stalls.len() - ok.len();
    add(
        "stalls: /healthz within 50 ms",
        (!f.stalls.is_empty()).then(|| {
            let mut s = ok
                .iter()
                .map(|r| {
                    let mut s = format!("{} max {:.1} ms", tag(r.stall), r.healthz.max);
                    if r.healthz_failed > 0 {
                        let _ = write!(s, " ({} failed)", r.healthz_failed);
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", ");
            if failed_start > 0 {
                let _ = write!(s, "; {failed_start} daemon(s) did not start");
            }
            s
        }),
        (!f.stalls.is_empty()).then(|| {
            failed_start == 0
                && ok
                    .iter()
                    .all(|r| r.healthz_failed == 0 && r.healthz.n > 0 && r.healthz.max <= 50.0)
        }),
    );
    add(
        "stalls: the other group's reload within 2× its quiet time (medians)",
        (!f.stalls.is_empty()).then(|| {
            ok.iter()
                .map(|r| {
                    format!(
                        "{} {:.3} ms vs {:.3} ms quiet",
                        tag(r.stall),
                        r.other.median,
                        r.quiet.median
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }),
        (!f.stalls.is_empty()).then(|| {
            failed_start == 0
                && ok
                    .iter()
                    .all(|r| r.other.n > 0 && r.other.median <= 2.0 * r.quiet.median)
        }),
    );
    let grace = stalls::GRACE + Duration::from_millis(250);
    add(
        "stalls: SIGTERM → exit within the grace (5 s default; 0.25 s allowed to exit)",
        (!f.stalls.is_empty()).then(|| {
            ok.iter()
                .map(|r| match r.exit {
                    Some(d) => format!("{} {:.0} ms", tag(r.stall), util::ms(d)),
                    None => format!("{} did not exit", tag(r.stall)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }),
        (!f.stalls.is_empty())
            .then(|| failed_start == 0 && ok.iter().all(|r| r.exit.is_some_and(|d| d <= grace))),
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

/// What this run's figures say, computed from them (nothing here is a figure from elsewhere).
fn notes(out: &mut String, f: &Figures) {
    let mut lines: Vec<String> = Vec::new();
    let med = |s: &Option<Stats>| s.filter(|s| s.n > 0).map(|s| s.median);
    if let (Some(ours), Some(floor)) = (med(&f.http_fast), med(&f.floor_http)) {
        lines.push(format!(
            "**HTTP**: swap → call median {ours:.3} ms against the floor's {floor:.3} ms: {:.2}× \
             ({:+.3} ms per reload spent beyond the least any watcher can do).",
            ours / floor,
            ours - floor
        ));
    }
    if let (Some(ours), Some(floor)) = (med(&f.sig_fast), med(&f.floor_sig)) {
        lines.push(format!(
            "**SIGHUP**: swap → delivery median {ours:.3} ms against the floor's {floor:.3} ms: \
             {:.2}× ({:+.3} ms).",
            ours / floor,
            ours - floor
        ));
    }
    if let Some((plain, tls)) = &f.tls {
        lines.push(format!(
            "**TLS**: swap → HTTPS call median {:.3} ms against {:.3} ms over plain HTTP in the \
             same run ({:+.3} ms, the kept-alive session carrying the call).",
            tls.median,
            plain.median,
            tls.median - plain.median
        ));
    }
    if let Some(s) = med(&f.served) {
        lines.push(format!(
            "**Served certificate**: swap → the daemon confirmed nginx serves the new \
             certificate, median {s:.1} ms (SIGHUP, nginx's new workers, the daemon's looks)."
        ));
    }
    if let (Some(ours), Some(cmr)) = (med(&f.http_fast), med(&f.cmr_http)) {
        lines.push(format!(
            "**configmap-reload**, measured interleaved with the daemon in this run: median \
             {cmr:.3} ms swap → webhook; the daemon's median is {:.2}× of it ({}).",
            ours / cmr,
            if ours <= cmr {
                format!("{:.2}× faster", cmr / ours)
            } else {
                format!("{:.2}× slower", ours / cmr)
            }
        ));
    }
    for (what, s) in [("HTTP", &f.plain_http), ("SIGHUP", &f.plain_sig)] {
        if let (Some(p), Some(fast)) = (
            med(s),
            med(if what == "HTTP" {
                &f.http_fast
            } else {
                &f.sig_fast
            }),
        ) {
            lines.push(format!(
                "**Plain writes** ({what}; no commit point, so the quiet period `--debounce` at its \
                 default applies): median {p:.1} ms, {:.0}× the kubelet swap's {fast:.3} ms.",
                p / fast
            ));
        }
    }
    if let Some((n, actions, last)) = f.storm {
        lines.push(format!(
            "**Storm**: {n} updates back to back gave {actions} reload action(s); {}.",
            match last {
                Some(d) => format!(
                    "the action carrying the last update came {:.1} ms after it",
                    util::ms(d)
                ),
                None => "no action carried the last update (a defect)".into(),
            }
        ));
    }
    if let (Some(first), Some(last)) = (f.scale.first(), f.scale.last())
        && f.scale.len() > 1
    {
        lines.push(format!(
            "**Scale**: one change → call median {:.3} ms with {} volume(s), {:.3} ms with {} ({:.2}×).",
            first.1,
            first.0,
            last.1,
            last.0,
            last.1 / first.1
        ));
    }
    for r in f.admin.iter().filter(|r| r.error.is_none()) {
        lines.push(format!(
            "**Admin {}**: RSS {:.2} → max {:.2} MiB, /healthz max {:.1} ms{}, reload median \
             {:.3} → {:.3} ms ({:.2}× quiet).",
            r.abuse.split(' ').next().unwrap_or(""),
            mib(r.rss_start_kib),
            mib(r.rss_max_kib),
            r.healthz.max,
            if r.healthz_failed > 0 {
                format!(" with {} probe(s) failed", r.healthz_failed)
            } else {
                String::new()
            },
            r.quiet.median,
            r.loaded.median,
            r.loaded.median / r.quiet.median
        ));
    }
    for r in f.stalls.iter().filter(|r| r.error.is_none()) {
        lines.push(format!(
            "**Stall {}**: /healthz max {:.1} ms, the other group's reload median {:.3} ms \
             ({} of {} rotations reloaded), SIGTERM → exit {}.",
            r.stall.split(' ').next().unwrap_or(""),
            r.healthz.max,
            r.other.median,
            r.other.n,
            5,
            r.exit
                .map(|d| format!("{:.0} ms", util::ms(d)))
                .unwrap_or_else(|| "none within 20 s".into())
        ));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Reading the figures\n");
    for l in lines {
        let _ = writeln!(out, "{l}\n");
    }
}
