//! Tokens: a kubelet-style volume holding a JWT (made here, as a projected service-account token
//! looks) gets `secret_reloader_token_expiry_timestamp_seconds` and `token_expires` in /status
//! from its `exp` claim, updated at a rotation; the token itself appears nowhere.

use std::time::{SystemTime, UNIX_EPOCH};

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, daemon_for, eventually, tempdir};

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
