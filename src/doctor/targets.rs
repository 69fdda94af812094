//! The doctor's checks of each target (process found, signal handled and permitted, freshness
//! against the content, endpoint reachable, command present) and its question to a running daemon.

use std::collections::HashMap;
use std::time::Duration;

use super::report::{Check, CheckName, DaemonView, TargetReport};
use crate::action::{ActionConfig, exec, http, restart, signal};
use crate::config::{Config, GroupConfig, TargetConfig};
use crate::process::ProcFs;
use crate::process::identity::Sidecar;
use crate::report::status::{ClaimSaid, StatusHead};
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
    let (checks, pid) = match &t.action {
        ActionConfig::Signal(s) => {
            let app_uid = g.app.as_ref().map(|a| a.uid);
            signal::doctor::checks(&t.name, s, app_uid, scan, sidecar, daemon, procfs)
        }
        ActionConfig::Http(h) => (http::doctor::checks(h).await, None),
        ActionConfig::Exec(e) => (vec![exec::doctor::check(e)], None),
    };
    let mut checks = checks;
    if let (Some(pid), true) = (pid, g.consumed_as == crate::config::ConsumedAs::Env) {
        checks.push(restart::doctor::check(pid, g, scan, procfs, key));
    }
    if let Some(v) = &t.verify {
        // One probe, a GET: what the app says now (with --verify-json, what it reports of its
        // last reload against the content's change).
        checks.push(
            match crate::reload::verify::probe(v, scan.content_time).await {
                Ok(seen) => Check::new(CheckName::VerifyEndpoint, true, seen),
                Err(e) => Check::new(CheckName::VerifyEndpoint, false, e),
            },
        );
    }
    if let Some(sc) = &t.served_cert {
        checks.push(served_check(sc, scan, key, procfs).await);
    }
    checks.extend(claims_check(daemon.claims_changed.get(&t.name)));
    (
        TargetReport {
            name: t.name.clone(),
            kind: t.kind(),
            checks,
        },
        pid,
    )
}

/// What the app serves against the certificates on disk (`--verify-served-cert`), worker by
/// worker when they can be told apart: the looks the daemon makes after a reload.
async fn served_check(
    sc: &crate::config::ServedCert,
    scan: &Scan,
    key: &crate::scan::fingerprint::FingerprintKey,
    procfs: &ProcFs,
) -> Check {
    // An app that does not answer is said at once, not after the looks' time.
    if let Err(e) = crate::reload::served::look(sc, &scan.certs, key).await {
        return Check::new(CheckName::ServedCert, false, e);
    }
    let confirmed = crate::reload::served::confirm(sc, &scan.certs, key, procfs, |_, _| {}).await;
    match confirmed {
        Ok(msg) => Check::new(CheckName::ServedCert, true, msg),
        Err(msg) => Check::new(
            CheckName::ServedCert,
            false,
            format!(
                "{}: the app did not take the new certificate everywhere (reload it, and look \
                 at its log for why it kept the old one)",
                msg.strip_prefix("reloaded, but ").unwrap_or(&msg)
            ),
        ),
    }
}

/// The token claims the running daemon says the target holds otherwise than the disk: why the
/// app may now get 401 or 403.
fn claims_check(said: Option<&Vec<ClaimSaid>>) -> Option<Check> {
    let said = said.filter(|s| !s.is_empty())?;
    let noun = |c: &str| match c {
        "aud" => "audience",
        "iss" => "issuer",
        "sub" => "subject",
        _ => "scope",
    };
    let lines: Vec<String> = said
        .iter()
        .map(|c| {
            format!(
                "{} changed from {} to {}; the app holds the version with {} ({})",
                noun(&c.claim),
                text::value(&c.held),
                text::value(&c.on_disk),
                text::value(&c.held),
                text::value(&c.path)
            )
        })
        .collect();
    Some(Check::new(
        CheckName::TokenClaims,
        false,
        format!(
            "{} (the running daemon's word): until it reloads, the app presents a token that \
             the other side may refuse (401/403)",
            lines.join("; ")
        ),
    ))
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
        claims_changed: HashMap::new(),
        workers_reference: HashMap::new(),
        pid: None,
    };
    let endpoint = match crate::config::parse::endpoint(&url) {
        Ok(e) => e,
        Err(e) => {
            view.detail = e;
            return view;
        }
    };
    match crate::client::request_limited(
        &endpoint,
        hyper::Method::GET,
        &[],
        Duration::from_secs(5),
        STATUS_LIMIT,
    )
    .await
    {
        Ok((200, body)) => match serde_json::from_slice::<StatusHead>(&body) {
            Ok(status) => {
                // Whatever answers on the port is not the daemon by saying so: its `/status`
                // names its pid, which must run this very program.
                let pid = status.sidecar.pid.and_then(|p| i32::try_from(p).ok());
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
                for t in status.targets {
                    view.stale.insert(t.head.name.clone(), t.head.stale);
                    if let Some(at) = t
                        .workers
                        .and_then(|w| humantime::parse_rfc3339_weak(&w.reference).ok())
                    {
                        view.workers_reference.insert(t.head.name.clone(), at);
                    }
                    view.claims_changed
                        .insert(t.head.name, t.token_claims_changed);
                }
                let stale = view.stale.values().filter(|s| **s).count();
                view.detail = format!(
                    "version {}, ready: {}, {} target(s), {stale} stale",
                    text::value(&status.version),
                    status.ready,
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
