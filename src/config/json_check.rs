//! `--verify-json 'POINTER OP VALUE'` (field `verify_json`): a condition on the verify URL's
//! answer read as JSON, checked at start as far as it can be without an answer.
//!
//! POINTER is an RFC 6901 JSON pointer (`/data/reloadConfigSuccess`), OP one of `==`, `!=`,
//! `>=`, VALUE a JSON literal (`true`, `"x"`, `3`, `null`) or `$CHANGE`, the time the verified
//! version changed on disk. `>=` compares numbers or RFC 3339 times, so a VALUE it cannot compare
//! is an error here (exit 2), not a verification that can never pass. The evaluation against an
//! answer is `reload::json_check`'s.

use std::fmt;

use serde_json::Value;

use super::rfc3339;

/// One condition on the verify URL's JSON answer.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCheck {
    /// An RFC 6901 pointer into the answer (`/data/reloadConfigSuccess`).
    pub pointer: String,
    /// How the value found there compares with [`want`](Self::want).
    pub op: JsonOp,
    /// What the value found is compared with.
    pub want: JsonWant,
}

/// The comparison of a [`JsonCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonOp {
    /// `==`: equal (numbers by value: `1` is `1.0`).
    Eq,
    /// `!=`: not equal.
    Ne,
    /// `>=`: a number at least, or an RFC 3339 time not before.
    Ge,
}

/// The right-hand side of a [`JsonCheck`].
#[derive(Debug, Clone, PartialEq)]
pub enum JsonWant {
    /// A JSON literal.
    Value(Value),
    /// `$CHANGE`: when the content of the version being verified changed on disk.
    Change,
}

/// How to write one, for messages.
const FORM: &str = "write POINTER OP VALUE, such as '/data/reloadConfigSuccess == true' or \
                    '/data/lastConfigTime >= $CHANGE'";

/// Reads one expression; the error says what to write instead.
pub(crate) fn parse(expr: &str) -> Result<JsonCheck, String> {
    let s = expr.trim();
    let Some((pointer, rest)) = split(s) else {
        let hint = if ["==", "!=", ">="].iter().any(|op| s.contains(op)) {
            " (spaces around the operator)"
        } else {
            ""
        };
        return Err(format!("not POINTER OP VALUE{hint}: {FORM}"));
    };
    let Some((op, value)) = split(rest) else {
        return Err(format!("no VALUE after '{rest}': {FORM}"));
    };
    check_pointer(pointer)?;
    let op = match op {
        "==" => JsonOp::Eq,
        "!=" => JsonOp::Ne,
        ">=" => JsonOp::Ge,
        other => {
            return Err(format!(
                "'{other}' is not an operator: use ==, != or >= ({FORM})"
            ));
        }
    };
    let want = match value {
        "$CHANGE" => JsonWant::Change,
        v if v.starts_with('$') => {
            return Err(format!("unknown variable {v}: the only one is $CHANGE"));
        }
        v => JsonWant::Value(serde_json::from_str(v).map_err(|_| {
            format!(
                "VALUE {v} is not a JSON literal: true, false, null, a number, a \"quoted \
                 string\" (or $CHANGE)"
            )
        })?),
    };
    if let (JsonOp::Ge, JsonWant::Value(v)) = (op, &want) {
        let comparable = match v {
            Value::Number(_) => true,
            Value::String(s) => rfc3339::parse(s).is_some(),
            _ => false,
        };
        if !comparable {
            return Err(format!(
                ">= compares numbers or RFC 3339 times (\"2026-12-07T22:46:04Z\", $CHANGE): \
                 {value} is neither"
            ));
        }
    }
    Ok(JsonCheck {
        pointer: pointer.to_string(),
        op,
        want,
    })
}

/// `s` at its first whitespace: the word before it, the rest after it.
fn split(s: &str) -> Option<(&str, &str)> {
    s.split_once(char::is_whitespace)
        .map(|(a, b)| (a, b.trim_start()))
}

/// An RFC 6901 pointer: `/` before each token, `~` only as `~0` (a `~`) or `~1` (a `/`).
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "the pointer '{p}' does not start with / (RFC 6901: '/{p}', each key after a /)"
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "the pointer '{p}' has a ~ that is not ~0 (for ~) or ~1 (for /)"
            ));
        }
    }
    Ok(())
}

impl fmt::Display for JsonOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonOp::Eq => "==",
            JsonOp::Ne => "!=",
            JsonOp::Ge => ">=",
        })
    }
}

impl fmt::Display for JsonWant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonWant::Value(v) => write!(f, "{v}"),
            JsonWant::Change => f.write_str("$CHANGE"),
        }
    }
}

impl fmt::Display for JsonCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.pointer, self.op, self.want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_are_read() {
        let ok = |p: &str, op, want| {
            Ok(JsonCheck {
                pointer: p.into(),
                op,
                want,
            })
        };
        let v = JsonWant::Value;
        let cases: Vec<(&str, Result<JsonCheck, String>)> = vec![
            (
                "/data/reloadConfigSuccess == true",
                ok("/data/reloadConfigSuccess", JsonOp::Eq, v(json!(true))),
            ),
            (
                "  /data/lastConfigTime   >=\t$CHANGE ",
                ok("/data/lastConfigTime", JsonOp::Ge, JsonWant::Change),
            ),
            (
                "/status != \"down\"",
                ok("/status", JsonOp::Ne, v(json!("down"))),
            ),
            ("/a b == \"x y\"", Err("'b' is not an operator".into())),
            ("/n >= 3", ok("/n", JsonOp::Ge, v(json!(3)))),
            ("/n >= -1.5e3", ok("/n", JsonOp::Ge, v(json!(-1500.0)))),
            ("/x == null", ok("/x", JsonOp::Eq, v(Value::Null))),
            ("/x == [1, 2]", ok("/x", JsonOp::Eq, v(json!([1, 2])))),
            ("/a~1b/~0c == 1", ok("/a~1b/~0c", JsonOp::Eq, v(json!(1)))),
            (
                "/t >= \"2026-12-07T22:46:04Z\"",
                ok("/t", JsonOp::Ge, v(json!("2026-12-07T22:46:04Z"))),
            ),
            ("/a==true", Err("spaces around the operator".into())),
            ("", Err("not POINTER OP VALUE".into())),
            ("/a ==", Err("no VALUE after '=='".into())),
            ("data/x == true", Err("does not start with /".into())),
            ("/a~2 == 1", Err("~0 (for ~) or ~1".into())),
            ("/a = true", Err("'=' is not an operator".into())),
            ("/a > 3", Err("'>' is not an operator".into())),
            ("/a == yes", Err("VALUE yes is not a JSON literal".into())),
            ("/a == 'x'", Err("is not a JSON literal".into())),
            ("/a >= $NOW", Err("unknown variable $NOW".into())),
            (
                "/a >= true",
                Err(">= compares numbers or RFC 3339 times".into()),
            ),
            ("/a >= \"soon\"", Err("\"soon\" is neither".into())),
            ("/a >= null", Err("null is neither".into())),
        ];
        for (expr, want) in cases {
            match (parse(expr), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{expr}"),
                (Err(got), Err(want)) => assert!(got.contains(&want), "{expr}: {got}"),
                (got, want) => panic!("{expr}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_expression_shows_as_written() {
        for expr in ["/data/lastConfigTime >= $CHANGE", "/s == \"ok\"", "/n != 3"] {
            assert_eq!(parse(expr).unwrap().to_string(), expr);
        }
    }
}
