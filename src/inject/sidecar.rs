//! The sidecar a [`Plan`] makes, put into a pod template, and taken out again. What injecting
//! changes besides adding the container (`shareProcessNamespace`, the volumes of the environment
//! groups and of the state file, the PodMonitor's label, fields it had to create) is written into
//! the annotation `secret-reloader.io/injected`, so that `--remove` restores the template exactly
//! and injecting an injected template again gives the same template.

use serde_json::{Map, Value, json};

use super::Layout;
use super::annotations::{INJECTED, UNWATCHED};
use super::derive::{Plan, SIDECAR};

/// The label the PodMonitor of deploy/base selects.
pub const MONITOR_LABEL: &str = "secret-reloader/sidecar";
/// The sidecar's state volume (what was delivered, kept across the sidecar's restarts).
pub(crate) const STATE_VOLUME: &str = "secret-reloader-state";
const STATE_DIR: &str = "/run/secret-reloader";

/// What injecting changed besides the container, as the annotation records it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Record {
    /// Volumes added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<String>,
    /// What `shareProcessNamespace` was (`"absent"` or `"false"`) when injecting set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    share_process_namespace: Option<String>,
    /// Whether the PodMonitor's label was added.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    label: bool,
    /// Fields (JSON pointers in the template) that injecting created, removed when empty again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    created: Vec<String>,
}

/// Puts the sidecar into `template` (an object, which holds none).
pub(crate) fn put(template: &mut Value, plan: &Plan, layout: Layout, image: &str) -> Option<()> {
    let mut rec = Record::default();
    let container = container(plan, layout, image);
    let needs_pid_ns = plan.process.is_some();
    let t = template.as_object_mut()?;
    let spec = object_at(t, "spec", "/spec", &mut rec.created)?;
    if needs_pid_ns && spec.get("shareProcessNamespace") != Some(&Value::Bool(true)) {
        rec.share_process_namespace = Some(match spec.get("shareProcessNamespace") {
            None => "absent".into(),
            Some(v) => v.to_string(),
        });
        spec.insert("shareProcessNamespace".into(), true.into());
    }
    let (field, at_front) = match layout {
        Layout::Native => ("initContainers", true),
        Layout::Classic => ("containers", false),
    };
    let list = array_at(spec, field, &format!("/spec/{field}"), &mut rec.created)?;
    if at_front {
        list.insert(0, container);
    } else {
        list.push(container);
    }
    let volumes = array_at(spec, "volumes", "/spec/volumes", &mut rec.created)?;
    for g in &plan.env {
        let mut v = Map::new();
        v.insert("name".into(), g.volume.clone().into());
        if let Value::Object(src) = &g.source {
            v.extend(src.clone());
        }
        volumes.push(Value::Object(v));
        rec.volumes.push(g.volume.clone());
    }
    volumes
        .push(json!({"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}));
    rec.volumes.push(STATE_VOLUME.into());
    let meta = object_at(t, "metadata", "/metadata", &mut rec.created)?;
    let labels = object_at(meta, "labels", "/metadata/labels", &mut rec.created)?;
    if !labels.contains_key(MONITOR_LABEL) {
        labels.insert(MONITOR_LABEL.into(), "true".into());
        rec.label = true;
    }
    let annotations = object_at(
        meta,
        "annotations",
        "/metadata/annotations",
        &mut rec.created,
    )?;
    // The injector's own output: whatever stood there is replaced (or removed).
    annotations.remove(UNWATCHED);
    if !plan.unwatched.is_empty() {
        annotations.insert(UNWATCHED.into(), plan.unwatched.join("\n").into());
    }
    let record = serde_json::to_string(&rec).unwrap_or_default();
    annotations.insert(INJECTED.into(), record.into());
    Some(())
}

/// Takes out what [`put`] put in. `Err` when the record cannot be read (the template is left as
/// it is).
pub(crate) fn take_out(template: &mut Value) -> Result<bool, String> {
    let Some(raw) = template
        .pointer(&format!(
            "/metadata/annotations/{}",
            INJECTED.replace('/', "~1")
        ))
        .and_then(Value::as_str)
    else {
        return Ok(false);
    };
    let rec: Record = serde_json::from_str(raw).map_err(|e| {
        format!("annotation {INJECTED} is not what the injector writes ({e}): remove the sidecar by hand")
    })?;
    let Some(t) = template.as_object_mut() else {
        return Ok(false);
    };
    if let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) {
        for field in ["initContainers", "containers"] {
            if let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|c| c.get("name").and_then(Value::as_str) != Some(SIDECAR));
            }
        }
        if let Some(list) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
            list.retain(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(|n| !rec.volumes.iter().any(|r| r == n))
            });
        }
        match rec.share_process_namespace.as_deref() {
            Some("absent") => {
                spec.remove("shareProcessNamespace");
            }
            Some(v) => {
                let v = serde_json::from_str(v).unwrap_or(Value::Bool(false));
                spec.insert("shareProcessNamespace".into(), v);
            }
            None => {}
        }
    }
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        if let (true, Some(l)) = (
            rec.label,
            meta.get_mut("labels").and_then(Value::as_object_mut),
        ) {
            l.remove(MONITOR_LABEL);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(INJECTED);
            a.remove(UNWATCHED);
        }
    }
    // Innermost first: /metadata/labels before /metadata.
    for at in rec.created.iter().rev() {
        let (parent, field) = at.rsplit_once('/').unwrap_or(("", at));
        let empty = template.pointer(at).is_some_and(|v| match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        });
        if empty {
            let holder = if parent.is_empty() {
                Some(&mut *template)
            } else {
                template.pointer_mut(parent)
            };
            if let Some(Value::Object(m)) = holder {
                m.remove(field);
            }
        }
    }
    Ok(true)
}

/// The sidecar container.
fn container(plan: &Plan, layout: Layout, image: &str) -> Value {
    let mut args = vec![format!("--config-json={}", config(plan))];
    // The daemon takes a declared identity whole (uid and gid, and the groups): without the gid it
    // learns all of it from the app's process.
    if let Some(gid) = plan.gid {
        args.push(format!("--app-uid={}", plan.uid));
        args.push(format!("--app-gid={gid}"));
        if !plan.groups.is_empty() {
            let g: Vec<String> = plan.groups.iter().map(u64::to_string).collect();
            args.push(format!("--app-groups={}", g.join(",")));
        }
    }
    if let Some(s) = &plan.action.splay {
        args.push(format!("--splay={s}"));
    }
    args.push(format!("--state-file={STATE_DIR}/state.json"));
    let mut mounts: Vec<Value> = Vec::new();
    for f in &plan.files {
        for (vol, path) in &f.mounts {
            mounts.push(json!({"name": vol, "mountPath": path, "readOnly": true}));
        }
    }
    for g in &plan.env {
        mounts.push(json!({"name": g.volume, "mountPath": g.path(), "readOnly": true}));
    }
    mounts.push(json!({"name": STATE_VOLUME, "mountPath": STATE_DIR}));
    let mut security = Map::new();
    security.insert("runAsUser".into(), plan.uid.into());
    if let Some(gid) = plan.gid {
        security.insert("runAsGroup".into(), gid.into());
    }
    if let Value::Object(rest) = json!({
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }) {
        security.extend(rest);
    }
    let probe = |path: &str, period: u32, failures: u32| json!({"httpGet": {"path": path, "port": "reloader"}, "periodSeconds": period, "failureThreshold": failures});
    let mut c = json!({
        "name": SIDECAR,
        "image": image,
        "args": args,
        "ports": [{"name": "reloader", "containerPort": 9533}],
        "securityContext": Value::Object(security),
        "startupProbe": probe("/startupz", 1, 120),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 3),
        "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}},
        "volumeMounts": mounts,
    });
    if let (Layout::Native, Value::Object(m)) = (layout, &mut c) {
        m.insert("restartPolicy".into(), "Always".into());
    }
    c
}

/// The sidecar's watch groups, as `--config-json` takes them.
fn config(plan: &Plan) -> String {
    let mut groups = Vec::new();
    for f in &plan.files {
        let watch: Vec<&str> = f.mounts.iter().map(|(_, p)| p.as_str()).collect();
        let mut target = match &plan.action.reload_url {
            Some(url) => json!({"type": "http", "url": url}),
            None => {
                let mut t = json!({"type": "signal", "process_name": plan.process});
                if let Value::Object(m) = &mut t {
                    let a = &plan.action;
                    for (field, value) in [
                        ("signal", &a.signal),
                        ("applied_when", &a.applied_when),
                        ("worker_drain_timeout", &a.worker_drain_timeout),
                    ] {
                        if let Some(v) = value {
                            m.insert(field.into(), v.clone().into());
                        }
                    }
                }
                t
            }
        };
        if let Value::Object(m) = &mut target {
            if let Some(u) = &plan.action.verify_url {
                m.insert("verify_url".into(), u.clone().into());
            }
            if !plan.action.verify_json.is_empty() {
                m.insert("verify_json".into(), plan.action.verify_json.clone().into());
            }
            if let Some(e) = &plan.action.verify_served_cert {
                m.insert("verify_served_cert".into(), e.clone().into());
            }
        }
        groups.push(json!({"name": f.name, "watch": watch, "targets": [target]}));
    }
    for g in &plan.env {
        let signal = if plan.action.restart_on_env_change {
            "TERM"
        } else {
            "none"
        };
        groups.push(json!({
            "name": g.volume.trim_start_matches("sr-"),
            "watch": [g.path()],
            "consumed_as": "env",
            "targets": [{"type": "signal", "process_name": plan.process, "signal": signal}],
        }));
    }
    json!({"groups": groups}).to_string()
}

/// The object at `t[field]`, created (and noted in `created` as `at`) when absent.
fn object_at<'a>(
    t: &'a mut Map<String, Value>,
    field: &str,
    at: &str,
    created: &mut Vec<String>,
) -> Option<&'a mut Map<String, Value>> {
    if !t.get(field).is_some_and(Value::is_object) {
        t.insert(field.into(), Value::Object(Map::new()));
        created.push(at.into());
    }
    t.get_mut(field).and_then(Value::as_object_mut)
}

/// The array at `t[field]`, created (and noted) when absent.
fn array_at<'a>(
    t: &'a mut Map<String, Value>,
    field: &str,
    at: &str,
    created: &mut Vec<String>,
) -> Option<&'a mut Vec<Value>> {
    if !t.get(field).is_some_and(Value::is_array) {
        t.insert(field.into(), Value::Array(Vec::new()));
        created.push(at.into());
    }
    t.get_mut(field).and_then(Value::as_array_mut)
}
