//! PEM consistency: a version whose key does not match its certificate (a writer half-way through
//! replacing them) is held back and reloaded once complete; certificates' expiry is exported.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use secret_reloader::scan::fingerprint::FingerprintKey;
use secret_reloader::scan::{self, Scan};

use crate::support::sink::Sink;
use crate::support::tls::{KeyKind, dated, pair};
use crate::support::{AtomicWriter, Daemon, eventually, now_ns, tempdir};

fn scan_dir(dir: &Path) -> Scan {
    scan::scan(
        &[dir.to_path_buf()],
        scan::Options {
            key: &FingerprintKey::new(b"test".to_vec()),
            max_files: 100,
            follow_external_symlinks: false,
            was_dir: &Default::default(),
            served_certs: false,
        },
    )
}

#[test]
fn keys_in_every_format_are_matched_against_their_certificates() {
    let tmp = tempdir();
    for kind in [
        KeyKind::EcPkcs8,
        KeyKind::EcSec1,
        KeyKind::RsaPkcs8,
        KeyKind::RsaPkcs1,
    ] {
        let work = tmp.path().join(format!("{kind:?}"));
        fs::create_dir_all(&work).unwrap();
        let (crt, key) = pair(&work, "a", kind);
        let (_, other_key) = pair(&work, "b", kind);
        let header = match kind {
            KeyKind::EcPkcs8 | KeyKind::RsaPkcs8 => "-----BEGIN PRIVATE KEY-----",
            KeyKind::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
            KeyKind::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        };
        assert!(key.starts_with(header), "{kind:?} key is in another format");
        let vol = work.join("vol");
        fs::create_dir(&vol).unwrap();
        fs::write(vol.join("tls.crt"), &crt).unwrap();
        fs::write(vol.join("tls.key"), &key).unwrap();
        let s = scan_dir(&vol);
        assert!(
            s.inconsistent.is_empty(),
            "{kind:?} matching pair: {:?}",
            s.inconsistent
        );
        assert!(s.not_checked.is_empty(), "{kind:?}: {:?}", s.not_checked);
        fs::write(vol.join("tls.key"), &other_key).unwrap();
        let s = scan_dir(&vol);
        assert_eq!(
            s.inconsistent.len(),
            1,
            "{kind:?} mismatched pair: {:?}",
            s.inconsistent
        );
        assert!(
            s.inconsistent[0].contains("tls.key")
                && s.inconsistent[0].contains("matches no certificate")
        );
        let text = format!("{:?}", s);
        assert!(
            !text.contains("BEGIN"),
            "scan results must not carry key material"
        );
    }
}

#[test]
fn broken_pem_is_inconsistent_and_encrypted_keys_are_reported_unchecked() {
    let tmp = tempdir();
    let (crt, key) = pair(tmp.path(), "a", KeyKind::EcPkcs8);
    let vol = tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("tls.crt"), &crt[..crt.len() / 2]).unwrap(); // cut short
    fs::write(vol.join("tls.key"), &key).unwrap();
    let s = scan_dir(&vol);
    assert!(
        s.inconsistent
            .iter()
            .any(|p| p.contains("tls.crt") && p.contains("cut short")),
        "{:?}",
        s.inconsistent
    );

    let out = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:test",
        ])
        .arg("-in")
        .arg(tmp.path().join("a.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    fs::write(vol.join("tls.crt"), &crt).unwrap();
    fs::write(vol.join("tls.key"), &out.stdout).unwrap();
    let s = scan_dir(&vol);
    assert!(s.inconsistent.is_empty(), "{:?}", s.inconsistent);
    assert!(
        s.not_checked[0].contains("encrypted private key"),
        "{:?}",
        s.not_checked
    );
}

#[test]
fn half_written_rotation_is_held_back_then_reloaded_once() {
    let tmp = tempdir();
    let (crt1, key1) = pair(tmp.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(tmp.path(), "v2", KeyKind::RsaPkcs1);
    let vol = tmp.path().join("tls");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("tls.crt"), &crt1).unwrap();
    fs::write(vol.join("tls.key"), &key1).unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
        // A scan after each `t` is certain even if the test thread stalls past the quiet period:
        // a resync finds the same content (held back, or the same complete version).
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();

    // A writer that replaces the certificate, then the key two seconds later.
    fs::write(vol.join("tls.crt"), &crt2).unwrap();
    let status = eventually(
        "the mismatch to be reported",
        || d.status(),
        |s| {
            s["watches"][0]["held_back"]
                .as_array()
                .is_some_and(|h| !h.is_empty())
        },
    );
    let held = status["watches"][0]["held_back"].to_string();
    assert!(
        held.contains("tls.key") && held.contains("matches no certificate"),
        "{held}"
    );
    // The metrics are written after the status board, in the same pass.
    eventually(
        "the hold in the metrics",
        || d.metric("content_blocked", &[("watch", "default")]),
        |v| *v == Some(1.0),
    );
    // The writer pauses: the daemon scans the half-written pair again (resyncs, each a point
    // where it would act) and must still hold it back. Two more scans, then every target has
    // acted on a scan after those.
    let scans = status["watches"][0]["scans"].as_u64().unwrap();
    eventually(
        "two more scans of the half-written pair",
        || d.status()["watches"][0]["scans"].as_u64(),
        |n| n.is_some_and(|n| n >= scans + 2),
    );
    let status = d.passed(now_ns());
    assert_eq!(status["targets"][0]["state"], "held", "{status}");
    assert_eq!(sink.count(), 0, "no reload into the mismatched pair");
    fs::write(vol.join("tls.key"), &key2).unwrap();
    let t = now_ns();
    eventually(
        "one reload of the completed version",
        || sink.count(),
        |n| *n == 1,
    );
    d.passed(t);
    assert_eq!(sink.count(), 1);
    eventually(
        "content_blocked 0 in the metrics (written after the status board)",
        || d.metric("content_blocked", &[("watch", "default")]),
        |v| *v == Some(0.0),
    );
    assert!(d.log().contains("content held back"), "{}", d.log());
}

#[test]
fn consistency_check_off_reloads_anyway_and_long_holds_become_errors() {
    let tmp = tempdir();
    let (crt1, key1) = pair(tmp.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, _) = pair(tmp.path(), "v2", KeyKind::EcPkcs8);
    let vol = tmp.path().join("tls");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("tls.crt"), &crt1).unwrap();
    fs::write(vol.join("tls.key"), &key1).unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let off = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--consistency-check",
        "off",
    ]);
    let on = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--consistency-timeout",
        "1s",
    ]);
    off.wait_ready();
    on.wait_ready();
    fs::write(vol.join("tls.crt"), &crt2).unwrap();
    eventually(
        "the daemon without the check to reload",
        || sink.count(),
        |n| *n == 1,
    );
    eventually(
        "the hold to be reported as an error",
        || on.log(),
        |l| l.contains("still held back after --consistency-timeout"),
    );
    assert_eq!(
        sink.count(),
        1,
        "only the daemon without the check reloaded"
    );
}

#[test]
fn certificate_expiry_is_exported_per_file() {
    let tmp = tempdir();
    let vol = tmp.path().join("vol");
    let w = AtomicWriter::new(&vol);
    let (old_crt, old_key) = dated(tmp.path(), "old", "20200101000000Z", "20200102000000Z");
    let (new_crt, _) = dated(tmp.path(), "new", "20260101000000Z", "20310101000000Z");
    w.write(&[
        ("tls.crt", old_crt.as_str()),
        ("tls.key", old_key.as_str()),
        ("ca.crt", new_crt.as_str()),
    ])
    .unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let d = Daemon::start(&["--watch", vol.to_str().unwrap(), "--reload-url", &url]);
    d.wait_ready();
    let crt_path = vol.join("tls.crt").display().to_string();
    let ca_path = vol.join("ca.crt").display().to_string();
    let expiry = |p: &str| {
        d.metric(
            "cert_expiry_timestamp_seconds",
            &[("watch", "default"), ("path", p)],
        )
    };
    assert_eq!(
        expiry(&crt_path),
        Some(1577923200.0),
        "2020-01-02T00:00:00Z"
    );
    assert_eq!(expiry(&ca_path), Some(1924992000.0), "2031-01-01T00:00:00Z");
    let status = d.status();
    let files = status["watches"][0]["files"].as_array().unwrap();
    let tls = files
        .iter()
        .find(|f| f["path"] == crt_path.as_str())
        .unwrap();
    assert!(
        tls["cert_expires"]
            .as_str()
            .unwrap()
            .starts_with("2020-01-02T00:00:00"),
        "{tls}"
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry(&crt_path).unwrap() < now,
        "the expired certificate reads as expired"
    );
}
