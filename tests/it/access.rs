//! Identity and access: apps running as other uids (through setpriv), files chowned and
//! chmodded, a parent directory without search permission, fsGroup-style group ownership with
//! setgid directories, drift between the declared and the real identity, `--access-policy block`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;

use crate::support::sink::Sink;
use crate::support::{App, Daemon, credential, eventually, now_ns, open_dir, tempdir};

fn write(path: &Path, text: &str, owner: (u32, u32), mode: u32) {
    fs::write(path, text).unwrap();
    chown(path, Some(owner.0), Some(owner.1)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn file_status(d: &Daemon, path: &Path) -> serde_json::Value {
    let status = d.status();
    let files = status["watches"][0]["files"].as_array().unwrap().clone();
    files
        .into_iter()
        .find(|f| f["path"] == path.display().to_string())
        .unwrap_or_default()
}

fn access_ok(d: &Daemon, path: &Path) -> Option<f64> {
    d.metric(
        "file_access_ok",
        &[("watch", "default"), ("path", &path.display().to_string())],
    )
}

/// A daemon with an HTTP target and the app's identity declared by `flags` (no process to read it
/// from), and its first access verdict for `file`.
fn declared(vol: &Path, file: &Path, flags: &[&str]) -> (Daemon, serde_json::Value) {
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let mut args = vec!["--watch", vol.to_str().unwrap(), "--reload-url", &url];
    args.extend(flags);
    let d = Daemon::start(&args);
    d.wait_ready();
    let f = eventually(
        "a verdict",
        || file_status(&d, file),
        |f| !f["access"].is_null(),
    );
    (d, f)
}

/// The app running as `user` on `file`, a daemon watching `vol` that signals it (with `extra`
/// flags), and the daemon's first access verdict for `file`.
fn app_and_daemon(
    dir: &Path,
    vol: &Path,
    file: &Path,
    user: (u32, u32, &[u32]),
    extra: &[&str],
) -> (App, Daemon, serde_json::Value) {
    let app = App::start_as(dir, file, &[], Some(user));
    app.wait_up();
    let mut args = vec![
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
    ];
    args.extend(extra);
    let d = Daemon::start(&args);
    d.wait_ready();
    let f = eventually(
        "a verdict",
        || file_status(&d, file),
        |f| !f["access"].is_null(),
    );
    (app, d, f)
}

#[test]
fn file_of_another_owner_is_reported_with_a_fix_then_seen_fixed() {
    let dir = open_dir();
    let vol = dir.path().join("secrets");
    fs::create_dir(&vol).unwrap();
    let key = vol.join("tls.key");
    write(&key, &credential("1"), (0, 0), 0o600);
    // Resyncs: a scan after `t` is certain even if the test thread stalls past the quiet period.
    // They find the same content and verdict (more scans logged once is what is tested).
    let (app, d, f) = app_and_daemon(
        dir.path(),
        &vol,
        &key,
        (1001, 1001, &[]),
        &["--resync-interval", "1s"],
    );
    assert_eq!(f["access"]["readable"], false, "{f}");
    assert_eq!(
        f["access"]["reason"],
        "tls.key is 0:0 mode 0600; the app runs as 1001:1001"
    );
    let hint = f["access"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("fsGroup: 1001") && hint.contains("defaultMode 0440"),
        "{hint}"
    );
    assert_eq!(access_ok(&d, &key), Some(0.0));
    let status = d.status();
    assert_eq!(status["watches"][0]["app_identity"]["uid"], 1001);
    assert_eq!(
        status["watches"][0]["app_identity"]["source"],
        format!("pid {} ({})", app.pid(), app.name)
    );

    // More scans with the same verdict: logged once.
    fs::write(vol.join("other"), "x").unwrap();
    fs::remove_file(vol.join("other")).unwrap();
    let t = now_ns();
    d.passed(t);
    chown(&key, Some(1001), None).unwrap();
    eventually(
        "the fix to be seen",
        || access_ok(&d, &key),
        |v| *v == Some(1.0),
    );
    assert_eq!(
        file_status(&d, &key)["access"]["reason"],
        "readable as owner"
    );
    let log = d.log();
    assert_eq!(log.matches("the app cannot read it").count(), 1, "{log}");
    assert!(log.contains("readable by the app again"), "{log}");
}

#[test]
fn parent_directory_without_search_permission() {
    let dir = open_dir();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let vol = locked.join("secrets");
    fs::create_dir(&vol).unwrap();
    let token = vol.join("token");
    write(&token, &credential("1"), (0, 0), 0o644);
    let (_app, _d, f) = app_and_daemon(dir.path(), &vol, &token, (1001, 1001, &[]), &[]);
    assert_eq!(f["access"]["readable"], false);
    let reason = f["access"]["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        format!(
            "directory {} is 0:0 mode 0700; the app runs as 1001:1001 and cannot enter it",
            locked.display()
        )
    );
    assert!(
        f["access"]["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("chmod o+x {}", locked.display()))
    );
}

#[test]
fn fs_group_style_ownership_reads_through_supplementary_groups() {
    let dir = open_dir();
    let vol = dir.path().join("secrets");
    fs::create_dir(&vol).unwrap();
    // What kubelet does with fsGroup: 2000: the group owns the volume, setgid directory.
    chown(&vol, Some(0), Some(2000)).unwrap();
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o2750)).unwrap();
    let token = vol.join("token");
    write(&token, &credential("1"), (0, 2000), 0o440);
    let member = App::start_as(dir.path(), &token, &[], Some((1001, 1001, &[2000])));
    assert_eq!(
        member.wait_up().version,
        "1",
        "a member of the fsGroup reads it"
    );
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &member.name,
    ]);
    d.wait_ready();
    let f = eventually(
        "a verdict",
        || file_status(&d, &token),
        |f| !f["access"].is_null(),
    );
    assert_eq!(f["access"]["reason"], "readable as group", "{f}");
    assert_eq!(access_ok(&d, &token), Some(1.0));

    // The same volume for an app outside the group, declared with flags (no process target).
    let (d, f) = declared(&vol, &token, &["--app-uid", "1002", "--app-gid", "1002"]);
    assert_eq!(f["access"]["readable"], false);
    let reason = f["access"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("directory {} is 0:2000 mode 2750", vol.display())),
        "{reason}"
    );
    assert_eq!(
        d.status()["watches"][0]["app_identity"]["source"],
        "--app-uid/--app-gid"
    );
    let (_d, f) = declared(
        &vol,
        &token,
        &[
            "--app-uid",
            "1002",
            "--app-gid",
            "1002",
            "--app-groups",
            "2000",
        ],
    );
    assert_eq!(f["access"]["reason"], "readable as group", "{f}");
}

#[test]
fn declared_identity_that_differs_from_the_process_is_drift() {
    let dir = open_dir();
    let vol = dir.path().join("secrets");
    fs::create_dir(&vol).unwrap();
    write(&vol.join("token"), &credential("1"), (0, 0), 0o644);
    let app = App::start_as(dir.path(), &vol.join("token"), &[], Some((1001, 1001, &[])));
    app.wait_up();
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--app-uid",
        "1000",
        "--app-gid",
        "1000",
    ]);
    d.wait_ready();
    eventually(
        "drift",
        || d.metric("identity_drift", &[("watch", "default")]),
        |v| *v == Some(1.0),
    );
    let drift = d.status()["watches"][0]["identity_drift"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        drift,
        format!(
            "--app-uid/--app-gid say 1000:1000 but pid {} ({}) runs as 1001:1001: runAsUser/runAsGroup changed in one \
             place and not the other",
            app.pid(),
            app.name
        )
    );
    assert!(d.log().contains("identity drift"), "{}", d.log());
    // Its first scan starts after `t` (and is recorded once it is ready).
    let t = now_ns();
    let agreeing = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--app-uid",
        "1001",
        "--app-gid",
        "1001",
    ]);
    agreeing.wait_ready();
    agreeing.passed(t);
    assert_eq!(
        agreeing.metric("identity_drift", &[("watch", "default")]),
        Some(0.0)
    );
}

#[test]
fn block_policy_holds_an_unreadable_version_until_it_is_readable() {
    let dir = open_dir();
    let vol = dir.path().join("secrets");
    fs::create_dir(&vol).unwrap();
    let token = vol.join("token");
    write(&token, &credential("1"), (0, 0), 0o644);
    let app = App::start_as(dir.path(), &token, &[], Some((1001, 1001, &[])));
    app.wait_up();
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--access-policy",
        "block",
        "--min-reload-interval",
        "0",
        "--reload-on-start",
        "never",
        // A scan after `t` is certain even if the test thread stalls past the quiet period: a
        // resync finds the same content, held back or complete, and no attempt fails.
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();
    // A writer replaces the file with one the app cannot read.
    let tmp = vol.join(".token.new");
    write(&tmp, &credential("2"), (0, 0), 0o600);
    fs::rename(&tmp, &token).unwrap();
    let t = now_ns();
    let status = eventually(
        "the hold",
        || d.status(),
        |s| {
            s["watches"][0]["held_back"]
                .as_array()
                .is_some_and(|h| !h.is_empty())
        },
    );
    let held = status["watches"][0]["held_back"][0]["detail"]
        .as_str()
        .unwrap();
    assert!(
        held.starts_with(&format!("the app cannot read {}", token.display())),
        "{held}"
    );
    eventually(
        "content_blocked 1 in the metrics (written after the status board)",
        || d.metric("content_blocked", &[("watch", "default")]),
        |v| *v == Some(1.0),
    );
    let status = d.passed(t);
    let target = &status["targets"][0];
    assert_eq!(target["state"], "held", "{target}");
    assert!(target["last_attempt"].is_null(), "nothing sent: {target}");
    assert_eq!(
        app.reloads(),
        0,
        "not reloaded into a version it cannot read"
    );
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let st = eventually(
        "the reload once readable",
        || app.state(),
        |s| s.as_ref().is_some_and(|s| s.reloads >= 1),
    )
    .unwrap();
    assert_eq!((st.reloads, st.version.as_str()), (1, "2"));
    // The group's bookkeeping follows the action (nothing delays the reload itself).
    eventually(
        "the hold lifted in the metrics",
        || d.metric("content_blocked", &[("watch", "default")]),
        |v| *v == Some(0.0),
    );
}

#[test]
fn block_policy_without_an_identity_is_a_usage_error() {
    let dir = tempdir();
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "--watch",
            dir.path().to_str().unwrap(),
            "--reload-url",
            "http://127.0.0.1:1/",
            "--access-policy",
            "block",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access policy block needs the app's identity") && err.contains("--app-uid"),
        "{err}"
    );
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "--watch",
            dir.path().to_str().unwrap(),
            "--exec",
            "true",
            "--app-uid",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--app-uid and --app-gid go together"));
}
