//! `secret-reloader doctor`: its text and JSON for each problem it must find, and its exit codes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::process::{Proc, doctor, doctor_through, named_exe};
use crate::support::tls::dated;
use crate::support::{
    App, AtomicWriter, Daemon, bin, credential, eventually, let_content_age, open_dir, tempdir,
};

fn problems(json: &Value) -> String {
    json["problems"].to_string()
}

#[test]
fn healthy_setup_exits_0_and_reports_in_order() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    AtomicWriter::new(&vol)
        .write(&[("token", credential("1"))])
        .unwrap();
    let_content_age();
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    let (code, text, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No problem found."), "{text}");
    let order = [
        "secret-reloader doctor",
        "Sidecar",
        "Daemon",
        "Watch group \"default\"",
        "App",
        "/vol",
        "Content",
        "Target",
    ];
    let mut at = 0;
    for part in order {
        let i = text[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} missing or out of order in:\n{text}"));
        at += i;
    }
    assert_eq!(json["groups"][0]["paths"][0]["layout"], "kubelet_volume");
    assert_eq!(json["groups"][0]["app_identity"]["uid"], 0);
    assert_eq!(json["sidecar"]["uid"], 0);
    assert_eq!(json["daemon"]["reachable"], false);
    let checks = json["groups"][0]["targets"][0]["checks"]
        .as_array()
        .unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    assert!(
        json["groups"][0]["paths"][0]["content_age_seconds"]
            .as_u64()
            .is_some()
    );
}

#[test]
fn unreadable_file_and_drift_are_problems_with_fixes() {
    let dir = open_dir();
    let vol = dir.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let key = vol.join("tls.key");
    fs::write(&key, "k").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let_content_age();
    let app = App::start_as(dir.path(), &key, &[], Some((1001, 1001, &[])));
    app.wait_up();
    let (code, text, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--app-uid",
        "1000",
        "--app-gid",
        "1000",
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("NOT READABLE: tls.key is 0:0 mode 0600; the app runs as 1001:1001"),
        "{text}"
    );
    assert!(
        text.contains("fix: give the pod securityContext.fsGroup: 1001"),
        "{text}"
    );
    let file = &json["groups"][0]["files"][0];
    assert_eq!(file["access"]["readable"], false);
    assert_eq!(file["mode"], "0600");
    let p = problems(&json);
    assert!(p.contains("the app cannot read it"), "{p}");
    assert!(
        p.contains("identity drift: --app-uid/--app-gid say 1000:1000"),
        "{p}"
    );
    assert!(json["groups"][0]["identity_drift"].is_string());
}

#[test]
fn stale_process_missing_process_and_dead_endpoint() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let app = App::start(dir.path(), &vol.join("token"), &[]);
    app.wait_up();
    let_content_age();
    w.write(&[("token", credential("2"))]).unwrap(); // newer than the app: it may hold version 1
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{closed}/-/reload");
    let (code, text, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--reload-url",
        &dead,
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 1, "{text}");
    let p = problems(&json);
    assert!(
        p.contains("no running daemon reports a reload since: likely stale"),
        "{p}"
    );
    assert!(p.contains(&format!("cannot connect to {closed}")), "{p}");
    assert!(
        text.contains("FAIL freshness") && text.contains("FAIL endpoint"),
        "{text}"
    );

    // A daemon that reloaded the app: the doctor asks it, and the freshness check passes.
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
    ]);
    d.wait_ready();
    eventually("the reload", || app.reloads(), |n| *n == 1);
    eventually(
        "the daemon to report it",
        || d.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
    let listen = d.addr.to_string();
    let (code, text, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--listen",
        &listen,
    ]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(json["daemon"]["reachable"], true);
    assert!(
        text.contains("the running daemon reports it reloaded it"),
        "{text}"
    );

    let (code, _, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        "app-not-running",
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 1);
    assert!(
        problems(&json).contains("no process matches --process-name app-not-running"),
        "{json}"
    );
}

#[test]
fn signal_not_permitted_for_a_sidecar_of_another_uid() {
    let dir = open_dir();
    let vol = dir.path().join("vol");
    AtomicWriter::new(&vol)
        .write(&[("token", credential("1"))])
        .unwrap();
    let_content_age();
    let app = App::start(dir.path(), &vol.join("token"), &[]); // root
    app.wait_up();
    let (code, text, json) = doctor_through(
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ],
        &[
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            &app.name,
            "--standalone",
            "--listen",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert_eq!(json["sidecar"]["uid"], 65534);
    assert_eq!(json["sidecar"]["cap_kill"], false);
    let p = problems(&json);
    assert!(
        p.contains("the sidecar (uid 65534) may not signal uid 0") && p.contains("KILL capability"),
        "{p}"
    );
}

#[test]
fn single_file_mounts_kubelet_never_updates() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    AtomicWriter::new(&vol)
        .write(&[("token", credential("1"))])
        .unwrap();
    let real = fs::canonicalize(vol.join("token")).unwrap();
    let sub = dir.path().join("app-view");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("token"), "").unwrap();
    // The sidecar's own view: the watched file is a subPath-style bind mount of one version's file.
    let script = format!(
        "mount --bind {} {} && exec \"$0\" \"$@\"",
        real.display(),
        sub.join("token").display()
    );
    let (code, text, json) = doctor_through(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &[
            "--watch",
            sub.join("token").to_str().unwrap(),
            "--exec",
            "true",
            "--standalone",
            "--listen",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert_eq!(json["groups"][0]["paths"][0]["single_file_mount"], true);
    assert!(
        problems(&json).contains("is a single-file mount (subPath): kubelet never updates it"),
        "{json}"
    );
    assert!(text.contains("SINGLE-FILE MOUNT"), "{text}");

    // The app's view: the app runs in a mount namespace with such a mount; the doctor reads the
    // app's mount table.
    let (name, exe) = named_exe(dir.path());
    let state = dir.path().join("frozen.state");
    let script = format!(
        "mount --bind {} {} && exec \"$0\" demo-app --credential {} --state-file {}",
        real.display(),
        sub.join("token").display(),
        sub.join("token").display(),
        state.display()
    );
    let _app = Proc(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(&exe)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(
        "the app to start",
        || App::state_of(&state),
        |s| s.is_some(),
    );
    let (code, _, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &name,
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 1);
    let frozen = json["groups"][0]["app_frozen_mounts"].to_string();
    assert!(
        frozen.contains(&sub.join("token").display().to_string()) && frozen.contains("subPath"),
        "{json}"
    );
}

#[test]
fn expired_certificate_missing_path_and_usage_errors() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let (crt, key) = dated(dir.path(), "old", "20200101000000Z", "20200102000000Z");
    AtomicWriter::new(&vol)
        .write(&[("tls.crt", crt.as_str()), ("tls.key", key.as_str())])
        .unwrap();
    let missing = dir.path().join("not-there");
    let (code, text, json) = doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--watch",
        missing.to_str().unwrap(),
        "--app-uid",
        "0",
        "--app-gid",
        "0",
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 1, "{text}");
    let p = problems(&json);
    assert!(
        p.contains("the certificate expired at 2020-01-02T00:00:00Z"),
        "{p}"
    );
    assert!(
        p.contains(&format!("{} does not exist (yet)", missing.display())),
        "{p}"
    );
    assert_eq!(json["groups"][0]["paths"][1]["layout"], "missing");

    let out = Command::new(bin())
        .args(["doctor", "--watch", "/x", "--output", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));
    let out = Command::new(bin())
        .args(["doctor", "--listen", "nowhere", "--watch", "/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
