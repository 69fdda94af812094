//! Verification after a reload: did the app really take the new version?
//!
//! The verify URL is probed with GET until it answers 2xx (and, with `--verify-contains`, holds
//! the expected text; with `--verify-json`, an answer read as JSON on which every condition holds),
//! a few times with growing pauses, because an app needs a moment to reload. Only a passing
//! verification makes the target count as having applied the version.

use std::time::{Duration, SystemTime};

use hyper::Method;

use super::json_check;
use crate::client::{BODY_LIMIT, request, request_limited};
use crate::config::Verify;

/// Probes per verification.
const PROBES: u32 = 5;
/// Pause before the second probe; doubles after each.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Probes `v` until it passes or the probes are used up; the message says what was seen.
/// `change`: when the content of the version verified changed (`$CHANGE` of `--verify-json`).
pub(crate) async fn verify(v: &Verify, change: Option<SystemTime>) -> Result<String, String> {
    let mut pause = FIRST_PAUSE;
    let mut last = String::new();
    for n in 1..=PROBES {
        match probe(v, change).await {
            Ok(seen) => return Ok(format!("verified: {seen} (probe {n})")),
            Err(e) => last = e,
        }
        if n < PROBES {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Err(format!(
        "reloaded, but verification failed after {PROBES} probes: {last}"
    ))
}

/// One probe of `v`: what passed, or what did not (the doctor's look, and each of
/// [`verify`]'s).
pub(crate) async fn probe(v: &Verify, change: Option<SystemTime>) -> Result<String, String> {
    let label = v.endpoint.label();
    // Conditions on JSON need all of it: an answer cut at the bound is an error, not a
    // document that ends early.
    let answer = if v.json.is_empty() {
        request(&v.endpoint, Method::GET, &[], v.timeout).await
    } else {
        request_limited(&v.endpoint, Method::GET, &[], v.timeout, BODY_LIMIT).await
    };
    match answer {
        Ok((status, body)) if (200..300).contains(&status) => match &v.contains {
            Some(text) if !contains(&body, text.as_bytes()) => Err(format!(
                "GET {label} answered {status} without the expected text (--verify-contains)"
            )),
            _ => match failed_json(v, &body, change) {
                Some(e) => Err(format!("GET {label} answered {status}: {e}")),
                None => Ok(format!("GET {label} answered {status}{}", held(v))),
            },
        },
        Ok((status, _)) => Err(format!("GET {label} answered {status}")),
        Err(e) => Err(format!("GET {label}: {e}")),
    }
}

/// What of `--verify-json` does not hold on `body` (nothing without conditions).
fn failed_json(v: &Verify, body: &[u8], change: Option<SystemTime>) -> Option<String> {
    if v.json.is_empty() {
        return None;
    }
    json_check::evaluate(&v.json, body, change).err()
}

/// The conditions that held, for the message of a passing verification.
fn held(v: &Verify) -> String {
    if v.json.is_empty() {
        return String::new();
    }
    let all: Vec<String> = v.json.iter().map(ToString::to_string).collect();
    format!(": {}", all.join(", "))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
