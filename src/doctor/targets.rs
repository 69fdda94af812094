//! The doctor's checks of each target (process found, signal handled and permitted, freshness
//! against the content, endpoint reachable, command present) and its question to a running daemon.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::report::{Check, DaemonView, TargetReport, ts};
use crate::config::{
    ActionConfig, Config, Endpoint, ExecConfig, GroupConfig, HttpConfig, SignalConfig, TargetConfig,
};
use crate::process::environ::{self, Verdict};
use crate::process::identity::Sidecar;
use crate::process::select::{self, FindError};
use crate::process::{ProcFs, ProcInfo};
use crate::reload::signal::{START_MARGIN, is_restart_signal};
use crate::scan::Scan;
use crate::text;

/// Largest `/status` document read from the daemon.
const STATUS_LIMIT: usize = 16 << 20;

pub(super) async fn target(
    t: &TargetConfig,
    g: &GroupConfig,
    scan: &Scan,
    sidecar: &Sidecar,
    daemon: &DaemonView,
    procfs: &ProcFs,
    key: &crate::scan::fingerprint::FingerprintKey,
) -> (TargetReport, Option<i32>) {
    let (kind, checks, pid) = match &t.action {
        ActionConfig::Signal(s) => {
            let app_uid = g.app.as_ref().map(|a| a.uid);
            let (checks, pid) = signal_checks(&t.name, s, app_uid, scan, sidecar, daemon, procfs);
            ("signal", checks, pid)
        }
        ActionConfig::Http(h) => ("http", http_checks(h, t).await, None),
        ActionConfig::Exec(e) => ("exec", vec![exec_check(e)], None),
    };
    let mut checks = checks;
    if let (Some(pid), true) = (pid, g.consumed_as == crate::config::ConsumedAs::Env) {
        checks.push(environment_check(pid, g, scan, procfs, key));
    }
    if let Some(sc) = &t.served_cert {
        checks.push(served_check(sc, scan, key).await);
    }
    (
        TargetReport {
            name: t.name.clone(),
            kind,
            checks,
        },
        pid,
    )
}

/// What the app serves against the certificates on disk (`--verify-served-cert`).
async fn served_check(
    sc: &crate::config::ServedCert,
    scan: &Scan,
    key: &crate::scan::fingerprint::FingerprintKey,
) -> Check {
    let disk: Vec<String> = scan
        .certs
        .iter()
        .map(|c| format!("serial {} ({})", c.serial, text::path(&c.path)))
        .collect();
    let disk = if disk.is_empty() {
        "no certificate in the watched files".to_string()
    } else {
        disk.join(", ")
    };
    match crate::reload::served::look(sc, &scan.certs, key).await {
        Ok(s) if s.matches => check(
            "served cert",
            true,
            format!(
                "{} serves serial {}, the certificate on disk",
                sc.label(),
                s.serial
            ),
        ),
        Ok(s) => check(
            "served cert",
            false,
            format!(
                "{} serves serial {}; disk: {disk}: the app did not take the new certificate \
                 (reload it, and look at its log for why it kept the old one)",
                sc.label(),
                s.serial
            ),
        ),
        Err(e) => check("served cert", false, e),
    }
}

/// The app's environment against the files (`--consumed-as env`).
fn environment_check(
    pid: i32,
    g: &GroupConfig,
    scan: &Scan,
    procfs: &ProcFs,
    key: &crate::scan::fingerprint::FingerprintKey,
) -> Check {
    let keys = crate::group::env_keys(g, scan).unwrap_or_default();
    let opened = procfs
        .stat(pid)
        .ok()
        .and_then(|info| crate::process::handle::ProcessHandle::open(procfs, &info).ok());
    let Some(mut h) = opened else {
        return check("environment", false, format!("pid {pid} exited"));
    };
    let raw = match h.environ() {
        Ok(raw) => raw,
        Err(e) => {
            let uid = h
                .status()
                .map(|s| s.uid.to_string())
                .unwrap_or_else(|_| "?".into());
            let why = environ::unreadable(&h.info.shown(), pid, &uid, &e);
            return check("environment", false, why);
        }
    };
    let c = environ::compare(&raw, &keys, key);
    let names = |v: &[String]| v.join(", ");
    match c.verdict() {
        Verdict::Differs => check(
            "environment",
            false,
            format!(
                "pid {pid} holds another value of {} than the files: the app runs on an older \
                 version, and only a restart of its container applies the current one",
                names(&c.differing)
            ),
        ),
        Verdict::Absent => check(
            "environment",
            false,
            format!(
                "none of the keys ({}) is in the environment of pid {pid}: is the app given them \
                 with envFrom?",
                names(&c.absent)
            ),
        ),
        Verdict::Holds => check(
            "environment",
            true,
            format!(
                "pid {pid}'s environment holds the content on disk ({})",
                names(&c.holding)
            ),
        ),
    }
}

fn check(what: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        what,
        ok,
        detail: detail.into(),
    }
}

/// Whether the process `pid` runs the same program as this one (`None`: it cannot be told).
fn same_program(pid: i32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self/exe").ok()?;
    match std::fs::metadata(format!("/proc/{pid}/exe")) {
        Ok(it) => Some((it.dev(), it.ino()) == (me.dev(), me.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

fn signal_checks(
    name: &str,
    s: &SignalConfig,
    app_uid: Option<u32>,
    scan: &Scan,
    sidecar: &Sidecar,
    daemon: &DaemonView,
    procfs: &ProcFs,
) -> (Vec<Check>, Option<i32>) {
    let found = select::find_excluding(procfs, &s.selector, s.all, app_uid, daemon.pid);
    let procs: Vec<ProcInfo> = match found {
        Ok(p) => p,
        Err(FindError::NotFound) => {
            let sel = s.selector.describe();
            return (
                vec![check(
                    "process",
                    false,
                    format!(
                        "no process matches {sel}: is the app running, and does the pod set shareProcessNamespace: true?"
                    ),
                )],
                None,
            );
        }
        Err(e) => return (vec![check("process", false, e.to_string())], None),
    };
    let mut checks = Vec::new();
    let sig = s.signal;
    for p in &procs {
        let st = procfs.status(p.pid).unwrap_or_default();
        let started = p.start_time();
        checks.push(check(
            "process",
            true,
            format!(
                "{} runs as {}:{}, started {}",
                p.shown(),
                st.uid,
                st.gid,
                ts(started)
            ),
        ));
        let n = sig as i32;
        let handled = if is_restart_signal(sig) {
            check(
                "signal",
                true,
                format!(
                    "{} is sent to end the process (Kubernetes restarts the container)",
                    sig.as_str()
                ),
            )
        } else if st.ignores(n) {
            check(
                "signal",
                false,
                format!(
                    "pid {} ignores {}: it will never reload on it; check --signal",
                    p.pid,
                    sig.as_str()
                ),
            )
        } else if !st.catches(n) {
            check(
                "signal",
                false,
                format!(
                    "pid {} has no {} handler: the signal would end it (the daemon waits instead); check that the app reloads on {}",
                    p.pid,
                    sig.as_str(),
                    sig.as_str()
                ),
            )
        } else {
            check("signal", true, format!("{} is handled", sig.as_str()))
        };
        checks.push(handled);
        let why = if sidecar.identity.uid == 0 {
            "the sidecar runs as root"
        } else if sidecar.identity.uid == st.uid {
            "same uid"
        } else {
            "CAP_KILL"
        };
        checks.push(if sidecar.may_signal(st.uid) {
            check("permission", true, format!("may signal it ({why})"))
        } else {
            check("permission", false, format!(
                "the sidecar (uid {}) may not signal uid {}: run it as the app's runAsUser ({}) or add the KILL capability",
                sidecar.identity.uid, st.uid, st.uid
            ))
        });
        checks.push(freshness(name, started, scan.content_time, daemon));
    }
    (checks, procs.first().map(|p| p.pid))
}

fn freshness(
    name: &str,
    started: SystemTime,
    content: Option<SystemTime>,
    daemon: &DaemonView,
) -> Check {
    let Some(content) = content else {
        return check("freshness", true, "no content yet");
    };
    if started > content + START_MARGIN {
        return check(
            "freshness",
            true,
            format!(
                "started after the current content appeared ({}): it holds it",
                ts(content)
            ),
        );
    }
    if started + START_MARGIN > content {
        return check(
            "freshness",
            true,
            format!(
                "started within {} ms of the current content ({}): cannot tell from the start time which one it holds",
                START_MARGIN.as_millis(),
                ts(content)
            ),
        );
    }
    match daemon.stale.get(name) {
        Some(false) => check(
            "freshness",
            true,
            format!(
                "started before the current content appeared ({}); the running daemon reports it reloaded it",
                ts(content)
            ),
        ),
        Some(true) => check(
            "freshness",
            false,
            format!(
                "started before the current content appeared ({}) and the running daemon reports it stale: see /status",
                ts(content)
            ),
        ),
        None => check(
            "freshness",
            false,
            format!(
                "started before the current content appeared ({}) and no running daemon reports a reload since: likely stale",
                ts(content)
            ),
        ),
    }
}

async fn http_checks(h: &HttpConfig, t: &TargetConfig) -> Vec<Check> {
    let mut checks = vec![reachable("endpoint", &h.endpoint).await];
    let files = h
        .bearer_token_file
        .iter()
        .map(|p| ("bearer token", p))
        .chain(h.header_files.iter().map(|(_, p)| ("header file", p)));
    for (what, path) in files {
        checks.push(match crate::files::read_limited(path, 64 * 1024) {
            Ok(_) => check(what, true, format!("{} is readable", text::path(path))),
            Err(e) => check(
                what,
                false,
                format!("cannot read {}: {e}", text::path(path)),
            ),
        });
    }
    if let Some(v) = &t.verify {
        checks.push(reachable("verify endpoint", &v.endpoint).await);
    }
    checks
}

/// A TCP connection to the endpoint: whether something listens, without calling it.
async fn reachable(what: &'static str, e: &Endpoint) -> Check {
    let addr = format!("{}:{}", e.host, e.port);
    let connect = tokio::net::TcpStream::connect((e.host.as_str(), e.port));
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => check(what, true, format!("{addr} accepts connections")),
        Ok(Err(err)) => check(what, false, format!("cannot connect to {addr}: {err}")),
        Err(_) => check(what, false, format!("no answer from {addr} within 2s")),
    }
}

fn exec_check(e: &ExecConfig) -> Check {
    let prog = &e.argv[0];
    let found = if prog.contains('/') {
        Path::new(prog).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
    };
    let prog = text::value(prog);
    if found {
        check("command", true, format!("{prog} is there"))
    } else {
        check(
            "command",
            false,
            format!("{prog} is not found (absolute path or $PATH)"),
        )
    }
}

/// Asks a daemon on the listen address for its status.
pub(super) async fn ask_daemon(config: &Config) -> DaemonView {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{addr}/status");
    let mut view = DaemonView {
        address: addr.to_string(),
        reachable: false,
        detail: String::new(),
        stale: HashMap::new(),
        pid: None,
    };
    let endpoint = match crate::config::parse::endpoint(&url) {
        Ok(e) => e,
        Err(e) => {
            view.detail = e;
            return view;
        }
    };
    match crate::reload::http::request_limited(
        &endpoint,
        hyper::Method::GET,
        &[],
        Duration::from_secs(5),
        STATUS_LIMIT,
    )
    .await
    {
        Ok((200, body)) => match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(status) => {
                // Whatever answers on the port is not the daemon by saying so: its `/status`
                // names its pid, which must run this very program.
                let pid = status["sidecar"]["pid"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok());
                match pid.map(same_program) {
                    Some(Some(false)) | None => {
                        view.detail = format!(
                            "something else answers there: its /status names {}, which does not \
                             run secret-reloader; its answers are not used",
                            pid.map_or("no pid".to_string(), |p| format!("pid {p}"))
                        );
                        return view;
                    }
                    Some(Some(true)) => view.pid = pid,
                    // Another uid's program cannot be looked at: taken as it says.
                    Some(None) => {}
                }
                view.reachable = true;
                for t in status["targets"].as_array().into_iter().flatten() {
                    if let (Some(n), Some(s)) = (t["name"].as_str(), t["stale"].as_bool()) {
                        view.stale.insert(n.to_string(), s);
                    }
                }
                let stale = view.stale.values().filter(|s| **s).count();
                view.detail = format!(
                    "version {}, ready: {}, {} target(s), {stale} stale",
                    crate::text::value(status["version"].as_str().unwrap_or("?")),
                    status["ready"],
                    view.stale.len()
                );
            }
            Err(e) => view.detail = format!("answered something that is not its status: {e}"),
        },
        Ok((code, _)) => view.detail = format!("answered {code}"),
        Err(e) => view.detail = format!("no daemon answering ({e})"),
    }
    view
}
