//! `--verify-served-cert`: after a reload, the certificate the app serves must be the one on
//! disk for the reload to count. nginx (the Debian package) serves TLS from a kubelet-style
//! volume on 127.0.0.1 and is reloaded by SIGHUP: a rotation counts once nginx serves the new
//! certificate; a rotation nginx cannot take (the new key needs a passphrase nginx does not have,
//! so it keeps the old pair) stays stale, with served ≠ disk in /status, the metrics and doctor.

use std::path::Path;
use std::process::Command;

use crate::nginx::{nginx_and_daemon, nginx_conf};
use crate::support::tls::{KeyKind, pair, serial, served_subject};
use crate::support::{AtomicWriter, Daemon, bin, eventually, free_port, tempdir};

/// nginx serving the v1 pair in `vol`, and a daemon that signals it and checks what it serves.
fn nginx_checked(dir: &Path, vol: &Path) -> (u16, Daemon) {
    nginx_serving(dir, vol, vol, &[])
}

/// nginx serving the v1 pair in `from`, and a daemon watching `vol` (with `extra` flags) that
/// signals it and checks what it serves.
fn nginx_serving(dir: &Path, from: &Path, vol: &Path, extra: &[&str]) -> (u16, Daemon) {
    let port = free_port();
    let conf = nginx_conf(dir, from, port);
    (port, checked(dir, &conf, port, vol, extra))
}

/// nginx with `conf` (serving the v1 pair on 127.0.0.1:`port`), and a daemon watching `vol`
/// (with `extra` flags) that signals it and checks what it serves; once nginx serves v1.
pub fn checked(dir: &Path, conf: &Path, port: u16, vol: &Path, extra: &[&str]) -> Daemon {
    let served = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        "nginx",
        "--verify-served-cert",
        &served,
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "300ms",
    ];
    args.extend(extra);
    let d = nginx_and_daemon(dir, conf, &args);
    d.wait_ready();
    eventually(
        "nginx to serve v1",
        || served_subject(port),
        |s| s.contains("CN=v1"),
    );
    d
}

fn served(d: &Daemon) -> serde_json::Value {
    d.status()["targets"][0]["served_certificate"].clone()
}

#[test]
fn a_rotation_counts_once_nginx_serves_the_new_certificate() {
    let dir = tempdir();
    let vol = dir.path().join("tls");
    let w = AtomicWriter::new(&vol);
    let (crt1, key1) = pair(dir.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(dir.path(), "v2", KeyKind::EcPkcs8);
    let (s1, s2) = (serial(dir.path(), &crt1), serial(dir.path(), &crt2));
    w.write(&[("tls.crt", &crt1), ("tls.key", &key1)]).unwrap();
    let (port, d) = nginx_checked(dir.path(), &vol);
    let target = d.status()["targets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // At start the daemon looks: nginx serves what is on disk.
    let s = eventually(
        "the first look at the served certificate",
        || served(&d),
        |s| s["matches_disk"] == true,
    );
    assert_eq!(s["serial"], s1.as_str(), "{s}");
    assert_eq!(s["endpoint"], format!("127.0.0.1:{port}"), "{s}");

    w.write(&[("tls.crt", &crt2), ("tls.key", &key2)]).unwrap();
    let t = eventually(
        "the rotation applied, nginx serving it",
        || d.status()["targets"][0].clone(),
        |t| t["stale"] == false && t["served_certificate"]["serial"] == s2.as_str(),
    );
    assert_eq!(t["served_certificate"]["matches_disk"], true, "{t}");
    assert_eq!(
        t["served_certificate"]["disk"][0]["serial"],
        s2.as_str(),
        "{t}"
    );
    let detail = t["last_attempt"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("serves the certificate on disk"),
        "{detail}"
    );
    // nginx's old workers may still hold the port for a moment (see the last test).
    eventually(
        "every connection to reach a worker serving v2",
        || served_subject(port),
        |s| s.contains("CN=v2"),
    );
    assert_eq!(
        d.metric("served_certificate_match", &[("target", &target)]),
        Some(1.0)
    );
    assert!(
        d.metric(
            "served_certificate_expiry_timestamp_seconds",
            &[("target", &target)]
        )
        .is_some_and(|e| e > 1.0e9)
    );
}

#[test]
fn a_rotation_nginx_cannot_take_stays_stale_with_served_and_disk_shown() {
    let dir = tempdir();
    let vol = dir.path().join("tls");
    let w = AtomicWriter::new(&vol);
    let (crt1, key1) = pair(dir.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(dir.path(), "v2", KeyKind::EcPkcs8);
    let (s1, s2) = (serial(dir.path(), &crt1), serial(dir.path(), &crt2));
    // v2's key behind a passphrase: the daemon cannot check it against the certificate (a note,
    // not a hold), and nginx, with no ssl_password_file, cannot load it and keeps v1.
    std::fs::write(dir.path().join("plain.key"), &key2).unwrap();
    let out = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-passout",
            "pass:secret",
            "-in",
            "plain.key",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let encrypted = String::from_utf8(out.stdout).unwrap();
    w.write(&[("tls.crt", &crt1), ("tls.key", &key1)]).unwrap();
    let (port, d) = nginx_checked(dir.path(), &vol);
    let target = d.status()["targets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    w.write(&[("tls.crt", &crt2), ("tls.key", &encrypted)])
        .unwrap();
    let status = eventually(
        "a failed attempt: served ≠ disk",
        || d.status()["targets"][0].clone(),
        |s| {
            s["last_attempt"]["result"] == "failure"
                && s["served_certificate"]["matches_disk"] == false
        },
    );
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(
        log.contains("(SIGHUP) received"),
        "the daemon did signal nginx: {log}"
    );
    assert_eq!(status["stale"], true, "{status}");
    assert_eq!(
        status["served_certificate"]["serial"],
        s1.as_str(),
        "{status}"
    );
    assert_eq!(
        status["served_certificate"]["disk"][0]["serial"],
        s2.as_str(),
        "{status}"
    );
    let msg = status["last_error"]["message"].as_str().unwrap();
    // Each of nginx's workers, named, serves v1.
    assert!(
        msg.contains(&format!("serial {s1}"))
            && msg.contains("(nginx)")
            && msg.contains("not the one on disk")
            && msg.contains(&s2),
        "{msg}"
    );
    assert!(served_subject(port).contains("CN=v1"), "nginx kept v1");
    assert_eq!(
        d.metric("served_certificate_match", &[("target", &target)]),
        Some(0.0)
    );
    assert_eq!(d.metric("stale", &[("target", &target)]), Some(1.0));

    // doctor, asked against the running daemon, shows served against disk.
    let (listen, served) = (d.addr.to_string(), format!("127.0.0.1:{port}"));
    let out = Command::new(bin())
        .args([
            "doctor",
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            "nginx",
        ])
        .args(["--verify-served-cert", &served, "--listen", &listen])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "doctor reports the problem: {text}");
    assert!(
        text.contains(&format!("serial {s1} (fingerprint"))
            && text.contains("(nginx)")
            && text.contains(&format!("serial {s2}")),
        "{text}"
    );
}

#[test]
fn a_look_that_finds_the_old_certificate_served_makes_the_target_act_until_it_is_served() {
    let dir = tempdir();
    let vol = dir.path().join("tls");
    let w = AtomicWriter::new(&vol);
    let (crt1, key1) = pair(dir.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(dir.path(), "v2", KeyKind::EcPkcs8);
    let s2 = serial(dir.path(), &crt2);
    w.write(&[("tls.crt", &crt2), ("tls.key", &key2)]).unwrap();
    // nginx serves its own copy, still v1, while the watched volume holds v2; the daemon is
    // told the app holds what is on disk (`--reload-on-start never`): only the look can tell.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::write(copy.join("tls.crt"), &crt1).unwrap();
    std::fs::write(copy.join("tls.key"), &key1).unwrap();
    let (port, d) = nginx_serving(dir.path(), &copy, &vol, &["--reload-on-start", "never"]);
    // The look at start finds v1: the target is stale and acts (SIGHUP), which cannot help
    // while nginx's copy is old.
    let t = eventually(
        "a failed attempt after the look at start",
        || d.status()["targets"][0].clone(),
        |t| t["last_attempt"]["result"] == "failure",
    );
    assert_eq!(t["stale"], true, "{t}");
    assert!(d.log().contains("reloading again"), "{}", d.log());
    // The copy catches up: the next attempt's SIGHUP makes nginx serve v2, and it counts.
    std::fs::write(copy.join("tls.key"), &key2).unwrap();
    std::fs::write(copy.join("tls.crt"), &crt2).unwrap();
    let t = eventually(
        "the target applied once nginx serves v2",
        || d.status()["targets"][0].clone(),
        |t| t["stale"] == false && t["served_certificate"]["serial"] == s2.as_str(),
    );
    assert_eq!(t["last_attempt"]["result"], "success", "{t}");
    // One look sees the worker that accepted it: nginx's old workers keep the port for a moment
    // after the reload, so a connection of ours may still reach one of them.
    eventually(
        "every connection to reach a worker serving v2",
        || served_subject(port),
        |s| s.contains("CN=v2"),
    );
}
