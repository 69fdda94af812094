//! Collects the doctor's report from the live system: the same scan, identity and access checks
//! as the daemon, plus what only a one-shot look can say (mount tables, reachability, process
//! age against content age, what a running daemon applied).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::report::{DaemonView, FileReport, GroupReport, PathReport, Report, TargetReport, ts};
use crate::assess::{Assessment, Policy, assess};
use crate::config::{Config, GroupConfig};
use crate::process::ProcFs;
use crate::process::identity::{IdentityResolver, Sidecar};
use crate::scan::{self, KUBELET_DATA, Layout, Scan};
use crate::text;
use crate::watch::mounts::{Mount, parse_mountinfo, single_file_mount};

/// Certificates closer than this to their expiry are pointed out.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Builds the report; `standalone`: no daemon is asked (and none is expected).
pub(crate) async fn gather(config: &Config, standalone: bool) -> Report {
    let procfs = ProcFs::new(&config.proc_root);
    let sidecar = Sidecar::current(&procfs);
    let daemon = if standalone {
        DaemonView {
            address: config.listen.to_string(),
            reachable: false,
            detail: "not asked (--standalone)".into(),
            stale: HashMap::new(),
            claims_changed: HashMap::new(),
            workers_reference: HashMap::new(),
            pid: None,
        }
    } else {
        super::targets::ask_daemon(config).await
    };
    let own_mounts = crate::files::read_proc(&config.proc_root.join("self/mountinfo"), 4 << 20)
        .map(|raw| parse_mountinfo(&String::from_utf8_lossy(&raw)))
        .unwrap_or_default();
    let mut report = Report {
        time: ts(SystemTime::now()),
        version: env!("CARGO_PKG_VERSION"),
        sidecar,
        daemon,
        groups: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    if !standalone && !report.daemon.reachable {
        report.problems.push(format!(
            "no daemon answers at {}: {} (is the sidecar running, with the same --listen? --standalone \
             checks without one)",
            report.daemon.address, report.daemon.detail
        ));
    }
    let signalled = config
        .groups
        .iter()
        .flat_map(|g| &g.targets)
        .any(|t| t.action.selector().is_some());
    if let crate::process::handle::Delivery::Kill { why } = &report.sidecar.signal_delivery
        && signalled
    {
        report.warnings.push(format!("no pidfds: {why}"));
    }
    for g in &config.groups {
        let group = group(config, g, &procfs, &own_mounts, &mut report).await;
        report.groups.push(group);
    }
    report
}

async fn group(
    config: &Config,
    g: &GroupConfig,
    procfs: &ProcFs,
    own_mounts: &[Mount],
    r: &mut Report,
) -> GroupReport {
    let scan = scan::scan(
        &g.paths,
        scan::Options {
            key: &config.fingerprint_key,
            max_files: g.max_files,
            follow_external_symlinks: g.follow_external_symlinks,
            was_dir: &Default::default(),
            served_certs: g.targets.iter().any(|t| t.served_cert.is_some()),
        },
    );
    let selector = g.targets.iter().find_map(|t| t.action.selector().cloned());
    let mut resolver = IdentityResolver::new(g.app.clone(), selector, procfs.clone());
    let a = assess(
        &scan,
        &mut resolver,
        Policy {
            access: g.access_policy,
            consistency: g.consistency_check,
        },
    );
    let name = &g.name;
    let problems = &mut r.problems;
    if a.identity.app.is_none() {
        r.warnings.push(format!(
            "watch group '{name}': the app's identity is unknown (no process found, no --app-uid/--app-gid): access not checked"
        ));
    }
    if let Some(d) = &a.identity.drift {
        problems.push(format!("watch group '{name}': identity drift: {d}"));
    }
    let paths = path_reports(&scan, own_mounts, problems);
    problems.extend(
        scan.problems
            .iter()
            .map(|p| format!("watch group '{name}': {}", p.message)),
    );
    problems.extend(
        scan.inconsistent
            .iter()
            .map(|p| format!("watch group '{name}': {p}")),
    );
    let files = file_reports(&scan, &a, r);
    let (targets, app_frozen_mounts) = target_reports(config, g, &scan, procfs, r).await;
    GroupReport {
        name: name.clone(),
        app_identity: a.identity.app.clone(),
        identity_drift: a.identity.drift.clone(),
        paths,
        files,
        incomplete: scan.problems.iter().map(|p| p.message.clone()).collect(),
        inconsistent: scan.inconsistent.clone(),
        app_frozen_mounts,
        targets,
    }
}

/// Each watched path: its layout, owner and mode, when its content changed, and whether it is a
/// single-file mount of this container (a problem: kubelet never updates it).
fn path_reports(scan: &Scan, own_mounts: &[Mount], problems: &mut Vec<String>) -> Vec<PathReport> {
    scan.layouts
        .iter()
        .map(|(p, layout)| {
            let frozen = single_file_mount(own_mounts, p).is_some();
            if frozen {
                problems.push(format!(
                    "{} is a single-file mount (subPath): kubelet never updates it; mount the volume as a \
                     directory and point the app at the file inside it",
                    text::path(p)
                ));
            }
            let changed = content_time(p, *layout, scan);
            let owner = std::fs::metadata(p)
                .ok()
                .map(|md| (md.uid(), md.gid(), format!("{:04o}", md.mode() & 0o7777)));
            PathReport {
                path: text::path(p),
                layout: *layout,
                owner,
                single_file_mount: frozen,
                content_changed: changed.map(ts),
                content_age_seconds: changed
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .map(|d| d.as_secs()),
            }
        })
        .collect()
}

/// Each file of the version: owner, mode, whether the app can read it (a problem when not),
/// its certificate's expiry (a problem when past, a warning when near), the claims of the JWT
/// it holds (a problem when expired or not valid yet). By path, once: a group may hold thousands
/// of files.
fn file_reports(scan: &Scan, a: &Assessment, r: &mut Report) -> Vec<FileReport> {
    let verdicts = scan::index_by_path(&a.verdicts);
    let expiries = scan::index_by_path(&scan.cert_expiry);
    let tokens = scan::index_by_path(&scan.tokens);
    let now = SystemTime::now();
    scan.files
        .iter()
        .map(|f| {
            let access = verdicts.get(f.path.as_path()).map(|v| (*v).clone());
            if let Some(v) = access.as_ref().filter(|v| !v.readable) {
                r.problems.push(format!(
                    "{}: the app cannot read it: {}; {}",
                    text::path(&f.path),
                    v.reason,
                    v.hint.as_deref().unwrap_or("")
                ));
            }
            let expiry = expiries.get(f.path.as_path()).map(|t| **t);
            match expiry {
                Some(t) if t <= now => r.problems.push(format!(
                    "{}: the certificate expired at {}",
                    text::path(&f.path),
                    ts(t)
                )),
                Some(t) if t <= now + EXPIRY_WARNING => r.warnings.push(format!(
                    "{}: the certificate expires at {}",
                    text::path(&f.path),
                    ts(t)
                )),
                _ => {}
            }
            let token = tokens.get(f.path.as_path()).map(|c| (*c).clone());
            if let Some(p) = token
                .as_ref()
                .and_then(|c| c.problem(&text::path(&f.path), now))
            {
                r.problems.push(p.message);
            }
            FileReport {
                path: text::path(&f.path),
                uid: f.uid,
                gid: f.gid,
                mode: format!("{:04o}", f.mode),
                empty: f.empty,
                access,
                cert_expires: expiry.map(ts),
                token,
            }
        })
        .collect()
}

/// Each target's checks (a failed one is a problem), and the single-file mounts of the app's
/// process found for a target (problems too, each said once).
async fn target_reports(
    config: &Config,
    g: &GroupConfig,
    scan: &Scan,
    procfs: &ProcFs,
    r: &mut Report,
) -> (Vec<TargetReport>, Vec<String>) {
    let mut targets = Vec::new();
    let mut app_frozen_mounts = Vec::new();
    for t in &g.targets {
        let (report, pid) = super::targets::target(
            t,
            g,
            scan,
            &r.sidecar,
            &r.daemon,
            procfs,
            &config.fingerprint_key,
        )
        .await;
        for c in report.checks.iter().filter(|c| !c.ok) {
            r.problems
                .push(format!("target {}: {}: {}", t.name, c.what, c.detail));
        }
        if let Some(pid) = pid {
            for m in app_mounts(procfs, pid) {
                let msg = format!(
                    "the app (pid {pid}) mounts {} from a kubelet version directory ({}): a subPath mount, which \
                     kubelet never updates; mount the volume as a directory instead",
                    text::path(&m.mount_point),
                    text::value(&m.root)
                );
                if !app_frozen_mounts.contains(&msg) {
                    r.problems.push(msg.clone());
                    app_frozen_mounts.push(msg);
                }
            }
        }
        targets.push(report);
    }
    (targets, app_frozen_mounts)
}

/// When the content of one watched path last changed.
fn content_time(p: &Path, layout: Layout, scan: &Scan) -> Option<SystemTime> {
    let ctime = |path: &Path| {
        std::fs::symlink_metadata(path).ok().map(|md| {
            SystemTime::UNIX_EPOCH
                + Duration::new(
                    md.ctime().max(0) as u64,
                    md.ctime_nsec().clamp(0, 999_999_999) as u32,
                )
        })
    };
    match layout {
        Layout::KubeletVolume => ctime(&p.join(KUBELET_DATA)),
        Layout::KubeletFile => p.parent().and_then(|d| ctime(&d.join(KUBELET_DATA))),
        Layout::File => std::fs::metadata(p).ok().and_then(|md| md.modified().ok()),
        Layout::Directory => scan
            .files
            .iter()
            .filter(|f| f.path.starts_with(p))
            .filter_map(|f| {
                std::fs::metadata(&f.real_path)
                    .ok()
                    .and_then(|md| md.modified().ok())
            })
            .max(),
        Layout::Missing => None,
    }
}

/// Mounts of the app's own mount table that come from a kubelet version directory.
fn app_mounts(procfs: &ProcFs, pid: i32) -> Vec<Mount> {
    let raw =
        crate::files::read_proc(&procfs.pid_path(pid, "mountinfo"), 4 << 20).unwrap_or_default();
    parse_mountinfo(&String::from_utf8_lossy(&raw))
        .into_iter()
        .filter(Mount::from_kubelet_version)
        .collect()
}
