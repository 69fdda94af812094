//! Latency from kubelet's `..data` swap (and from a plain write) to the action, for HTTP and
//! SIGHUP targets, beside configmap-reload (when `CMR_BIN` is set) and the floor.
//!
//! Every watcher has its own volume and all run at once; each iteration rotates one volume at a
//! time (ours, configmap-reload's, the floor's; then ours and the floor's for SIGHUP), waits for
//! that watcher's stamp, and pauses 20 ms. So only one watcher works at a time, and all of them
//! are measured under the same machine state, interleaved.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use secret_reloader::demo::atomic_writer::AtomicWriter;

use crate::daemon::Daemon;
use crate::floor::Floor;
use crate::peer::Peer;
use crate::probe::{HttpProbe, SignalProbe};
use crate::util::{Stats, rotate, row, stats, volume, volume_on_disk};
use crate::{Figures, Opts};

const DEADLINE: Duration = Duration::from_secs(3);
const PAUSE: Duration = Duration::from_millis(20);
const WARM_UP: usize = 3;

/// What a watcher's action is observed as.
enum Seen {
    Http(&'static str),
    Signal,
}

/// Which figure a watcher's row is.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    OursHttp,
    OursHttpDisk,
    CmrHttp,
    FloorHttp,
    OursSignal,
    FloorSignal,
}

struct Watcher {
    role: Role,
    label: &'static str,
    seen: Seen,
    writer: AtomicWriter,
    samples: Vec<Duration>,
    /// HTTP: swap → the endpoint's thread read the first byte (its own wakeup included).
    read_samples: Vec<Duration>,
    reused: usize,
    missed: usize,
}

impl Watcher {
    /// Rotates its volume and waits for its action: the latency (and, for HTTP, the latency to
    /// the endpoint's read, and whether the connection was kept alive), if it came.
    fn once(&mut self, i: usize, http: &HttpProbe, sig: &SignalProbe) -> Option<Sample> {
        match self.seen {
            Seen::Http(path) => {
                http.drain_path(path);
                let swapped = rotate(&self.writer, i);
                http.next_on(path, DEADLINE).map(|h| Sample {
                    latency: h.at.saturating_duration_since(swapped),
                    read: Some(h.read_at.saturating_duration_since(swapped)),
                    reused: h.reused,
                })
            }
            Seen::Signal => {
                sig.reset();
                let swapped = rotate(&self.writer, i);
                sig.wait(DEADLINE).map(|at| Sample {
                    latency: at.saturating_duration_since(swapped),
                    read: None,
                    reused: false,
                })
            }
        }
    }

    /// The request path that names it (`/ours`, `/cmr`, `/floor`), or `SIGHUP`.
    fn seen_as(&self) -> &'static str {
        match self.seen {
            Seen::Http(p) => p,
            Seen::Signal => "SIGHUP",
        }
    }
}

struct Sample {
    latency: Duration,
    read: Option<Duration>,
    reused: bool,
}

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Latency: write → action (ms)\n");
    let common = ["--min-reload-interval", "0", "--reload-on-start", "never"];
    let http = HttpProbe::start();
    let sig = SignalProbe::install();
    let me = std::process::id();

    let mut dirs = Vec::new();
    let mut watchers: Vec<Watcher> = Vec::new();
    let mut add = |role, label, seen, tag: &str| {
        let (dir, w) = if role == Role::OursHttpDisk {
            volume_on_disk(tag)
        } else {
            volume(tag)
        };
        let vol = w.dir().to_path_buf();
        let pid_file = dir.path().join("bench.pid");
        dirs.push(dir);
        watchers.push(Watcher {
            role,
            label,
            seen,
            writer: w,
            samples: Vec::new(),
            read_samples: Vec::new(),
            reused: 0,
            missed: 0,
        });
        (vol, pid_file)
    };

    let (vol, _) = add(
        Role::OursHttp,
        "kubelet swap → HTTP call: secret-reloader",
        Seen::Http("/ours"),
        "ours-http",
    );
    let url = http.url_for("/ours");
    let mut args = vec!["--watch", vol.to_str().unwrap(), "--reload-url", &url];
    args.extend(common);
    let ours_http = Daemon::start(&o.bin, &args);

    let (vol, _) = add(
        Role::OursHttpDisk,
        "kubelet swap → HTTP call: secret-reloader, volume on disk (read on a lane)",
        Seen::Http("/disk"),
        "ours-disk",
    );
    let url = http.url_for("/disk");
    let mut args = vec!["--watch", vol.to_str().unwrap(), "--reload-url", &url];
    args.extend(common);
    let ours_disk = Daemon::start(&o.bin, &args);

    let cmr_bin = std::env::var("CMR_BIN").ok().filter(|b| !b.is_empty());
    let mut cmr = None;
    if let Some(bin) = &cmr_bin {
        let (vol, _) = add(
            Role::CmrHttp,
            "kubelet swap → HTTP call: configmap-reload",
            Seen::Http("/cmr"),
            "cmr",
        );
        match Peer::start(bin, &vol, &http.url_for("/cmr")) {
            Ok(p) => cmr = Some(p),
            Err(e) => eprintln!("  configmap-reload: {e}"),
        }
    }

    let (vol, _) = add(
        Role::FloorHttp,
        "kubelet swap → HTTP call: floor (own process; inotify read → one request, new connection)",
        Seen::Http("/floor"),
        "floor-http",
    );
    let floor_http = Floor::http(&vol, http.addr, "/floor");

    let (vol, pid_file) = add(
        Role::OursSignal,
        "kubelet swap → SIGHUP delivered: secret-reloader",
        Seen::Signal,
        "ours-signal",
    );
    std::fs::write(&pid_file, me.to_string()).unwrap();
    let mut args = vec![
        "--watch",
        vol.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ];
    args.extend(common);
    let ours_sig = Daemon::start(&o.bin, &args);

    let (vol, _) = add(
        Role::FloorSignal,
        "kubelet swap → SIGHUP delivered: floor (own process; inotify read → kill)",
        Seen::Signal,
        "floor-signal",
    );
    let floor_sig = Floor::signal(&vol, me);
    if cmr_bin.is_some() && cmr.is_none() {
        watchers.retain(|w| w.role != Role::CmrHttp);
    }

    // Warm-up (not counted): every watcher has acted, connections are open where they are kept.
    for i in 0..WARM_UP {
        for w in watchers.iter_mut() {
            if w.once(i, &http, &sig).is_none() {
                eprintln!("  warm-up: {} did not act", w.label);
            }
            std::thread::sleep(PAUSE);
        }
    }
    for i in WARM_UP..WARM_UP + o.iterations {
        for w in watchers.iter_mut() {
            match w.once(i, &http, &sig) {
                Some(s) => {
                    w.samples.push(s.latency);
                    w.read_samples.extend(s.read);
                    w.reused += usize::from(s.reused);
                }
                None => {
                    w.missed += 1;
                    eprintln!("  iteration {i}: {} did not act within 3 s", w.label);
                }
            }
            std::thread::sleep(PAUSE);
        }
    }
    drop((ours_http, ours_disk, ours_sig, cmr, floor_http, floor_sig));

    let _ = writeln!(
        out,
        "{} iterations; each rotates every watcher's own volume in turn, waits for its action and \
         pauses {} ms. HTTP is stamped at the kernel's receive timestamp of the request's first byte \
         (`SO_TIMESTAMPNS`: the endpoint's own wakeup is in no figure), SIGHUP in this process's \
         handler.\n",
        o.iterations,
        PAUSE.as_millis()
    );
    let _ = writeln!(
        out,
        "| path | median | p99 | max | n |\n|---|---|---|---|---|"
    );
    let mut notes = Vec::new();
    let mut read_medians = Vec::new();
    for w in &watchers {
        if !w.read_samples.is_empty() {
            let s = stats(w.read_samples.clone());
            read_medians.push(format!("{} {:.3} ms", w.seen_as(), s.median));
        }
        let s = stats(w.samples.clone());
        row(out, w.label, &s);
        *match w.role {
            Role::OursHttp => &mut f.http_fast,
            Role::OursHttpDisk => &mut f.http_disk,
            Role::CmrHttp => &mut f.cmr_http,
            Role::FloorHttp => &mut f.floor_http,
            Role::OursSignal => &mut f.sig_fast,
            Role::FloorSignal => &mut f.floor_sig,
        } = Some(s);
        if let Seen::Http(path) = w.seen {
            notes.push(format!(
                "{path}: {} of {} calls on a kept-alive connection",
                w.reused,
                w.samples.len()
            ));
        }
        if w.missed > 0 {
            notes.push(format!(
                "{}: {} rotations without an action",
                w.label, w.missed
            ));
        }
    }
    if f.cmr_http.is_none() {
        let why = if cmr_bin.is_none() {
            "not measured (CMR_BIN unset)"
        } else {
            "not measured (it did not start)"
        };
        let _ = writeln!(
            out,
            "| kubelet swap → HTTP call: configmap-reload | {why} | | | |"
        );
    }

    // Writers without a commit point: the quiet period (--debounce, at its default) is the wait.
    let plain = |what: &str,
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
            match wait() {
                Some(at) => v.push(at.saturating_duration_since(written)),
                None => eprintln!("  {what}: write {i} without an action within 3 s"),
            }
            std::thread::sleep(PAUSE);
        }
        drop(d);
        stats(v)
    };
    let url = http.url_for("/plain");
    let s = plain(
        "plain write → HTTP call",
        &["--reload-url", &url],
        &mut || http.next_on("/plain", DEADLINE).map(|h| h.at),
        &mut || http.drain_path("/plain"),
    );
    row(
        out,
        "plain write → HTTP call: secret-reloader (default --debounce)",
        &s,
    );
    f.plain_http = Some(s);
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pid_file.path(), me.to_string()).unwrap();
    let pid = pid_file.path().to_str().unwrap().to_string();
    let s = plain(
        "plain write → SIGHUP delivered",
        &["--pid-file", &pid],
        &mut || sig.wait(DEADLINE),
        &mut || sig.reset(),
    );
    row(
        out,
        "plain write → SIGHUP delivered: secret-reloader (default --debounce)",
        &s,
    );
    f.plain_sig = Some(s);

    let ratio = |a: &Option<Stats>, b: &Option<Stats>| match (a, b) {
        (Some(a), Some(b)) if a.n > 0 && b.n > 0 => format!(
            "{:.2}× ({:+.3} ms)",
            a.median / b.median,
            a.median - b.median
        ),
        _ => "not measured".into(),
    };
    let _ = writeln!(
        out,
        "\nRatios of medians: HTTP ours/floor {}, SIGHUP ours/floor {}, HTTP ours/configmap-reload {}.",
        ratio(&f.http_fast, &f.floor_http),
        ratio(&f.sig_fast, &f.floor_sig),
        ratio(&f.http_fast, &f.cmr_http),
    );
    let _ = writeln!(out, "Connections: {}.", notes.join("; "));
    let _ = writeln!(
        out,
        "Seen by the endpoint's thread instead (swap → its read of the first byte, its wakeup \
         included), medians: {}.\n",
        read_medians.join(", ")
    );
}
