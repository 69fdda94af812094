//! Verification after a reload: did the app really take the new version?
//!
//! The verify URL is probed with GET until it answers 2xx (and, with `--verify-contains`, holds
//! the expected text), a few times with growing pauses, because an app needs a moment to reload.
//! Only a passing verification makes the target count as having applied the version.

use std::time::Duration;

use hyper::Method;

use crate::client::request;
use crate::config::Verify;

/// Probes per verification.
const PROBES: u32 = 5;
/// Pause before the second probe; doubles after each.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Probes `v` until it passes or the probes are used up; the message says what was seen.
pub(crate) async fn verify(v: &Verify) -> Result<String, String> {
    let label = v.endpoint.label();
    let mut pause = FIRST_PAUSE;
    let mut last = String::new();
    for probe in 1..=PROBES {
        match request(&v.endpoint, Method::GET, &[], v.timeout).await {
            Ok((status, body)) if (200..300).contains(&status) => match &v.contains {
                Some(text) if !contains(&body, text.as_bytes()) => {
                    last = format!(
                        "GET {label} answered {status} without the expected text (--verify-contains)"
                    );
                }
                _ => {
                    return Ok(format!(
                        "verified: GET {label} answered {status} (probe {probe})"
                    ));
                }
            },
            Ok((status, _)) => last = format!("GET {label} answered {status}"),
            Err(e) => last = format!("GET {label}: {e}"),
        }
        if probe < PROBES {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Err(format!(
        "reloaded, but verification failed after {PROBES} probes: {last}"
    ))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
