//! `--verify-json`'s conditions evaluated on a verify answer: what the app itself reports about
//! its reload (Prometheus's `/api/v1/status/runtimeinfo`: `/data/reloadConfigSuccess == true`,
//! `/data/lastConfigTime >= $CHANGE`).
//!
//! Pure: the answer's bytes and the version's change time in, the failed conditions out. The
//! answer is another program's text: what is quoted from it is bounded and escaped.

use std::cmp::Ordering;
use std::time::SystemTime;

use serde_json::{Number, Value};

use crate::config::rfc3339::{self, Time};
use crate::config::{JsonCheck, JsonOp, JsonWant};

/// Most characters of a value found quoted in a message.
const SHOWN: usize = 80;

/// Whether every condition holds on `body`; otherwise each one that does not, with the value
/// found. `change`: when the verified version's content changed (`$CHANGE`).
pub(crate) fn evaluate(
    checks: &[JsonCheck],
    body: &[u8],
    change: Option<SystemTime>,
) -> Result<(), String> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not JSON ({e}), for --verify-json"))?;
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| check(c, &doc, change).err())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// One condition: `Err` says what was found and what was wanted.
fn check(c: &JsonCheck, doc: &Value, change: Option<SystemTime>) -> Result<(), String> {
    let want = match (&c.want, change) {
        (JsonWant::Change, Some(t)) => {
            format!("want {} $CHANGE ({})", c.op, crate::text::time_nanos(t))
        }
        (JsonWant::Change, None) => format!("want {} $CHANGE (not known)", c.op),
        (JsonWant::Value(v), _) => format!("want {} {}", c.op, shown(v)),
    };
    let Some(found) = doc.pointer(&c.pointer) else {
        return Err(format!("{} is absent, {want}", c.pointer));
    };
    let failed = |why: &str| Err(format!("{} is {}, {want}{why}", c.pointer, shown(found)));
    let order = match &c.want {
        JsonWant::Change => {
            let Some(change) = change else {
                return failed(": the version's change time is not known");
            };
            match time(found) {
                Some(t) => t.cmp_coarse(Time::from_system(change)),
                None => return failed(" (not an RFC 3339 time)"),
            }
        }
        JsonWant::Value(want) => match (c.op, found, want) {
            (JsonOp::Eq | JsonOp::Ne, _, _) if same(found, want) => Ordering::Equal,
            // Not equal: the order does not matter to == and !=.
            (JsonOp::Eq | JsonOp::Ne, _, _) => Ordering::Less,
            (JsonOp::Ge, Value::Number(a), Value::Number(b)) => number_cmp(a, b),
            (JsonOp::Ge, Value::String(_), Value::String(_)) => match (time(found), time(want)) {
                (Some(a), Some(b)) => a.cmp_coarse(b),
                _ => return failed(" (not an RFC 3339 time)"),
            },
            (JsonOp::Ge, _, Value::String(_)) => return failed(" (not an RFC 3339 time)"),
            (JsonOp::Ge, _, _) => return failed(" (not a number)"),
        },
    };
    let holds = match c.op {
        JsonOp::Eq => order == Ordering::Equal,
        JsonOp::Ne => order != Ordering::Equal,
        JsonOp::Ge => order != Ordering::Less,
    };
    if holds { Ok(()) } else { failed("") }
}

/// Equal as JSON values, numbers by value (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => number_cmp(a, b) == Ordering::Equal,
        _ => a == b,
    }
}

/// Integers exactly, anything else as floating point (NaN cannot be in JSON).
fn number_cmp(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let f = |n: &Number| n.as_f64().unwrap_or(f64::NAN);
            f(a).partial_cmp(&f(b)).unwrap_or(Ordering::Less)
        }
    }
}

/// A JSON string read as an RFC 3339 time.
fn time(v: &Value) -> Option<Time> {
    rfc3339::parse(v.as_str()?)
}

/// A value as JSON, cut after [`SHOWN`] characters, with the control characters JSON leaves
/// as they are (DEL, C1) escaped.
fn shown(v: &Value) -> String {
    let json = v.to_string();
    let mut out = String::new();
    for (i, c) in json.chars().enumerate() {
        if i == SHOWN {
            out.push_str(&format!("... ({} bytes)", json.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-12-07T22:46:04.700Z.
    fn change() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_796_683_564, 700_000_000)
    }

    fn run(expr: &str, body: &str) -> Result<(), String> {
        let c = crate::config::json_check::parse(expr).unwrap();
        evaluate(&[c], body.as_bytes(), Some(change()))
    }

    #[test]
    fn conditions_hold_or_say_what_was_found() {
        let prom = r#"{"status":"success","data":{"reloadConfigSuccess":false,
            "lastConfigTime":"2026-12-07T22:46:04Z","n":3,"f":2.5,"s":"ok","z":null,
            "a~/b":1,"list":[1,2]}}"#;
        let cases: &[(&str, &str, Result<(), &str>)] = &[
            ("/status == \"success\"", prom, Ok(())),
            (
                "/status != \"success\"",
                prom,
                Err("/status is \"success\", want != \"success\""),
            ),
            (
                "/data/reloadConfigSuccess == true",
                prom,
                Err("/data/reloadConfigSuccess is false, want == true"),
            ),
            ("/data/reloadConfigSuccess != true", prom, Ok(())),
            // Whole seconds against the change's nanoseconds: the same second is not before.
            ("/data/lastConfigTime >= $CHANGE", prom, Ok(())),
            (
                "/data/lastConfigTime >= $CHANGE",
                r#"{"data":{"lastConfigTime":"2026-12-07T22:46:03Z"}}"#,
                Err(
                    "/data/lastConfigTime is \"2026-12-07T22:46:03Z\", want >= $CHANGE \
                     (2026-12-07T22:46:04.700000000Z)",
                ),
            ),
            (
                "/data/lastConfigTime >= $CHANGE",
                r#"{"data":{"lastConfigTime":"2026-12-07T23:46:04.6+01:00"}}"#,
                Err("is \"2026-12-07T23:46:04.6+01:00\", want >= $CHANGE"),
            ),
            (
                "/data/lastConfigTime >= $CHANGE",
                r#"{"data":{"lastConfigTime":"0001-01-01T00:00:00Z"}}"#,
                Err("is \"0001-01-01T00:00:00Z\""),
            ),
            (
                "/data/lastConfigTime >= \"2026-01-01T00:00:00Z\"",
                prom,
                Ok(()),
            ),
            (
                "/data/s >= $CHANGE",
                prom,
                Err(
                    "/data/s is \"ok\", want >= $CHANGE (2026-12-07T22:46:04.700000000Z) (not an RFC 3339 time)",
                ),
            ),
            (
                "/data/n >= $CHANGE",
                prom,
                Err("/data/n is 3, want >= $CHANGE"),
            ),
            ("/data/n >= 3", prom, Ok(())),
            ("/data/n >= 3.0", prom, Ok(())),
            ("/data/n >= 4", prom, Err("/data/n is 3, want >= 4")),
            ("/data/f >= 2", prom, Ok(())),
            ("/data/f >= 2.6", prom, Err("/data/f is 2.5, want >= 2.6")),
            ("/data/n == 3.0", prom, Ok(())),
            ("/data/n != 3", prom, Err("/data/n is 3, want != 3")),
            (
                "/data/s >= 1",
                prom,
                Err("/data/s is \"ok\", want >= 1 (not a number)"),
            ),
            (
                "/data/n >= \"2026-01-01T00:00:00Z\"",
                prom,
                Err("/data/n is 3, want >= \"2026-01-01T00:00:00Z\" (not an RFC 3339 time)"),
            ),
            ("/data/z == null", prom, Ok(())),
            ("/data/list == [1, 2]", prom, Ok(())),
            ("/data/a~0~1b == 1", prom, Ok(())),
            ("/data/list/1 == 2", prom, Ok(())),
            ("/data/n == \"3\"", prom, Err("/data/n is 3, want == \"3\"")),
            (
                "/data/missing == true",
                prom,
                Err("/data/missing is absent, want == true"),
            ),
            ("/data/missing != true", prom, Err("is absent")),
            ("/status == true", "<html>", Err("the answer is not JSON (")),
            ("/status == true", "", Err("the answer is not JSON (")),
        ];
        for (expr, body, want) in cases {
            match (run(expr, body), want) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.contains(want), "{expr}: {got}"),
                (got, want) => panic!("{expr}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn every_failed_condition_is_said_and_an_unknown_change_fails() {
        let checks: Vec<JsonCheck> = ["/a == 1", "/b == 2", "/c == 3"]
            .iter()
            .map(|e| crate::config::json_check::parse(e).unwrap())
            .collect();
        let err = evaluate(&checks, br#"{"a":1,"b":0}"#, None).unwrap_err();
        assert_eq!(err, "/b is 0, want == 2; /c is absent, want == 3");
        let change = [crate::config::json_check::parse("/t >= $CHANGE").unwrap()];
        let err = evaluate(&change, br#"{"t":"2026-12-07T22:46:04Z"}"#, None).unwrap_err();
        assert!(err.contains("change time is not known"), "{err}");
    }

    #[test]
    fn what_is_quoted_from_the_answer_is_bounded_and_escaped() {
        let long = format!(r#"{{"s":"{}"}}"#, "x".repeat(10_000));
        let err = run("/s == \"y\"", &long).unwrap_err();
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("... (10002 bytes)"), "{err}");
        let err = run("/s == \"y\"", "{\"s\":\"a\\u001b[31m\\u0085b\\nc\u{7f}\"}").unwrap_err();
        assert!(!err.chars().any(char::is_control), "{err:?}");
        assert!(err.contains(r#""a\u001b[31m\u{85}b\nc\u{7f}""#), "{err}");
    }
}
