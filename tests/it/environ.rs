//! Apps that took a Secret's keys as environment variables (`--consumed-as env`): a real process
//! started with the values of a kubelet-style volume, under a small supervisor that restarts it
//! the way kubelet restarts a container (each start reads the keys anew, or, for a stale kubelet,
//! the values it read first). The daemon compares the process's environment with the files and
//! restarts it with one TERM while they differ, never loops, and says why when it cannot read the
//! environment. Everything runs in a PID namespace of its own.

use std::fs;
use std::path::Path;

use crate::support::process::doctor_through;
use crate::support::{
    AtomicWriter, Daemon, daemon_beside_as, eventually, now_ns, open_dir, unique,
};

/// The app's process name, unique to the test.
fn app_name() -> String {
    format!("envapp-{}", unique())
}

/// A copy of `sleep` named `name` in `dir`: the app, found by its process name.
fn install_app(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    fs::copy("/bin/sleep", &path).unwrap();
    path.display().to_string()
}

/// The supervisor: starts the app with TOKEN and PASSWORD read from `vol` (at every start, or
/// once when `stale`), logs each start to `starts`, and starts it again 100 ms after it exits.
/// `run_as`: the app's uid and gid, through setpriv.
fn supervisor(app: &str, vol: &Path, starts: &Path, stale: bool, run_as: Option<u32>) -> String {
    let read = format!(
        "TOKEN=\"$(cat {v}/TOKEN)\"; PASSWORD=\"$(cat {v}/PASSWORD)\"",
        v = vol.display()
    );
    let setpriv = run_as
        .map(|u| format!("setpriv --reuid {u} --regid {u} --clear-groups "))
        .unwrap_or_default();
    // `:` where nothing is read.
    let (once, each) = if stale {
        (read.as_str(), ":")
    } else {
        (":", read.as_str())
    };
    format!(
        "( {once}; while :; do {each}; echo start >>{starts}; \
         TOKEN=\"$TOKEN\" PASSWORD=\"$PASSWORD\" {setpriv}{app} 100000 & wait $!; sleep 0.1; done )",
        starts = starts.display()
    )
}

struct Setup {
    /// Holds the volume, the app and its log; removed on drop.
    _dir: tempfile::TempDir,
    vol: std::path::PathBuf,
    writer: AtomicWriter,
    starts: std::path::PathBuf,
    app: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = open_dir();
        let vol = dir.path().join("secret");
        let writer = AtomicWriter::new(&vol);
        writer
            .write(&[("TOKEN", "token-1"), ("PASSWORD", "password-1")])
            .unwrap();
        let name = app_name();
        let app = install_app(dir.path(), &name);
        let starts = dir.path().join("starts");
        Setup {
            _dir: dir,
            vol,
            writer,
            starts,
            app,
        }
    }

    fn name(&self) -> String {
        Path::new(&self.app)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    fn starts(&self) -> usize {
        fs::read_to_string(&self.starts)
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn daemon(&self, stale: bool, app_uid: Option<u32>, daemon_uid: Option<u32>) -> Daemon {
        self.daemon_sending("TERM", stale, app_uid, daemon_uid)
    }

    /// As [`Setup::daemon`], the target's `--signal` being `signal`.
    fn daemon_sending(
        &self,
        signal: &str,
        stale: bool,
        app_uid: Option<u32>,
        daemon_uid: Option<u32>,
    ) -> Daemon {
        let name = self.name();
        let d = daemon_beside_as(
            &supervisor(&self.app, &self.vol, &self.starts, stale, app_uid),
            daemon_uid,
            &[
                "--watch",
                self.vol.to_str().unwrap(),
                "--consumed-as",
                "env",
                "--process-name",
                &name,
                "--signal",
                signal,
                "--min-reload-interval",
                "0",
                "--retry-backoff-max",
                "1s",
            ],
        );
        d.wait_ready();
        eventually("the app to start", || self.starts(), |n| *n >= 1);
        d
    }
}

/// `secret-reloader doctor` with the daemon's flags, in the daemon's PID namespace (where the app
/// is): whether it found no problem, and its report.
fn doctor(d: &Daemon, s: &Setup) -> (bool, String) {
    doctor_sending(d, s, "TERM")
}

/// As [`doctor`], the target's `--signal` being `signal`.
fn doctor_sending(d: &Daemon, s: &Setup, signal: &str) -> (bool, String) {
    // The namespace's first process (the shell that became the daemon) is unshare's child.
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", d.pid())).unwrap();
    let inner: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let (target, name) = (inner.to_string(), s.name());
    let (code, report, _) = doctor_through(
        &["nsenter", "--target", &target, "--pid", "--mount", "--"],
        &[
            "--standalone",
            "--watch",
            s.vol.to_str().unwrap(),
            "--consumed-as",
            "env",
            "--process-name",
            &name,
            "--signal",
            signal,
        ],
    );
    (code == 0, report)
}

fn environment(d: &Daemon) -> serde_json::Value {
    d.status()["targets"][0]["environment"].clone()
}

/// The first comparison: both variables hold the files' content.
fn compared(d: &Daemon) -> serde_json::Value {
    eventually(
        "the environment compared",
        || environment(d),
        |e| e["holding"].as_array().is_some_and(|h| h.len() == 2),
    )
}

#[test]
fn a_changed_key_restarts_the_app_once_and_its_new_environment_counts() {
    let s = Setup::new();
    let d = s.daemon(false, None, None);
    let e = compared(&d);
    assert!(e["differing"].as_array().unwrap().is_empty(), "{e}");
    assert_eq!(d.metric("environment_stale", &[]), Some(0.0));
    let (ok, report) = doctor(&d, &s);
    assert!(
        ok && report.contains("environment holds the content on disk"),
        "{report}"
    );

    let since = now_ns();
    s.writer
        .write(&[("TOKEN", "token-2"), ("PASSWORD", "password-1")])
        .unwrap();
    let st = eventually(
        "the restarted app to hold the new value",
        || d.status(),
        |st| {
            st["targets"][0]["stale"] == false
                && st["targets"][0]["last_attempt"]["result"] == "success"
        },
    );
    assert_eq!(s.starts(), 2, "one restart: {st}");
    d.passed(since);
    assert_eq!(s.starts(), 2, "still one restart");
    assert_eq!(d.metric("environment_stale", &[]), Some(0.0));
    assert!(
        d.log().contains("SIGTERM sent to"),
        "the restart is logged:\n{}",
        d.log()
    );
    let everything = format!("{}{}{}", d.metrics(), d.status(), d.log());
    for value in ["token-1", "token-2", "password-1"] {
        assert!(!everything.contains(value), "{value} leaked");
    }
}

#[test]
fn a_change_of_no_variable_restarts_nothing() {
    let s = Setup::new();
    let d = s.daemon(false, None, None);
    compared(&d);
    // A new key the app was not given: the version changes, the environment still holds it.
    let since = now_ns();
    s.writer
        .write(&[
            ("TOKEN", "token-1"),
            ("PASSWORD", "password-1"),
            ("README", "not a variable"),
        ])
        .unwrap();
    let st = d.passed(since);
    assert_eq!(s.starts(), 1, "no restart: {st}");
    let e = environment(&d);
    assert_eq!(e["absent"], serde_json::json!(["README"]), "{e}");
    assert_eq!(st["targets"][0]["stale"], false, "{st}");
}

#[test]
fn a_container_restarted_with_the_old_value_is_not_restarted_again() {
    let s = Setup::new();
    let d = s.daemon(true, None, None);
    compared(&d);
    s.writer
        .write(&[("TOKEN", "token-2"), ("PASSWORD", "password-1")])
        .unwrap();
    // One restart; the new process still has token-1: reported, retried with backoff, and
    // never restarted again for this version.
    let st = eventually(
        "the old value reported after the restart",
        || d.status(),
        |st| st["targets"][0]["failed_attempts"].as_u64().unwrap_or(0) >= 3,
    );
    let message = st["targets"][0]["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("still holds another value of TOKEN"),
        "{message}"
    );
    assert_eq!(s.starts(), 2, "exactly one restart: {st}");
    assert_eq!(d.metric("environment_stale", &[]), Some(1.0));
    assert_eq!(st["targets"][0]["stale"], true);
    let (ok, report) = doctor(&d, &s);
    assert!(
        !ok && report.contains("holds another value of TOKEN"),
        "{report}"
    );
    assert_eq!(
        environment(&d)["differing"],
        serde_json::json!(["TOKEN"]),
        "{st}"
    );
}

#[test]
fn an_environment_the_sidecar_cannot_read_is_explained_and_nothing_is_sent() {
    let s = Setup::new();
    // The app runs as 4242, the sidecar as 4343 without capabilities.
    let d = s.daemon(false, Some(4242), Some(4343));
    let st = eventually(
        "the unreadable environment reported",
        || d.status(),
        |st| st["targets"][0]["failed_attempts"].as_u64().unwrap_or(0) >= 1,
    );
    let message = st["targets"][0]["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot read the environment")
            && message.contains("runAsUser (4242)")
            && message.contains("CAP_SYS_PTRACE"),
        "{message}"
    );
    assert!(environment(&d)["error"].is_string(), "{st}");
    s.writer
        .write(&[("TOKEN", "token-2"), ("PASSWORD", "password-1")])
        .unwrap();
    eventually(
        "a second failed comparison",
        || {
            d.status()["targets"][0]["failed_attempts"]
                .as_u64()
                .unwrap_or(0)
        },
        |n| *n >= 2,
    );
    assert_eq!(s.starts(), 1, "nothing was sent");
}

/// The pids, as this test sees them, of the processes named `name` (the app runs in the daemon's
/// PID namespace, where its pid is another).
fn host_pids(name: &str) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .collect()
}

#[test]
fn a_report_only_target_waits_for_a_restart_by_someone_else_and_sends_nothing() {
    let s = Setup::new();
    let d = s.daemon_sending("none", false, None, None);
    compared(&d);
    let target = |st: &serde_json::Value| st["targets"][0].clone();
    let st = eventually(
        "the app's environment to count as applied",
        || d.status(),
        |st| target(st)["stale"] == false && target(st)["state"] == "idle",
    );
    assert_eq!(
        st["config"]["groups"][0]["targets"][0]["action"]["signal"],
        "none"
    );

    s.writer
        .write(&[("TOKEN", "token-2"), ("PASSWORD", "password-1")])
        .unwrap();
    let st = eventually(
        "the differing environment reported",
        || d.status(),
        |st| {
            let t = target(st);
            t["stale"] == true
                && t["state"] == "waiting"
                && t["environment"]["differing"] == serde_json::json!(["TOKEN"])
        },
    );
    let t = target(&st);
    let message = t["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("holds another value of TOKEN; --signal none: restart its container")
            && message.contains("or set --signal TERM"),
        "{message}"
    );
    let app = t["environment"]["pid"].as_u64().unwrap();
    let seen = t["environment"]["comparisons"].as_u64().unwrap();
    // Nothing is sent, however often it looks: two comparisons later, the same process, never
    // restarted, no attempt counted as failed.
    let st = eventually(
        "two more comparisons",
        || d.status(),
        |st| target(st)["environment"]["comparisons"].as_u64().unwrap() >= seen + 2,
    );
    let t = target(&st);
    assert_eq!(t["environment"]["pid"].as_u64(), Some(app), "{st}");
    assert_eq!(t["state"], "waiting", "{st}");
    assert_eq!(t["failed_attempts"], 0, "{st}");
    assert_eq!(s.starts(), 1, "nothing was sent: {st}");
    assert_eq!(d.metric("environment_stale", &[]), Some(1.0));
    assert_eq!(d.metric("stale", &[]), Some(1.0));
    assert_eq!(
        d.metric("reloads_total", &[("result", "failure")])
            .unwrap_or(0.0),
        0.0
    );
    assert_eq!(d.metric("target_state", &[("state", "waiting")]), Some(1.0));
    assert_eq!(
        d.log()
            .matches("--signal none: restart its container")
            .count(),
        1,
        "said once, not at every look:\n{}",
        d.log()
    );
    let (ok, report) = doctor_sending(&d, &s, "none");
    assert!(
        !ok && report.contains("holds another value of TOKEN")
            && report.contains("--signal none: nothing is sent"),
        "{report}"
    );

    // A restart by someone else (a rollout, an operator): the new process holds the files.
    let pids = host_pids(&s.name());
    assert_eq!(pids.len(), 1, "{pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let st = eventually(
        "the restarted app's environment to count as applied",
        || d.status(),
        |st| {
            let t = target(st);
            t["stale"] == false
                && t["state"] == "idle"
                && t["environment"]["holding"]
                    .as_array()
                    .is_some_and(|h| h.len() == 2)
        },
    );
    assert_ne!(
        target(&st)["environment"]["pid"].as_u64(),
        Some(app),
        "{st}"
    );
    assert_eq!(s.starts(), 2, "the one restart was the test's: {st}");
    assert_eq!(d.metric("environment_stale", &[]), Some(0.0));
    assert_eq!(
        d.metric("reloads_total", &[("result", "failure")])
            .unwrap_or(0.0),
        0.0
    );
    let everything = format!("{}{}{}", d.metrics(), d.status(), d.log());
    for value in ["token-1", "token-2", "password-1"] {
        assert!(!everything.contains(value), "{value} leaked");
    }
}
