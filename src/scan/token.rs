//! Tokens among the watched files: a file that holds one JSON Web Token (a projected
//! service-account token, a Vault token file, an OIDC token written by an agent) has its claims
//! read: who issued it (`iss`), for whom (`aud`), about whom (`sub`), what it allows (`scope`,
//! `scp`) and when it is valid (`iat`, `nbf`, `exp`). `secret_reloader_token_expiry_timestamp_seconds`
//! shows when the token on disk ends, `/status` and the doctor show the claims, and a change of
//! audience, issuer, subject or scope between the version an app holds and the one on disk is
//! reported as such (an app holding the old token gets 401/403 from a service that wants the new
//! audience).
//!
//! Nothing is verified (no signature check: the daemon only reports). Nothing of the token is
//! kept but these claims: never the signature, the header or the token itself; each string is
//! bounded (256 characters, 32 entries per list) and escaped (`crate::text`) before it leaves
//! this file. A claim cut at its bound compares by what is kept.

use std::time::{Duration, SystemTime};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Serialize;
use serde_json::Value;

use super::{Problem, ProblemKind};
use crate::text;

/// Largest token looked at; kubelet's projected tokens are about 1 KiB.
const TOKEN_LIMIT: usize = 16 * 1024;

/// Longest claim string kept, in characters; a longer one is cut and ends with `…`.
pub(crate) const CLAIM_LIMIT: usize = 256;

/// Most entries kept of a list claim (`aud`, `scope`); more end the list with `…`.
pub(crate) const LIST_LIMIT: usize = 32;

/// A token on disk whose `nbf` is less than this ahead of the clock is taken as valid (the
/// issuer's clock and this node's differ a little).
pub(crate) const NBF_SKEW: Duration = Duration::from_secs(60);

/// The claims of a JWT, bounded and escaped, as they may be shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenClaims {
    /// Issuer (`iss`).
    pub iss: Option<String>,
    /// Audiences (`aud`: one string or an array).
    pub aud: Vec<String>,
    /// Subject (`sub`).
    pub sub: Option<String>,
    /// Scopes (`scope`, space-separated, or `scp`, an array or a string).
    pub scope: Vec<String>,
    /// Issued at (`iat`).
    #[serde(serialize_with = "rfc3339")]
    pub iat: Option<SystemTime>,
    /// Not before (`nbf`).
    #[serde(serialize_with = "rfc3339")]
    pub nbf: Option<SystemTime>,
    /// Expires (`exp`).
    #[serde(serialize_with = "rfc3339")]
    pub exp: Option<SystemTime>,
}

/// A claim whose change between the version an app holds and the one on disk is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Claim {
    /// `aud`.
    Audience,
    /// `iss`.
    Issuer,
    /// `sub`.
    Subject,
    /// `scope` / `scp`.
    Scope,
}

impl Claim {
    /// Every claim compared, in the order they are reported.
    pub(crate) const ALL: [Claim; 4] =
        [Claim::Audience, Claim::Issuer, Claim::Subject, Claim::Scope];

    /// The `claim` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Claim::Audience => "aud",
            Claim::Issuer => "iss",
            Claim::Subject => "sub",
            Claim::Scope => "scope",
        }
    }

    /// The claim in words, as a log line says it.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Claim::Audience => "audience",
            Claim::Issuer => "issuer",
            Claim::Subject => "subject",
            Claim::Scope => "scope",
        }
    }
}

impl TokenClaims {
    /// The value of `claim`, as a log line shows it (`(none)` when absent; lists joined by
    /// spaces, as OAuth writes scopes).
    pub(crate) fn shown(&self, claim: Claim) -> String {
        let one = |s: &Option<String>| s.clone().unwrap_or_else(|| "(none)".into());
        let list = |l: &[String]| {
            if l.is_empty() {
                "(none)".into()
            } else {
                l.join(" ")
            }
        };
        match claim {
            Claim::Audience => list(&self.aud),
            Claim::Issuer => one(&self.iss),
            Claim::Subject => one(&self.sub),
            Claim::Scope => list(&self.scope),
        }
    }

    /// Whether `claim` differs between `self` and `other` (lists compared as sets: an audience
    /// array reordered is the same audience).
    pub(crate) fn differs(&self, other: &TokenClaims, claim: Claim) -> bool {
        fn set(l: &[String]) -> std::collections::BTreeSet<&String> {
            l.iter().collect()
        }
        match claim {
            Claim::Audience => set(&self.aud) != set(&other.aud),
            Claim::Issuer => self.iss != other.iss,
            Claim::Subject => self.sub != other.sub,
            Claim::Scope => set(&self.scope) != set(&other.scope),
        }
    }

    /// What is wrong with the token at `now` (the file shown as `path`): expired, or not valid
    /// yet beyond [`NBF_SKEW`]. Neither holds the version back (an app may still need its
    /// other files): both mean that whoever writes the token failed to refresh it.
    pub(crate) fn problem(&self, path: &str, now: SystemTime) -> Option<Problem> {
        if let Some(exp) = self.exp
            && exp <= now
        {
            return Some(Problem {
                kind: ProblemKind::TokenExpired,
                message: format!(
                    "{path}: the token on disk expired at {} (its exp claim): whoever writes it \
                     (kubelet, for a projected token) failed to refresh it",
                    text::time_seconds(exp)
                ),
            });
        }
        if let Some(nbf) = self.nbf
            && nbf > now + NBF_SKEW
        {
            return Some(Problem {
                kind: ProblemKind::TokenNotYetValid,
                message: format!(
                    "{path}: the token on disk is not valid before {} (its nbf claim, {} s ahead \
                     of this node's clock): a clock skew between its issuer and this node, or a \
                     token written before its time",
                    text::time_seconds(nbf),
                    nbf.duration_since(now).unwrap_or_default().as_secs()
                ),
            });
        }
        None
    }
}

/// The claims of the JWT that `content` holds; `None` when the file is not one JWT (three
/// base64url segments, a header naming its algorithm, a payload that is a JSON object).
pub(crate) fn claims(content: &[u8]) -> Option<TokenClaims> {
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
    let payload = json(payload)?;
    let scope = match (payload.get("scope"), payload.get("scp")) {
        (Some(Value::String(s)), _) => list(s.split_ascii_whitespace()),
        (_, Some(Value::String(s))) => list(s.split_ascii_whitespace()),
        (_, Some(Value::Array(a))) => list(a.iter().filter_map(Value::as_str)),
        _ => Vec::new(),
    };
    let aud = match payload.get("aud") {
        Some(Value::String(s)) => list([s.as_str()]),
        Some(Value::Array(a)) => list(a.iter().filter_map(Value::as_str)),
        _ => Vec::new(),
    };
    Some(TokenClaims {
        iss: payload.get("iss").and_then(Value::as_str).map(bounded),
        aud,
        sub: payload.get("sub").and_then(Value::as_str).map(bounded),
        scope,
        iat: time(payload.get("iat")),
        nbf: time(payload.get("nbf")),
        exp: time(payload.get("exp")),
    })
}

/// When the JWT that `content` holds expires (its `exp` claim); `None` when the file is not one
/// JWT or has no numeric `exp`.
#[cfg(test)]
pub(crate) fn expiry(content: &[u8]) -> Option<SystemTime> {
    claims(content)?.exp
}

/// A time as `/status` writes it (RFC 3339, `null` when absent).
fn rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&text::time(*t)),
        None => s.serialize_none(),
    }
}

/// A NumericDate claim (seconds since the epoch), when it is one of a plausible range.
fn time(v: Option<&Value>) -> Option<SystemTime> {
    let secs = v?.as_f64()?;
    (0.0..1e11)
        .contains(&secs)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// A claim string as it may be shown: escaped, at most [`CLAIM_LIMIT`] characters.
fn bounded(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(CLAIM_LIMIT).collect();
    let mut out = text::value(&head);
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A list claim as it may be shown: at most [`LIST_LIMIT`] entries, each bounded.
fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut items = items.into_iter();
    let mut out: Vec<String> = items.by_ref().take(LIST_LIMIT).map(bounded).collect();
    if items.next().is_some() {
        out.push("…".into());
    }
    out
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

    fn alg(payload: &str) -> Option<TokenClaims> {
        claims(jwt(r#"{"alg":"RS256"}"#, payload).as_bytes())
    }

    #[test]
    fn every_listed_claim_and_nothing_else() {
        let c = alg(
            r#"{"iss":"https://issuer","aud":"api","sub":"system:serviceaccount:shop:web",
            "scope":"read  write","iat":1700000000,"nbf":1700000000.5,"exp":1900000000,
            "secret":"Zq7notAClaimWeShow"}"#,
        )
        .unwrap();
        let at = |s: f64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s));
        assert_eq!(
            c,
            TokenClaims {
                iss: Some("https://issuer".into()),
                aud: vec!["api".into()],
                sub: Some("system:serviceaccount:shop:web".into()),
                scope: vec!["read".into(), "write".into()],
                iat: at(1.7e9),
                nbf: at(1_700_000_000.5),
                exp: at(1.9e9),
            }
        );
        assert!(
            !format!("{c:?}").contains("Zq7"),
            "an unlisted claim is not kept"
        );
        // aud as an array; scp as an array or a string; scope wins over scp.
        let c = alg(r#"{"aud":["a","b",7],"scp":["x","y"]}"#).unwrap();
        assert_eq!(
            (c.aud, c.scope),
            (vec!["a".into(), "b".into()], vec!["x".into(), "y".into()])
        );
        assert_eq!(alg(r#"{"scp":"x y"}"#).unwrap().scope, ["x", "y"]);
        assert_eq!(alg(r#"{"scope":"s","scp":["x"]}"#).unwrap().scope, ["s"]);
        // Claims of the wrong type are absent, not errors; a token with none is still a token.
        let c = alg(r#"{"iss":5,"sub":["x"],"exp":"soon"}"#).unwrap();
        assert_eq!(c, TokenClaims::default());
    }

    #[test]
    fn claims_are_bounded_and_escaped() {
        let long = "a".repeat(1000);
        let many: Vec<String> = (0..100).map(|i| format!("\"s{i}\"")).collect();
        let c = alg(&format!(
            r#"{{"sub":"{long}","iss":"x\nFAKE LOG LINE\u001b[31m","aud":[{}]}}"#,
            many.join(",")
        ))
        .unwrap();
        let sub = c.sub.unwrap();
        assert_eq!(sub.chars().count(), CLAIM_LIMIT + 1);
        assert!(sub.ends_with('…'));
        assert_eq!(c.iss.as_deref(), Some("x\\nFAKE LOG LINE\\u{1b}[31m"));
        assert_eq!(c.aud.len(), LIST_LIMIT + 1);
        assert_eq!(c.aud.last().map(String::as_str), Some("…"));
    }

    #[test]
    fn changes_of_the_compared_claims() {
        let a = alg(r#"{"aud":["a","b"],"iss":"i","sub":"s","scope":"r w","exp":1}"#).unwrap();
        let reordered =
            alg(r#"{"aud":["b","a"],"iss":"i","sub":"s","scope":"w r","exp":2}"#).unwrap();
        assert!(
            Claim::ALL.iter().all(|c| !a.differs(&reordered, *c)),
            "order and exp do not count"
        );
        let b = alg(r#"{"aud":"c","iss":"i","sub":"s","scope":"r"}"#).unwrap();
        let changed: Vec<_> = Claim::ALL.iter().filter(|c| a.differs(&b, **c)).collect();
        assert_eq!(changed, [&Claim::Audience, &Claim::Scope]);
        assert_eq!(a.shown(Claim::Audience), "a b");
        assert_eq!(TokenClaims::default().shown(Claim::Issuer), "(none)");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let problem = |p: &str| alg(p).unwrap().problem("/t", now).map(|p| p.kind);
        assert_eq!(
            problem(r#"{"exp":1799999999}"#),
            Some(ProblemKind::TokenExpired)
        );
        assert_eq!(
            problem(r#"{"exp":1800000000}"#),
            Some(ProblemKind::TokenExpired)
        );
        assert_eq!(problem(r#"{"exp":1800000001}"#), None);
        assert_eq!(
            problem(r#"{"nbf":1800000030,"exp":1900000000}"#),
            None,
            "within the skew"
        );
        assert_eq!(
            problem(r#"{"nbf":1800003600}"#),
            Some(ProblemKind::TokenNotYetValid)
        );
        assert_eq!(problem(r#"{"sub":"x"}"#), None);
        let msg = alg(r#"{"exp":1}"#)
            .unwrap()
            .problem("/t", now)
            .unwrap()
            .message;
        assert!(
            msg.starts_with("/t: the token on disk expired at 1970-01-01T00:00:01Z"),
            "{msg}"
        );
    }
}
