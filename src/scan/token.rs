//! Tokens among the watched files: a file that holds one JSON Web Token (a projected
//! service-account token, a Vault token file, an OIDC token written by an agent) has its `exp`
//! claim read, so that `secret_reloader_token_expiry_timestamp_seconds` can show when the token on
//! disk ends. Nothing is verified (no signature check: the daemon only reports), nothing of the
//! token is kept or shown but that time.

use std::time::{Duration, SystemTime};

use base64ct::{Base64UrlUnpadded, Encoding};

/// Largest token looked at; kubelet's projected tokens are about 1 KiB.
const TOKEN_LIMIT: usize = 16 * 1024;

/// When the JWT that `content` holds expires (its `exp` claim); `None` when the file is not one
/// JWT with a header naming its algorithm and a numeric `exp`.
pub(crate) fn expiry(content: &[u8]) -> Option<SystemTime> {
    let token = content.trim_ascii();
    // A JWT's header is a JSON object: base64url of `{"` starts with `eyJ`.
    if token.len() > TOKEN_LIMIT || !token.starts_with(b"eyJ") {
        return None;
    }
    let mut parts = token.split(|b| *b == b'.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = json(header)?;
    header.get("alg")?.as_str()?;
    let exp = json(payload)?.get("exp")?.as_f64()?;
    (0.0..1e11)
        .contains(&exp)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(exp))
}

/// A base64url (unpadded) segment holding a JSON object.
fn json(segment: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let segment = std::str::from_utf8(segment).ok()?;
    let bytes = zeroize::Zeroizing::new(Base64UrlUnpadded::decode_vec(segment).ok()?);
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            Base64UrlUnpadded::encode_string(header.as_bytes()),
            Base64UrlUnpadded::encode_string(payload.as_bytes())
        )
    }

    #[test]
    fn the_exp_claim_of_a_jwt_and_nothing_else() {
        let t = jwt(
            r#"{"alg":"RS256","kid":"k"}"#,
            r#"{"aud":["api"],"exp":1900000000,"sub":"system:serviceaccount:shop:web"}"#,
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        assert_eq!(expiry(t.as_bytes()), Some(at));
        assert_eq!(
            expiry(format!("{t}\n").as_bytes()),
            Some(at),
            "a trailing newline"
        );
        // Not tokens: no exp, no alg, other JSON, two segments, PEM, plain text, a huge file.
        assert_eq!(
            expiry(jwt(r#"{"alg":"none"}"#, r#"{"sub":"x"}"#).as_bytes()),
            None
        );
        assert_eq!(
            expiry(jwt(r#"{"typ":"JWT"}"#, r#"{"exp":1}"#).as_bytes()),
            None
        );
        assert_eq!(
            expiry(jwt(r#"{"alg":"HS256"}"#, r#"{"exp":"soon"}"#).as_bytes()),
            None
        );
        assert_eq!(
            expiry(jwt(r#"{"alg":"HS256"}"#, r#"{"exp":-5}"#).as_bytes()),
            None
        );
        assert_eq!(expiry(jwt(r#"{"alg":"HS256"}"#, r#"[1]"#).as_bytes()), None);
        assert_eq!(expiry(b"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9"), None);
        assert_eq!(expiry(format!("{t}.x").as_bytes()), None);
        assert_eq!(expiry(b"-----BEGIN CERTIFICATE-----\n"), None);
        assert_eq!(expiry(b"password=hunter2\n"), None);
        assert_eq!(expiry(b"eyJ!!!.eyJ.x"), None);
        let big = jwt(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":1,"pad":"{}"}}"#, "a".repeat(20_000)),
        );
        assert_eq!(expiry(big.as_bytes()), None);
    }
}
