//! A real Prometheus server (Debian's `prometheus` package) on 127.0.0.1 with its own storage
//! directory and an ephemeral port, killed on drop, and queries through its HTTP API.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{eventually_within, http_get};

/// Prometheus starts in a few seconds; a loaded machine gets far more.
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// The Prometheus binary, or a failure that says how to get it.
pub fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("the prometheus binary is not installed: apt-get install prometheus (Debian)")
    })
}

/// A Prometheus server; killed on drop, its log printed when the test fails.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Prometheus {
    /// Starts Prometheus on 127.0.0.1 (ephemeral port) scraping `target` every second.
    pub fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: secret-reloader\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        Prometheus::start_with(&config, &dir.join("data"), &[])
    }

    /// Starts Prometheus on 127.0.0.1 (ephemeral port) with the configuration file `config`,
    /// its storage in `data`, and `extra` flags (such as `--web.enable-lifecycle`).
    pub fn start_with(config: &Path, data: &Path, extra: &[&str]) -> Prometheus {
        let mut child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prometheus");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        // Port 0: the kernel picks a free port, read back from the process's listening socket.
        let pid = child.id();
        let mut p = Prometheus {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            log,
        };
        // Its log is printed by the drop when this fails.
        let (port, exited) = eventually_within(
            "Prometheus to listen",
            START_DEADLINE,
            || (listening_port(pid), p.child.try_wait().ok().flatten()),
            |(port, exited)| port.is_some() || exited.is_some(),
        );
        match (port, exited) {
            (Some(port), _) => p.addr.set_port(port),
            (None, status) => panic!("prometheus exited: {status:?}"),
        }
        p.wait_until("Prometheus to be ready", START_DEADLINE, || {
            http_get(p.addr, "/-/ready").map(|r| r.0).unwrap_or(0) == 200
        });
        p
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits at most `limit` until `cond` holds (its log is printed by the drop when it does not).
    pub fn wait_until(&self, what: &str, limit: Duration, cond: impl FnMut() -> bool) {
        eventually_within(what, limit, cond, |held| *held);
    }

    /// An instant query through the HTTP API: the value of each series, by its labels.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (code, body) = http_get(self.addr, &path).expect("GET /api/v1/query");
        assert_eq!(code, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("query answer is JSON");
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The single value `promql` evaluates to now, if any.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        assert!(r.len() <= 1, "{promql}: more than one series: {r:?}");
        r.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
    }
}

/// The port `pid` listens on over IPv4 TCP (state 0A in /proc/net/tcp), found through the inodes
/// of its socket descriptors.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            let port = f[1].rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        } else {
            None
        }
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus configuration; `rev` shows up in what Prometheus says it loaded.
pub fn prometheus_yml(rev: &str) -> String {
    format!("global:\n  scrape_interval: 15s\n  external_labels:\n    rev: \"{rev}\"\n")
}

/// A Prometheus to run beside the daemon (`daemon_beside`), reloaded by SIGHUP: its
/// configuration in a kubelet-style volume `<dir>/config` (revision 1, older than the Prometheus
/// started after it, as in a pod: nothing to reload at start), its address on 127.0.0.1, the shell
/// command that starts it, and its log.
pub struct Sighupped {
    pub vol: PathBuf,
    pub writer: super::AtomicWriter,
    pub addr: SocketAddr,
    pub command: String,
    pub log: PathBuf,
}

impl Sighupped {
    /// Its files in `dir`.
    pub fn new(dir: &Path) -> Sighupped {
        let vol = dir.join("config");
        let writer = super::AtomicWriter::new(&vol);
        writer
            .write(&[("prometheus.yml", prometheus_yml("1"))])
            .unwrap();
        // A SIGHUP before Go's signal.Notify would end it: Go catches every signal from the start.
        super::let_content_age();
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let log = dir.join("prometheus.log");
        let command = format!(
            "{} --config.file={} --storage.tsdb.path={} --web.listen-address={addr} >/dev/null 2>{}",
            prometheus_binary().display(),
            vol.join("prometheus.yml").display(),
            dir.join("data").display(),
            log.display(),
        );
        Sighupped {
            vol,
            writer,
            addr,
            command,
            log,
        }
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
