//! Tokens: a kubelet-style volume holding a JWT (made here, as a projected service-account token
//! looks) gets `secret_reloader_token_expiry_timestamp_seconds` and `token_expires` in /status
//! from its `exp` claim, updated at a rotation; its claims in /status and the doctor; a change of
//! audience or scope while the app holds the old token is said (metric, target entry, log); an
//! expired or not-yet-valid token is a problem of the group; the token itself appears nowhere.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::support::process::doctor;
use crate::support::sink::{Mode, Sink};
use crate::support::{AtomicWriter, Daemon, daemon_for, eventually, tempdir};

fn jwt(exp: u64) -> String {
    let header = r#"{"alg":"RS256","kid":"k1"}"#;
    let claims = format!(
        r#"{{"aud":["https://kubernetes.default.svc"],"exp":{exp},"iat":{},"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:shop:api"}}"#,
        exp - 3600
    );
    format!(
        "{}.{}.{}",
        Base64UrlUnpadded::encode_string(header.as_bytes()),
        Base64UrlUnpadded::encode_string(claims.as_bytes()),
        Base64UrlUnpadded::encode_string(b"not a real signature, not checked")
    )
}

#[test]
fn a_watched_jwt_reports_its_expiry_and_never_itself() {
    let dir = tempdir();
    let vol = dir.path().join("token");
    let writer = AtomicWriter::new(&vol);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = jwt(now + 3600);
    writer.write(&[("token", &first)]).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&vol], &sink, &[]);
    let path = vol.join("token").display().to_string();
    let expiry = || {
        d.metric(
            "token_expiry_timestamp_seconds",
            &[("watch", "default"), ("path", &path)],
        )
    };
    eventually("the token's expiry", expiry, |v| {
        *v == Some((now + 3600) as f64)
    });
    let status = d.status();
    let file = &status["watches"][0]["files"][0];
    assert!(file["token_expires"].is_string(), "{status}");

    // kubelet refreshes it: the new exp.
    let second = jwt(now + 7200);
    writer.write(&[("token", &second)]).unwrap();
    eventually("the new expiry", expiry, |v| {
        *v == Some((now + 7200) as f64)
    });

    let everything = format!("{}{}{}", d.metrics(), d.status(), d.log());
    for token in [&first, &second] {
        for part in token.split('.') {
            assert!(
                !everything.contains(part),
                "a part of the token leaked: {part}"
            );
        }
    }
}

/// A JWT made here: header, the claims given, a signature that is not checked.
fn token(claims: &str) -> String {
    format!(
        "{}.{}.{}",
        Base64UrlUnpadded::encode_string(br#"{"alg":"RS256","kid":"k2"}"#),
        Base64UrlUnpadded::encode_string(claims.as_bytes()),
        Base64UrlUnpadded::encode_string(b"sig-Wq8claimsTestSignature")
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The doctor with the flags of a daemon that watches `vol` and calls `sink`, asking `d`.
fn doctor_beside(vol: &Path, sink: &Sink, d: &Daemon) -> (i32, String, serde_json::Value) {
    doctor(&[
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &sink.url("/-/reload"),
        "--listen",
        &d.addr.to_string(),
    ])
}

/// A rotation that changes `claims` while the app's endpoint fails: the app keeps the token it
/// had, and the daemon says which claims changed (metric, target entry, log); once the endpoint
/// answers again and the app takes the new token, the metric is 0.
fn claim_change_is_said(before: &str, after: &str, claim: &str, line: &str) {
    let dir = tempdir();
    let vol = dir.path().join("token");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", &token(before))]).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&vol], &sink, &["--retry-backoff-max", "200ms"]);
    let path = vol.join("token").display().to_string();
    let changed = |c: &str| {
        d.metric(
            "token_claim_changed",
            &[("watch", "default"), ("path", &path), ("claim", c)],
        )
    };
    eventually(
        "every claim's series, at 0",
        || changed(claim),
        |v| *v == Some(0.0),
    );

    sink.set(Mode::Status(500));
    writer.write(&[("token", &token(after))]).unwrap();
    eventually("the claim change", || changed(claim), |v| *v == Some(1.0));
    let log = eventually("the log line", || d.log(), |l| l.contains(line));
    assert_eq!(
        log.matches(line).count(),
        1,
        "said once per version:\n{log}"
    );
    for other in ["aud", "iss", "sub", "scope"]
        .into_iter()
        .filter(|c| *c != claim)
    {
        assert_eq!(changed(other), Some(0.0), "{other} did not change");
    }
    let status = d.status();
    let held = &status["targets"][0]["token_claims_changed"];
    assert_eq!(held.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(held[0]["claim"], claim, "{status}");
    assert_eq!(held[0]["path"], path.as_str(), "{status}");
    // The doctor says it too, from the running daemon's word.
    let (code, text, json) = doctor_beside(&vol, &sink, &d);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(line), "{text}");
    let check = json["groups"][0]["targets"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "token claims")
        .cloned();
    assert_eq!(check.map(|c| c["ok"].clone()), Some(false.into()), "{json}");

    sink.set(Mode::Status(200));
    eventually(
        "the app holds the new token",
        || changed(claim),
        |v| *v == Some(0.0),
    );
    assert_eq!(
        d.status()["targets"][0]["token_claims_changed"],
        serde_json::json!([])
    );
}

#[test]
fn an_audience_change_is_said_while_the_app_holds_the_old_token() {
    let exp = unix_now() + 3600;
    claim_change_is_said(
        &format!(
            r#"{{"aud":["https://vault.internal"],"iss":"https://k8s","sub":"system:serviceaccount:shop:api","exp":{exp}}}"#
        ),
        &format!(
            r#"{{"aud":["https://vault.internal/v2"],"iss":"https://k8s","sub":"system:serviceaccount:shop:api","exp":{}}}"#,
            exp + 60
        ),
        "aud",
        "audience changed from https://vault.internal to https://vault.internal/v2; the app holds the version with https://vault.internal",
    );
}

#[test]
fn a_scope_change_is_said_while_the_app_holds_the_old_token() {
    let exp = unix_now() + 3600;
    claim_change_is_said(
        &format!(r#"{{"iss":"https://idp","sub":"svc","scope":"orders:read","exp":{exp}}}"#),
        &format!(
            r#"{{"iss":"https://idp","sub":"svc","scope":"orders:read orders:write","exp":{exp}}}"#
        ),
        "scope",
        "scope changed from orders:read to orders:read orders:write; the app holds the version with orders:read",
    );
}

#[test]
fn an_expired_token_on_disk_is_a_problem_of_the_group() {
    let dir = tempdir();
    let vol = dir.path().join("token");
    let writer = AtomicWriter::new(&vol);
    let now = unix_now();
    let claims = format!(
        r#"{{"aud":["api"],"iss":"https://k8s","sub":"system:serviceaccount:shop:api","scope":"a b","iat":{},"nbf":{},"exp":{}}}"#,
        now - 7200,
        now - 7200,
        now - 3600
    );
    writer.write(&[("token", &token(&claims))]).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&vol], &sink, &[]);
    let status = d.status();
    let g = &status["watches"][0];
    assert_eq!(g["problems"][0]["kind"], "token_expired", "{status}");
    let msg = g["problems"][0]["message"].as_str().unwrap();
    assert!(msg.contains("failed to refresh it"), "{msg}");
    assert_eq!(
        g["complete"], true,
        "an expired token does not make the version incomplete"
    );
    assert_eq!(g["held_back"], serde_json::json!([]), "nor holds it back");
    let t = &g["files"][0]["token"];
    assert_eq!(t["aud"], serde_json::json!(["api"]), "{status}");
    assert_eq!(t["iss"], "https://k8s");
    assert_eq!(t["sub"], "system:serviceaccount:shop:api");
    assert_eq!(t["scope"], serde_json::json!(["a", "b"]));
    for c in ["iat", "nbf", "exp"] {
        assert!(t[c].is_string(), "{c}: {status}");
    }
    assert_eq!(g["files"][0]["token_expires"], t["exp"]);

    let (code, text, json) = doctor_beside(&vol, &sink, &d);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the token on disk expired at"), "{text}");
    assert!(
        text.contains(
            "token iss=https://k8s aud=api sub=system:serviceaccount:shop:api scope=\"a b\""
        ),
        "{text}"
    );
    assert_eq!(
        json["groups"][0]["files"][0]["token"]["aud"],
        serde_json::json!(["api"])
    );

    // Refreshed: the problem is gone.
    let fresh = claims.replace(&format!("{}}}", now - 3600), &format!("{}}}", now + 3600));
    writer.write(&[("token", &token(&fresh))]).unwrap();
    eventually(
        "the problem gone",
        || d.status()["watches"][0]["problems"].clone(),
        |p| *p == serde_json::json!([]),
    );
}

#[test]
fn a_token_not_valid_yet_is_a_problem_of_the_group() {
    let dir = tempdir();
    let vol = dir.path().join("token");
    let writer = AtomicWriter::new(&vol);
    let now = unix_now();
    let claims = format!(
        r#"{{"sub":"svc","nbf":{},"exp":{}}}"#,
        now + 3600,
        now + 7200
    );
    writer.write(&[("token", &token(&claims))]).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&vol], &sink, &[]);
    let status = d.status();
    assert_eq!(
        status["watches"][0]["problems"][0]["kind"], "token_not_yet_valid",
        "{status}"
    );
}
