//! Property test: random sequences of writer operations (kubelet swaps in both symlink orders with
//! keys added and removed, in-place writes, rename-over, delete + recreate, chmod, touch) on a
//! kubelet volume and a plain directory of one watch group, interleaved with faults of the
//! endpoint (500, refused, hanging past the time limit, a restart) and pauses, against a real
//! daemon. At quiescence:
//! - the last version delivered is the final content (or, when nothing was delivered, the first);
//! - no more deliveries than content changes, and no call at all when the content never changed
//!   (touch, chmod, identical rewrites);
//! - without faults, never the same content delivered twice in a row (after a failed attempt the
//!   app's version is unknown and delivering again is the safe choice).
//!
//! Each case runs a real daemon for a few seconds; `PROPTEST_CASES` sets how many (default 12).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::sink::{Mode, Probe, Sink};
use crate::support::{AtomicWriter, Daemon, SymlinkOrder, eventually, now_ns, tempdir};

#[derive(Debug, Clone)]
enum Fault {
    Ok,
    Status500,
    Refuse,
    Hang,
    Restart,
}

#[derive(Debug, Clone)]
enum Op {
    Swap { keys: Vec<(u8, u8)>, before: bool },
    InPlace { file: u8, value: u8 },
    RenameOver { file: u8, value: u8 },
    DeleteRecreate { file: u8, value: u8 },
    Remove { file: u8 },
    Chmod { file: u8, open: bool },
    Touch { file: u8 },
    Fault(Fault),
    Pause(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let small = 0u8..3;
    prop_oneof![
        3 => (proptest::collection::vec((0u8..3, 0u8..3), 1..3), any::<bool>())
            .prop_map(|(keys, before)| Op::Swap { keys, before }),
        2 => (small.clone(), 0u8..3).prop_map(|(file, value)| Op::InPlace { file, value }),
        2 => (small.clone(), 0u8..3).prop_map(|(file, value)| Op::RenameOver { file, value }),
        1 => (small.clone(), 0u8..3).prop_map(|(file, value)| Op::DeleteRecreate { file, value }),
        1 => small.clone().prop_map(|file| Op::Remove { file }),
        1 => (small.clone(), any::<bool>()).prop_map(|(file, open)| Op::Chmod { file, open }),
        1 => small.prop_map(|file| Op::Touch { file }),
        2 => prop_oneof![
            Just(Fault::Ok), Just(Fault::Status500), Just(Fault::Refuse), Just(Fault::Hang), Just(Fault::Restart)
        ].prop_map(Op::Fault),
        2 => (0u16..250).prop_map(Op::Pause),
    ]
}

/// The content as the app would load it: every key of the volume's current version and every
/// file of the plain directory.
fn snapshot(kvol: &Path, plain: &Path) -> String {
    let mut out = BTreeMap::new();
    for (prefix, dir) in [("k", kvol.join("..data")), ("p", plain.to_path_buf())] {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if let Ok(text) = fs::read_to_string(e.path()) {
                    out.insert(format!("{prefix}/{name}"), text);
                }
            }
        }
    }
    out.into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

struct World {
    _dir: tempfile::TempDir,
    kvol: PathBuf,
    plain: PathBuf,
    keys: BTreeMap<String, String>,
}

impl World {
    fn plain_file(&self, file: u8) -> PathBuf {
        self.plain.join(format!("f{file}"))
    }

    fn plain_count(&self) -> usize {
        fs::read_dir(&self.plain)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    fn apply(&mut self, op: &Op, sink: &Sink) {
        match op {
            Op::Swap { keys, before } => {
                let order = if *before {
                    SymlinkOrder::BeforeSwap
                } else {
                    SymlinkOrder::AfterSwap
                };
                self.keys = keys
                    .iter()
                    .map(|(k, v)| (format!("k{k}"), format!("v{v}")))
                    .collect();
                let list: Vec<(&str, &str)> = self
                    .keys
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                AtomicWriter::new(&self.kvol)
                    .with_order(order)
                    .write(&list)
                    .unwrap();
            }
            Op::InPlace { file, value } => {
                fs::write(self.plain_file(*file), format!("v{value}")).unwrap()
            }
            Op::RenameOver { file, value } => {
                let tmp = self.plain.join(format!(".f{file}.tmp"));
                fs::write(&tmp, format!("v{value}")).unwrap();
                fs::rename(&tmp, self.plain_file(*file)).unwrap();
            }
            Op::DeleteRecreate { file, value } => {
                let _ = fs::remove_file(self.plain_file(*file));
                fs::write(self.plain_file(*file), format!("v{value}")).unwrap();
            }
            Op::Remove { file } => {
                // An empty directory is never a version to reload: keep one file at least.
                if self.plain_file(*file).exists() && self.plain_count() > 1 {
                    fs::remove_file(self.plain_file(*file)).unwrap();
                }
            }
            Op::Chmod { file, open } => {
                if let Ok(f) = fs::File::open(self.plain_file(*file)) {
                    let _ = f.set_permissions(fs::Permissions::from_mode(if *open {
                        0o644
                    } else {
                        0o640
                    }));
                }
            }
            Op::Touch { file } => {
                if let Ok(f) = fs::File::options()
                    .append(true)
                    .open(self.plain_file(*file))
                {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
            }
            Op::Fault(f) => match f {
                Fault::Ok => {
                    sink.listen();
                    sink.set(Mode::Status(200));
                }
                Fault::Status500 => sink.set(Mode::Status(500)),
                Fault::Refuse => sink.refuse(),
                Fault::Hang => sink.set(Mode::Hang),
                Fault::Restart => {
                    sink.refuse();
                    std::thread::sleep(Duration::from_millis(50));
                    sink.listen();
                }
            },
            Op::Pause(ms) => std::thread::sleep(Duration::from_millis(u64::from(*ms))),
        }
    }
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempdir();
    let kvol = dir.path().join("kvol");
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let mut world = World {
        _dir: dir,
        kvol: kvol.clone(),
        plain: plain.clone(),
        keys: BTreeMap::new(),
    };
    world.apply(
        &Op::Swap {
            keys: vec![(0, 0)],
            before: false,
        },
        &Sink::start(),
    );
    fs::write(world.plain_file(0), "v0").unwrap();
    let (k, p) = (kvol.clone(), plain.clone());
    let probe: Probe = Arc::new(move || Some(snapshot(&k, &p)));
    let sink = Sink::start_with(Some(probe));
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        kvol.to_str().unwrap(),
        "--watch",
        plain.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "100ms",
        "--retry-backoff-max",
        "200ms",
        "--reload-timeout",
        "300ms",
        "--debounce",
        "50ms",
        // The endpoint's recovery at the end causes no filesystem event: the resyncs make a
        // scan after it certain. Retries are unbounded (nothing given up for a resync to try
        // again), and a resync finds the same content.
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();
    let initial = snapshot(&kvol, &plain);
    let mut changes = 0;
    let mut faults = false;
    let mut last = initial.clone();
    for op in ops {
        world.apply(op, &sink);
        faults |= matches!(op, Op::Fault(f) if !matches!(f, Fault::Ok));
        let now = snapshot(&kvol, &plain);
        if now != last {
            changes += 1;
            last = now;
        }
    }
    sink.listen();
    sink.set(Mode::Status(200));
    let t = now_ns();
    let final_content = snapshot(&kvol, &plain);
    let delivered_final = |s: &Sink| {
        let d = s.delivered();
        d.last()
            .and_then(|c| c.version.clone())
            .unwrap_or_else(|| initial.clone())
            == final_content
    };
    // A timeout panics (the runner takes it as the case's failure; the daemon's log is printed).
    eventually(
        &format!("the final content {final_content} delivered"),
        || (delivered_final(&sink), sink.calls()),
        |(delivered, _)| *delivered,
    );
    d.passed(t);
    prop_assert!(
        delivered_final(&sink),
        "something after the final content: {:#?}",
        sink.calls()
    );
    let delivered = sink.delivered();
    prop_assert!(
        delivered.len() <= changes,
        "{} deliveries for {changes} content changes: {:#?}",
        delivered.len(),
        delivered
    );
    if changes == 0 {
        prop_assert_eq!(sink.count(), 0, "calls without any content change");
    }
    if !faults {
        // The version each call was made for (the app may load newer content that landed since).
        let fingerprint = |c: &crate::support::sink::Call| {
            c.headers
                .iter()
                .find(|(k, _)| k == "x-secret-reloader-fingerprint")
                .map(|(_, v)| v.clone())
        };
        for pair in delivered.windows(2) {
            let (a, b) = (fingerprint(&pair[0]), fingerprint(&pair[1]));
            prop_assert!(a.is_some());
            prop_assert_ne!(a, b, "the same version delivered twice in a row");
        }
    }
    Ok(())
}

#[test]
fn random_writers_and_faults_end_on_the_final_content() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 3..14), |ops| {
            run_case(&ops)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
