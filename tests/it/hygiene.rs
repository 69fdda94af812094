//! Secret hygiene: a distinctive secret value and its plain digests (SHA-256, SHA-1, MD5, of the
//! value and of the whole file) never appear in logs at trace level, `/metrics`, `/status` or the
//! doctor's report, not even shortened to the 16 hex digits a fingerprint is shown with.

use std::process::Command;

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, bin, eventually, tempdir};

/// Hex digests of `data` with the coreutils tools (real implementations, not ours).
fn digests(dir: &std::path::Path, data: &str) -> Vec<String> {
    let file = dir.join(format!("digest-input-{}", crate::support::unique()));
    std::fs::write(&file, data).unwrap();
    let mut out = Vec::new();
    for tool in ["sha256sum", "sha1sum", "md5sum"] {
        let o = Command::new(tool).arg(&file).output().unwrap();
        let hex = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        out.push(hex);
    }
    std::fs::remove_file(&file).unwrap();
    out
}

#[test]
fn no_secret_and_no_plain_digest_anywhere() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    let secrets = ["Zq7hygieneS3cretValue-8842", "Kx9otherS3cretValue-1337"];
    let contents: Vec<String> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| format!("version={i}\npassword={s}\n"))
        .collect();
    w.write(&[("token", contents[0].as_str())]).unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--log-level",
        "trace",
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    w.write(&[("token", contents[1].as_str())]).unwrap();
    eventually("the reload", || sink.count(), |n| *n == 1);
    let doctor = |fmt: &str| {
        let o = Command::new(bin())
            .args([
                "doctor",
                "--watch",
                vol.to_str().unwrap(),
                "--reload-url",
                &url,
                "--listen",
                &d.addr.to_string(),
                "--output",
                fmt,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let everything = [
        d.log(),
        d.metrics(),
        d.status().to_string(),
        doctor("text"),
        doctor("json"),
    ]
    .join("\n");
    assert!(everything.contains("reloaded"), "the log was captured");
    let mut forbidden: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    for data in secrets
        .iter()
        .map(|s| s.to_string())
        .chain(contents.iter().cloned())
    {
        for hex in digests(dir.path(), &data) {
            forbidden.push(hex[..16].to_string());
            forbidden.push(hex[..16].to_uppercase());
            forbidden.push(hex);
        }
    }
    for f in &forbidden {
        assert!(!everything.contains(f.as_str()), "{f} leaked");
    }
}
