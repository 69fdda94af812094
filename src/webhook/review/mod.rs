//! One AdmissionReview in, one answer out (no I/O here: the server reads the body and writes
//! the answer).
//!
//! The webhook never keeps a pod out because of its own trouble: every review whose `request.uid`
//! can be read is answered `allowed: true`, with a patch when the pod is injected, and with a
//! short warning (escaped, at most [`WARNING_CHARS`] characters; `kubectl` shows it) when it was
//! not because of something the operator should know (a review of something else than a Pod
//! CREATE, another review version, a pod that cannot be injected). Without a readable uid there
//! is nothing to answer to: 400, and the API server applies the webhook's `failurePolicy`
//! (`Ignore`: the pod is created as it is). The same goes for the server's own 408, 413 and 503.
//!
//! What is read of the pod for logs is its kind, namespace and name only, escaped and bounded.
//! `dryRun` changes nothing: the webhook has no side effect to skip.

use base64ct::Encoding;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::patch;
use crate::inject::Problem;
use crate::report::metrics::ReviewResult;
use crate::text;

/// The review version answered.
pub(crate) const API_VERSION: &str = "admission.k8s.io/v1";
/// Longest warning, in characters (the API server truncates longer ones).
pub(crate) const WARNING_CHARS: usize = 200;
/// Longest `request.uid` echoed (the API server sends a UUID).
const MAX_UID: usize = 128;
/// Longest kind, namespace or name shown (a name is at most 253 characters once validated;
/// mutating webhooks see objects before validation).
const SHOWN_CHARS: usize = 253;

/// The answer to one review.
#[derive(Debug)]
pub(crate) struct Answer {
    /// 200, or 400 for a body without a readable uid.
    pub status: StatusCode,
    /// An AdmissionReview (JSON), or plain text with a 400.
    pub body: String,
    /// What it counts as.
    pub result: ReviewResult,
    /// What the log line says of the object.
    pub about: About,
    /// The warning given, or why the body was refused.
    pub why: Option<String>,
}

/// What is shown of a reviewed object: its kind, namespace and name (escaped, bounded), and
/// whether the review was a dry run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct About {
    /// `request.kind.kind`.
    pub kind: String,
    /// The object's namespace, or the request's (a pod being created often has none).
    pub namespace: String,
    /// The object's name; `generateName` followed by `*` when it has none yet.
    pub name: String,
    /// `request.dryRun`.
    pub dry_run: bool,
}

impl About {
    fn of(request: &Value) -> About {
        let meta = &request["object"]["metadata"];
        let str_of = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(shown);
        let name = str_of(&meta["name"])
            .or_else(|| str_of(&request["name"]))
            .or_else(|| str_of(&meta["generateName"]).map(|g| format!("{g}*")))
            .unwrap_or_default();
        About {
            kind: str_of(&request["kind"]["kind"]).unwrap_or_default(),
            namespace: str_of(&meta["namespace"])
                .or_else(|| str_of(&request["namespace"]))
                .unwrap_or_default(),
            name,
            dry_run: request["dryRun"].as_bool().unwrap_or(false),
        }
    }
}

/// The answer to the review `body`: the pod it holds goes through `inject`
/// ([`crate::inject::pod`] with the webhook's flags).
pub(crate) fn answer(
    body: &[u8],
    inject: impl FnOnce(&Value) -> Result<Option<Value>, Problem>,
) -> Answer {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        // serde_json's message names a line and column, never the content.
        Err(e) => return malformed(format!("the body is not JSON: {e}")),
    };
    let request = &review["request"];
    let Some(uid) = request["uid"]
        .as_str()
        .filter(|u| !u.is_empty() && u.len() <= MAX_UID)
    else {
        return malformed(format!(
            "request.uid is missing, empty or longer than {MAX_UID} bytes"
        ));
    };
    let about = About::of(request);
    let version = review["apiVersion"].as_str().unwrap_or("");
    let reply = Reply {
        uid,
        // A review of another version is answered in its own (v1beta1's answer has the same
        // fields), so that the API server can read it.
        version: if version.starts_with("admission.k8s.io/") {
            version
        } else {
            API_VERSION
        },
        about,
    };
    if version != API_VERSION || review["kind"] != "AdmissionReview" {
        let why = format!(
            "a review of apiVersion '{}' kind '{}': only {API_VERSION} AdmissionReview is served",
            shown(version),
            shown(review["kind"].as_str().unwrap_or(""))
        );
        return reply.allowed(ReviewResult::Unsupported, None, Some(why));
    }
    if !is_pod_create(request) {
        let why = format!(
            "only Pod CREATE is handled, not {} {}{}: check the MutatingWebhookConfiguration's rules",
            shown(request["operation"].as_str().unwrap_or("?")),
            reply.about.kind,
            match request["subResource"].as_str() {
                Some(s) if !s.is_empty() => format!(" (subresource {})", shown(s)),
                _ => String::new(),
            }
        );
        return reply.allowed(ReviewResult::NotPod, None, Some(why));
    }
    let pod = &request["object"];
    if !pod.is_object() {
        let why = "request.object is not a Pod object".to_string();
        return reply.allowed(ReviewResult::Unsupported, None, Some(why));
    }
    match inject(pod) {
        Ok(None) => reply.allowed(ReviewResult::Unchanged, None, None),
        Ok(Some(new)) => match patch::diff(pod, &new) {
            ops if ops.is_empty() => reply.allowed(ReviewResult::Unchanged, None, None),
            ops => match serde_json::to_vec(&ops) {
                Ok(bytes) => reply.allowed(ReviewResult::Injected, Some(bytes), None),
                Err(e) => {
                    let why = format!("the patch cannot be written: {e}");
                    reply.allowed(ReviewResult::Error, None, Some(why))
                }
            },
        },
        Err(problem) => {
            let why = format!(
                "the sidecar was not injected: {}",
                text::value(&problem.to_string())
            );
            reply.allowed(ReviewResult::Error, None, Some(why))
        }
    }
}

/// A review of a Pod being created (not a subresource of one).
fn is_pod_create(request: &Value) -> bool {
    let kind = &request["kind"];
    kind["group"] == ""
        && kind["version"] == "v1"
        && kind["kind"] == "Pod"
        && request["resource"]["resource"] == "pods"
        && request["subResource"].as_str().unwrap_or("").is_empty()
        && request["operation"] == "CREATE"
}

/// The review being answered.
struct Reply<'a> {
    uid: &'a str,
    version: &'a str,
    about: About,
}

impl Reply<'_> {
    /// `allowed: true`, with the JSON Patch `patch` and the warning `why` if any.
    fn allowed(self, result: ReviewResult, patch: Option<Vec<u8>>, why: Option<String>) -> Answer {
        let mut response = json!({"uid": self.uid, "allowed": true});
        if let Some(p) = patch {
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64ct::Base64::encode_string(&p));
        }
        let why = why.map(|w| bounded(&format!("secret-reloader: {w}")));
        if let Some(w) = &why {
            response["warnings"] = json!([w]);
        }
        let review = json!({
            "apiVersion": self.version,
            "kind": "AdmissionReview",
            "response": response,
        });
        Answer {
            status: StatusCode::OK,
            body: review.to_string(),
            result,
            about: self.about,
            why,
        }
    }
}

/// A 400: the body has no review that can be answered.
fn malformed(why: String) -> Answer {
    let why = bounded(&why);
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: format!(
            "malformed AdmissionReview: {why} (the API server applies the webhook's failurePolicy)\n"
        ),
        result: ReviewResult::Malformed,
        about: About::default(),
        why: Some(why),
    }
}

/// `s` escaped and cut to [`SHOWN_CHARS`] characters.
fn shown(s: &str) -> String {
    cut(&text::value(s), SHOWN_CHARS)
}

/// A warning made of escaped pieces, cut to [`WARNING_CHARS`] characters.
fn bounded(s: &str) -> String {
    cut(s, WARNING_CHARS)
}

fn cut(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars.saturating_sub(1)) {
        Some((end, _)) if s[end..].chars().count() > 1 => format!("{}…", &s[..end]),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests;
