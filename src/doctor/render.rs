//! The doctor's report as text, in the order an operator troubleshoots.

use std::fmt::Write;

use super::report::{GroupReport, Report};

/// Renders the report.
pub(crate) fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "secret-reloader doctor {}  (secret-reloader {})\n",
        r.time, r.version
    );
    let s = &r.sidecar;
    let mut caps = Vec::new();
    if s.cap_kill {
        caps.push("CAP_KILL");
    }
    if s.cap_dac_override {
        caps.push("CAP_DAC_OVERRIDE");
    }
    let caps = if caps.is_empty() {
        "no capabilities that matter here".to_string()
    } else {
        caps.join(", ")
    };
    let _ = writeln!(o, "Sidecar   runs as {}; {caps}", s.identity);
    let signals = match &s.signal_delivery {
        crate::process::handle::Delivery::Pidfd => "through pidfds".to_string(),
        crate::process::handle::Delivery::Kill { why } => format!("with kill(2): {why}"),
    };
    let _ = writeln!(o, "Signals   sent {signals}");
    let daemon = if r.daemon.reachable {
        "running"
    } else {
        "not reachable"
    };
    let _ = writeln!(
        o,
        "Daemon    {daemon} at {}: {}",
        r.daemon.address, r.daemon.detail
    );
    for g in &r.groups {
        group(&mut o, g);
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(o, "\nWarnings:");
        for w in &r.warnings {
            let _ = writeln!(o, "  - {w}");
        }
    }
    if r.problems.is_empty() {
        let _ = writeln!(o, "\nNo problem found.");
    } else {
        let _ = writeln!(o, "\n{} problem(s):", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(o, "  - {p}");
        }
    }
    o
}

fn group(o: &mut String, g: &GroupReport) {
    let _ = writeln!(o, "\nWatch group \"{}\"", g.name);
    match &g.app_identity {
        Some(a) => {
            let _ = writeln!(o, "  App       runs as {}, from {}", a.identity, a.source);
        }
        None => {
            let _ = writeln!(
                o,
                "  App       identity unknown (no process found, no --app-uid/--app-gid)"
            );
        }
    }
    if let Some(d) = &g.identity_drift {
        let _ = writeln!(o, "  Drift     {d}");
    }
    for p in &g.paths {
        let layout = serde_json::to_value(p.layout)
            .ok()
            .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
            .unwrap_or_default();
        let age = match p.content_age_seconds {
            Some(s) => format!(
                "; content changed {} ago",
                humantime::format_duration(std::time::Duration::from_secs(s))
            ),
            None => String::new(),
        };
        let mount = if p.single_file_mount {
            "; SINGLE-FILE MOUNT (subPath): never updated"
        } else {
            ""
        };
        let owner = p
            .owner
            .as_ref()
            .map(|(u, g, m)| format!(" {u}:{g} {m}"))
            .unwrap_or_default();
        let _ = writeln!(o, "  {}{owner}  {layout}{age}{mount}", p.path);
    }
    for f in &g.files {
        let access = match &f.access {
            Some(v) if v.readable => v.reason.clone(),
            Some(v) => format!(
                "NOT READABLE: {}\n      fix: {}",
                v.reason,
                v.hint.as_deref().unwrap_or("")
            ),
            None => "access not checked".to_string(),
        };
        let cert = f
            .cert_expires
            .as_ref()
            .map(|t| format!("; certificate expires {t}"))
            .unwrap_or_default();
        let empty = if f.empty { " EMPTY" } else { "" };
        let _ = writeln!(
            o,
            "    {}  {}:{} {}{empty}  {access}{cert}",
            f.path, f.uid, f.gid, f.mode
        );
        if let Some(t) = &f.token {
            let _ = writeln!(o, "      token {}", token(t));
        }
    }
    let content = match (g.incomplete.is_empty(), g.inconsistent.is_empty()) {
        (true, true) => "complete and consistent".to_string(),
        _ => [g.incomplete.clone(), g.inconsistent.clone()]
            .concat()
            .join("; "),
    };
    let _ = writeln!(o, "  Content   {content}");
    for m in &g.app_frozen_mounts {
        let _ = writeln!(o, "  Mount     {m}");
    }
    for t in &g.targets {
        let _ = writeln!(o, "  Target {} ({})", t.name, t.kind);
        for c in &t.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(o, "    {mark} {:<15} {}", c.what, c.detail);
        }
    }
}

/// A token's claims on one line: each claim present, as `name=value` (lists joined by spaces,
/// quoted when they hold several), times in RFC 3339.
fn token(t: &crate::scan::token::TokenClaims) -> String {
    use crate::scan::token::Claim;
    let mut parts = Vec::new();
    let one = |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("{name}={v}"));
    let list = |name: &str, l: &[String]| match l {
        [] => None,
        [one] => Some(format!("{name}={one}")),
        _ => Some(format!("{name}=\"{}\"", l.join(" "))),
    };
    parts.extend(one("iss", &t.iss));
    parts.extend(list(Claim::Audience.as_str(), &t.aud));
    parts.extend(one("sub", &t.sub));
    parts.extend(list(Claim::Scope.as_str(), &t.scope));
    for (name, at) in [("iat", t.iat), ("nbf", t.nbf), ("exp", t.exp)] {
        parts.extend(at.map(|at| format!("{name}={}", super::report::ts(at))));
    }
    if parts.is_empty() {
        "without any of the claims shown".into()
    } else {
        parts.join(" ")
    }
}
