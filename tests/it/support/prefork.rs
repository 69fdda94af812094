//! The pre-forking app of `tests/it/fixtures/prefork.py` (a master and its workers, replaced one by
//! one on SIGHUP), started under a path of the test's own and killed with its workers on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{eventually, native, unique};

/// The script, written into each test's directory under a name of its own.
const SCRIPT: &str = include_str!("../fixtures/prefork.py");

/// Requires Debian's Python 3 (`scripts/test` installs it). Its absence is a failure, not a skip.
fn python3() -> &'static str {
    let path = "/usr/bin/python3";
    assert!(
        Path::new(path).exists(),
        "Python 3 is not installed: apt-get install python3 (see scripts/test)"
    );
    path
}

/// The app, running; its process group is killed on drop.
pub struct Prefork {
    child: Child,
    /// Its log (see the script): one line per event.
    pub log: PathBuf,
    /// A `--process-cmdline` regex that matches this app's master and workers and nothing else.
    pub cmdline: String,
}

impl Prefork {
    /// Starts `prefork_<unique>.py --credential <credential> --workers <workers> --pause <pause>`
    /// in `dir` and waits until the master is up (its handlers installed, its workers forked).
    pub fn start(dir: &Path, credential: &Path, workers: u32, pause: f64) -> Prefork {
        use std::os::unix::process::CommandExt;
        let name = format!("prefork_{}", unique());
        let script = dir.join(format!("{name}.py"));
        std::fs::write(&script, SCRIPT).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(python3())
            .arg(&script)
            .arg("--credential")
            .arg(credential)
            .arg("--log")
            .arg(&log)
            .args(["--workers", &workers.to_string()])
            .args(["--pause", &pause.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the pre-forking app");
        let app = Prefork {
            child,
            log,
            cmdline: format!("{name}\\.py"),
        };
        let up = format!("up master={} ", app.pid());
        eventually(
            "the pre-forking app and its workers to be up",
            || app.lines(),
            |l| {
                l.iter().any(|l| l.starts_with(&up))
                    && l.iter().filter(|l| l.starts_with("worker ")).count() == workers as usize
            },
        );
        app
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The log so far, line by line.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// SIGHUPs the master took (`hup received` lines).
    pub fn hups(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("hup received"))
            .count()
    }

    /// The pids of the workers forked with `version`, in the order they started.
    pub fn workers_of(&self, version: &str) -> Vec<i32> {
        let tail = format!(" version={version}");
        self.lines()
            .iter()
            .filter_map(|l| {
                l.strip_prefix("worker pid=")?
                    .strip_suffix(&tail)?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Waits until the master logged `reload done version=<version>`.
    pub fn wait_reloaded(&self, version: &str) {
        let done = format!("reload done version={version}");
        eventually(
            &format!("the app to replace its workers for version {version}"),
            || self.lines(),
            |l| l.contains(&done),
        );
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }
}

impl Drop for Prefork {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL);
        native::exited_within(&mut self.child, std::time::Duration::from_secs(5));
    }
}
