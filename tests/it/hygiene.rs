//! Secret hygiene: a distinctive secret value and its plain digests (SHA-256, SHA-1, MD5, of the
//! value and of the whole file) never appear in logs at trace level, `/metrics`, `/status` or the
//! doctor's report, not even shortened to the 16 hex digits a fingerprint is shown with.
//! Of a token, only the claims listed in `/status` appear: never its header, signature, other
//! claims, the token or its digests.

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
    let (sink, d) = tracing_daemon(&vol);
    let url = sink.url("/-/reload");
    w.write(&[("token", contents[1].as_str())]).unwrap();
    eventually("the reload", || sink.count(), |n| *n == 1);
    // The daemon logs an action once it has completed, just after the endpoint answered.
    eventually("the reload logged", || d.log(), |l| l.contains("reloaded"));
    let everything = everything(
        &d,
        &["--watch", vol.to_str().unwrap(), "--reload-url", &url],
    );
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

#[test]
fn header_file_and_status_token_never_appear_nor_their_digests() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", "version=1\n")]).unwrap();
    let header_values = [
        "Hx7headerS3cretValue-5521",
        "Hx7headerS3cretValue-rotated-0904",
    ];
    let status_token = "Sq3statusT0kenValue-9917";
    let header_file = dir.path().join("api-key");
    let token_file = dir.path().join("status-token");
    std::fs::write(&header_file, format!("{}\n", header_values[0])).unwrap();
    std::fs::write(&token_file, format!("{status_token}\n")).unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let header_flag = format!("X-Api-Key: {}", header_file.display());
    let flags = [
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--reload-header-file",
        &header_flag,
        "--status-token-file",
        token_file.to_str().unwrap(),
    ];
    let mut args = flags.to_vec();
    args.extend(["--log-level", "trace", "--min-reload-interval", "0"]);
    let d = Daemon::start(&args);
    d.wait_ready();
    w.write(&[("token", "version=2\n")]).unwrap();
    eventually("the first reload", || sink.count(), |n| *n == 1);
    std::fs::write(&header_file, format!("{}\n", header_values[1])).unwrap();
    w.write(&[("token", "version=3\n")]).unwrap();
    let calls = eventually("the second reload", || sink.calls(), |c| c.len() == 2);
    assert!(
        calls[1]
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == header_values[1]),
        "the header was sent: {:?}",
        calls[1].headers
    );
    // A client presenting the token (and one presenting a wrong one).
    for auth in [status_token, "wrong"] {
        let mut s = std::net::TcpStream::connect(d.addr).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET /status HTTP/1.0\r\nAuthorization: Bearer {auth}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut resp = String::new();
        std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"));
    }
    let json = doctor(&d, &flags, "json");
    let doctor_json: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("doctor JSON ({e}): {json}"));
    assert_eq!(doctor_json["daemon"]["reachable"], true, "{json}");
    let everything = [
        d.log(),
        d.metrics(),
        d.status().to_string(),
        doctor(&d, &flags, "text"),
        json,
    ]
    .join("\n");
    assert!(everything.contains("reloaded"), "the log was captured");
    assert!(
        everything.contains("api-key") || everything.contains("x-api-key"),
        "the header's configuration is visible (its name), so its value would have been too"
    );
    let mut forbidden: Vec<String> = Vec::new();
    for secret in header_values.iter().chain([&status_token]) {
        forbidden.push(secret.to_string());
        forbidden.extend(digest_forms(dir.path(), secret));
    }
    for f in &forbidden {
        assert!(!everything.contains(f.as_str()), "{f} leaked");
    }
}

#[test]
fn of_a_token_only_the_listed_claims_appear() {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Claims that are shown, and a header, claims and a signature that must never be.
    let token = |aud: &str, unlisted: &str, sig: &str| {
        let header = r#"{"alg":"RS256","kid":"Kd4hygieneKeyId-7310"}"#;
        let claims = format!(
            r#"{{"aud":["{aud}"],"iss":"https://issuer.test","sub":"svc-hygiene","scope":"read","exp":{},"jti":"{unlisted}","vault":{{"policy":"{unlisted}-nested"}}}}"#,
            now + 3600
        );
        format!(
            "{}.{}.{}",
            Base64UrlUnpadded::encode_string(header.as_bytes()),
            Base64UrlUnpadded::encode_string(claims.as_bytes()),
            Base64UrlUnpadded::encode_string(sig.as_bytes())
        )
    };
    let tokens = [
        token("aud-one", "Jt5unlistedClaim-2201", "Sg1signatureBytes-4471"),
        token("aud-two", "Jt5unlistedClaim-9034", "Sg1signatureBytes-8816"),
    ];
    w.write(&[("token", tokens[0].as_str())]).unwrap();
    let (sink, d) = tracing_daemon(&vol);
    let url = sink.url("/-/reload");
    w.write(&[("token", tokens[1].as_str())]).unwrap();
    eventually("the reload", || sink.count(), |n| *n == 1);
    eventually(
        "the claim change logged",
        || d.log(),
        |l| l.contains("audience changed from aud-one to aud-two") && l.contains("reloaded"),
    );
    let everything = everything(
        &d,
        &["--watch", vol.to_str().unwrap(), "--reload-url", &url],
    );
    for shown in [
        "aud-two",
        "https://issuer.test",
        "svc-hygiene",
        "token_claim_changed",
    ] {
        assert!(everything.contains(shown), "{shown} is shown");
    }
    let mut forbidden: Vec<String> = [
        "Kd4hygieneKeyId-7310",
        "Jt5unlistedClaim",
        "Sg1signatureBytes",
        "signatureBytes",
        "RS256",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for t in &tokens {
        forbidden.extend(t.split('.').map(String::from));
        forbidden.extend(digest_forms(dir.path(), t));
    }
    for f in &forbidden {
        assert!(!everything.contains(f.as_str()), "{f} leaked");
    }
}

/// Every unkeyed digest of `secret` (with and without a final newline, as a file holds it), whole
/// and as a short prefix in either case: none may appear anywhere.
fn digest_forms(dir: &std::path::Path, secret: &str) -> Vec<String> {
    let mut out = Vec::new();
    for data in [secret.to_string(), format!("{secret}\n")] {
        for hex in digests(dir, &data) {
            out.push(hex[..16].to_string());
            out.push(hex[..16].to_uppercase());
            out.push(hex);
        }
    }
    out
}

/// A ready daemon watching `vol` at trace level (every line it can write), calling a sink of its
/// own at each change.
fn tracing_daemon(vol: &std::path::Path) -> (Sink, Daemon) {
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
    (sink, d)
}

/// `secret-reloader doctor FLAGS` asking the daemon `d`, in `fmt`: its stdout and stderr.
fn doctor(d: &Daemon, flags: &[&str], fmt: &str) -> String {
    let o = Command::new(bin())
        .arg("doctor")
        .args(flags)
        .args(["--listen", &d.addr.to_string(), "--output", fmt])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Everything the daemon `d` shows: its log, /metrics, /status, and the doctor (run with
/// `flags`) in text and JSON.
fn everything(d: &Daemon, flags: &[&str]) -> String {
    [
        d.log(),
        d.metrics(),
        d.status().to_string(),
        doctor(d, flags, "text"),
        doctor(d, flags, "json"),
    ]
    .join("\n")
}
