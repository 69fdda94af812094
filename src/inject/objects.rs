//! Where the pods are: the pod templates of a manifest's objects. A Pod is its own template; the
//! workloads hold one under `spec.template` (CronJob under `spec.jobTemplate.spec.template`); a
//! `List` holds objects. Every other object is left as it is.

use serde_json::Value;

/// A pod template found in a document: the JSON pointer of its template (`""` for a Pod itself)
/// and the name of the object that holds it, as messages show it.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// JSON pointer of the template (an object with `metadata` and `spec`) in the document.
    pub(crate) pointer: String,
    /// `Kind/namespace/name` (`Kind/name` without a namespace).
    pub(crate) shown: String,
    /// The JSON pointer of the object itself (whose own annotations are checked too).
    pub(crate) object: String,
}

/// Where the pod template of an object of `kind` is, relative to the object.
fn template_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "",
        "PodTemplate" => "/template",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return None,
    })
}

/// Every pod template of `doc`, in document order.
pub(crate) fn templates(doc: &Value) -> Vec<Found> {
    let mut out = Vec::new();
    walk(doc, String::new(), &mut out, 0);
    out
}

fn walk(obj: &Value, at: String, out: &mut Vec<Found>, depth: usize) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.ends_with("List") && depth < 8 {
        if let Some(items) = obj.get("items").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{at}/items/{i}"), out, depth + 1);
            }
        }
        return;
    }
    let Some(rel) = template_of(kind) else {
        return;
    };
    let pointer = format!("{at}{rel}");
    if obj.pointer(rel).is_some_and(Value::is_object) {
        out.push(Found {
            pointer,
            shown: shown(obj),
            object: at,
        });
    }
}

/// `Kind/namespace/name` of an object, as messages show it.
pub(crate) fn shown(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str);
    let kind = crate::text::value(s("/kind").unwrap_or("object"));
    let name = s("/metadata/name")
        .map(crate::text::value)
        .or_else(|| s("/metadata/generateName").map(|g| format!("{}*", crate::text::value(g))))
        .unwrap_or_else(|| "(no name)".into());
    match s("/metadata/namespace") {
        Some(ns) => format!("{kind}/{}/{name}", crate::text::value(ns)),
        None => format!("{kind}/{name}"),
    }
}
