//! What the pod's spec says, read into a [`Plan`]: the app container, its identity (container
//! level over pod level), the volumes it mounts (what to watch), the Secrets and ConfigMaps it takes
//! as environment variables, and the process to signal. Every "cannot" is an error naming the field
//! and the fix; nothing is guessed (an undeclared uid is never taken for root).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::annotations::{ActionWishes, Wishes};

/// The sidecar container's name.
pub const SIDECAR: &str = "secret-reloader";
/// Where the sidecar mounts the Secrets and ConfigMaps the app takes as environment variables.
pub const ENV_MOUNTS: &str = "/var/run/secret-reloader/env";
/// The auto-mounted service account token's path (its volume, `kube-api-access-*`, is skipped
/// unless a group names it: kubelet refreshes the token hourly, the app's client rereads it).
const SA_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the sidecar will be.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The app container's name.
    pub(crate) app: String,
    pub(crate) uid: u32,
    pub(crate) gid: Option<u32>,
    /// Supplementary groups: the pod's supplementalGroups and fsGroup.
    pub(crate) groups: Vec<u64>,
    /// Watch groups of files the app reads.
    pub(crate) files: Vec<FileGroup>,
    /// Watch groups of Secrets and ConfigMaps the app took as environment variables.
    pub(crate) env: Vec<EnvGroup>,
    /// The process to signal (`None` with a reload URL and no environment group).
    pub(crate) process: Option<String>,
    /// The annotations' action settings, validated.
    pub(crate) action: ActionWishes,
    /// Said on stderr.
    pub(crate) warnings: Vec<String>,
    /// Mounts kubelet never updates (`subPath`): not watched, written into an annotation.
    pub(crate) unwatched: Vec<String>,
}

/// A watch group of volumes the app mounts.
#[derive(Debug)]
pub(crate) struct FileGroup {
    pub(crate) name: String,
    /// (volume, mountPath), in the app's order.
    pub(crate) mounts: Vec<(String, String)>,
}

/// A Secret or ConfigMap the app took as environment variables, mounted into the sidecar only.
#[derive(Debug)]
pub(crate) struct EnvGroup {
    /// The volume's name (also the group's).
    pub(crate) volume: String,
    /// The volume's source (`secret: ...` or `configMap: ...`).
    pub(crate) source: Value,
}

impl EnvGroup {
    pub(crate) fn path(&self) -> String {
        format!("{ENV_MOUNTS}/{}", self.volume)
    }
}

/// Reads `spec` (a pod spec, the sidecar taken out) with the annotations' `wishes`.
pub(crate) fn plan(spec: &Value, wishes: &Wishes) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let mut plan = Plan {
        action: wishes.action.clone(),
        ..Plan::default()
    };
    if spec.get("hostPID").and_then(Value::as_bool) == Some(true) {
        errors.push(
            "spec.hostPID is true: the sidecar would see, and could signal, every process of the node. \
             It needs the pod's own PID namespace (shareProcessNamespace): remove hostPID"
                .to_string(),
        );
    }
    let containers = list(spec, "containers");
    let app = match app_container(containers, wishes) {
        Ok(c) => c,
        Err(e) => {
            errors.push(e);
            return Err(errors);
        }
    };
    plan.app = str_at(app, "/name").unwrap_or_default().to_string();
    if let Err(e) = identity(spec, app, wishes, &mut plan) {
        errors.push(e);
    }
    let volumes: BTreeMap<&str, &Value> = list(spec, "volumes")
        .iter()
        .filter_map(|v| Some((str_at(v, "/name")?, v)))
        .collect();
    if let Err(e) = file_groups(app, &volumes, wishes, &mut plan) {
        errors.extend(e);
    }
    env_groups(app, &volumes, &mut plan);
    if plan.files.is_empty() && plan.env.is_empty() {
        errors.push(format!(
            "nothing to watch: container '{}' mounts no Secret, ConfigMap or projected volume (other \
             than with subPath) and takes none as environment variables",
            crate::text::value(&plan.app)
        ));
    }
    let signals =
        wishes.action.reload_url.is_none() && !plan.files.is_empty() || !plan.env.is_empty();
    if wishes.action.reload_url.is_some() && wishes.action.signal.is_some() {
        errors.push(
            "annotations reload-url and signal both given: the app is either called or signalled; \
             keep one"
                .into(),
        );
    }
    let a = &wishes.action;
    if a.reload_url.is_some() && (a.applied_when.is_some() || a.worker_drain_timeout.is_some()) {
        errors.push(
            "annotations applied-when and worker-drain-timeout are about a signalled process's \
             workers: not with reload-url"
                .into(),
        );
    }
    if a.worker_drain_timeout.is_some() && a.applied_when.as_deref() != Some("workers-replaced") {
        errors.push(
            "annotation worker-drain-timeout is the time old workers get with applied-when: \
             \"workers-replaced\": add it, or leave worker-drain-timeout out"
                .into(),
        );
    }
    if !a.verify_json.is_empty() && a.verify_url.is_none() {
        errors.push(
            "annotation verify-json holds conditions on the verify URL's answer: add \
             secret-reloader.io/verify-url"
                .into(),
        );
    }
    plan.process = wishes.process_name.clone().or_else(|| {
        let cmd = str_at(app, "/command/0")?;
        let base = cmd.rsplit('/').next().filter(|b| !b.is_empty())?;
        Some(base.chars().take(15).collect())
    });
    if !signals {
        plan.process = None;
    } else if plan.process.is_none() {
        errors.push(format!(
            "which process to signal: container '{}' has no command (the image's entrypoint, which \
             the injector cannot read). Add the annotation secret-reloader.io/process-name{}",
            crate::text::value(&plan.app),
            if plan.files.is_empty() {
                ""
            } else {
                ", or secret-reloader.io/reload-url for an app with a reload endpoint"
            }
        ));
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// The app container: the one named by the annotation, or the only one.
fn app_container<'a>(containers: &'a [Value], wishes: &Wishes) -> Result<&'a Value, String> {
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| str_at(c, "/name"))
        .collect();
    let shown = || {
        names
            .iter()
            .map(|n| crate::text::value(n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(want) = &wishes.container {
        return containers
            .iter()
            .find(|c| str_at(c, "/name") == Some(want))
            .ok_or_else(|| {
                format!(
                    "annotation secret-reloader.io/container names '{}', which is not a container of \
                     the pod (its containers: {})",
                    crate::text::value(want),
                    shown()
                )
            });
    }
    match containers {
        [one] => Ok(one),
        [] => Err("spec.containers is empty".into()),
        _ => Err(format!(
            "several containers ({}): name the app with the annotation secret-reloader.io/container",
            shown()
        )),
    }
}

/// The app's uid, gid and groups: container level over pod level, annotations where undeclared.
fn identity(spec: &Value, app: &Value, wishes: &Wishes, plan: &mut Plan) -> Result<(), String> {
    let field = |f: &str| {
        app.pointer(&format!("/securityContext/{f}"))
            .or_else(|| spec.pointer(&format!("/securityContext/{f}")))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let name = crate::text::value(&plan.app);
    let uid = match (field("runAsUser"), wishes.app_uid) {
        (Some(d), Some(a)) if d != a => {
            return Err(format!(
                "container '{name}' runs as uid {d} (runAsUser), but the annotation \
                 secret-reloader.io/app-uid says {a}: remove the annotation"
            ));
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => {
            return Err(format!(
                "the uid of container '{name}' is not declared (no runAsUser in its or the pod's \
                 securityContext): it comes from the image, which the injector cannot read, and the \
                 sidecar must run as the app's uid to signal it. Declare runAsUser, or add the \
                 annotation secret-reloader.io/app-uid"
            ));
        }
    };
    if uid == 0 {
        return Err(format!(
            "container '{name}' runs as root (uid 0): the sidecar runs as the app's uid and never as \
             root. Run the app as a non-root uid (runAsUser)"
        ));
    }
    plan.uid = uid;
    plan.gid = match (field("runAsGroup"), wishes.app_gid) {
        (Some(d), Some(a)) if d != a => {
            return Err(format!(
                "container '{name}' runs with gid {d} (runAsGroup), but the annotation \
                 secret-reloader.io/app-gid says {a}: remove the annotation"
            ));
        }
        (Some(d), _) | (None, Some(d)) => Some(d),
        (None, None) => {
            plan.warnings.push(format!(
                "the gid of container '{name}' is not declared (runAsGroup): the sidecar runs as \
                 its uid and learns the app's identity from its process, so its start-up check \
                 cannot tell before the app runs whether the app may read the files; declare \
                 runAsGroup or add secret-reloader.io/app-gid"
            ));
            None
        }
    };
    let mut groups: Vec<u64> = spec
        .pointer("/securityContext/supplementalGroups")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    groups.extend(
        spec.pointer("/securityContext/fsGroup")
            .and_then(Value::as_u64),
    );
    groups.sort_unstable();
    groups.dedup();
    plan.groups = groups;
    Ok(())
}

/// One watch group per Secret, ConfigMap or projected volume the app mounts (the annotation
/// `groups` puts several into one).
fn file_groups(
    app: &Value,
    volumes: &BTreeMap<&str, &Value>,
    wishes: &Wishes,
    plan: &mut Plan,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let named: BTreeMap<&str, &str> = wishes
        .groups
        .iter()
        .flat_map(|(g, vols)| vols.iter().map(move |v| (v.as_str(), g.as_str())))
        .collect();
    let mut mounted = Vec::new();
    for m in list(app, "volumeMounts") {
        let (Some(vol), Some(path)) = (str_at(m, "/name"), str_at(m, "/mountPath")) else {
            continue;
        };
        let Some(source) = volumes.get(vol) else {
            continue;
        };
        if !["secret", "configMap", "projected"]
            .iter()
            .any(|k| source.get(k).is_some())
        {
            continue;
        }
        if path == SA_TOKEN_PATH && vol.starts_with("kube-api-access-") && !named.contains_key(vol)
        {
            continue;
        }
        let sub = str_at(m, "/subPath")
            .filter(|s| !s.is_empty())
            .or_else(|| str_at(m, "/subPathExpr").filter(|s| !s.is_empty()));
        if let Some(sub) = sub {
            let line = format!(
                "volume '{}' at {} (subPath {}): kubelet never updates a subPath mount, so a rotation \
                 never reaches the app there; mount the volume as a directory to have it watched",
                crate::text::value(vol),
                crate::text::value(path),
                crate::text::value(sub)
            );
            plan.warnings.push(line.clone());
            plan.unwatched.push(line);
            continue;
        }
        mounted.push((vol.to_string(), path.to_string()));
    }
    for (g, vols) in &wishes.groups {
        for v in vols {
            if !mounted.iter().any(|(m, _)| m == v) {
                errors.push(format!(
                    "annotation secret-reloader.io/groups puts volume '{}' into group '{}', but \
                     container '{}' does not mount it (or only with subPath)",
                    crate::text::value(v),
                    crate::text::value(g),
                    crate::text::value(&plan.app)
                ));
            }
        }
    }
    for (vol, path) in mounted {
        let group = named
            .get(vol.as_str())
            .map_or(vol.clone(), |g| g.to_string());
        match plan.files.iter_mut().find(|f| f.name == group) {
            Some(f) => f.mounts.push((vol, path)),
            None => plan.files.push(FileGroup {
                name: group,
                mounts: vec![(vol, path)],
            }),
        }
    }
    for f in &plan.files {
        let vols: Vec<&str> = f.mounts.iter().map(|(v, _)| v.as_str()).collect();
        if !wishes.groups.contains_key(&f.name) && vols.iter().any(|v| *v != f.name) {
            errors.push(format!(
                "group '{}' of the annotation secret-reloader.io/groups has the name of another \
                 volume: rename the group",
                crate::text::value(&f.name)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The Secrets and ConfigMaps the app takes as environment variables: `envFrom` (every key, a
/// file each) and `valueFrom` (the referenced keys, each written to a file named after its
/// variable with the volume's `items`, so the daemon compares the variable with its file).
fn env_groups(app: &Value, volumes: &BTreeMap<&str, &Value>, plan: &mut Plan) {
    let mut whole: Vec<(&str, &str, bool)> = Vec::new();
    let mut keyed: BTreeMap<(&str, &str), (Vec<Value>, bool)> = BTreeMap::new();
    for from in list(app, "envFrom") {
        for (field, kind) in [("secretRef", "secret"), ("configMapRef", "configMap")] {
            let Some(name) = str_at(from, &format!("/{field}/name")) else {
                continue;
            };
            if str_at(from, "/prefix").is_some_and(|p| !p.is_empty()) {
                let line = format!(
                    "envFrom {kind} '{}' with a prefix: the variables' names differ from the keys, so \
                     the sidecar cannot compare them; it is not watched",
                    crate::text::value(name)
                );
                plan.warnings.push(line.clone());
                plan.unwatched.push(line);
                continue;
            }
            let optional = from.pointer(&format!("/{field}/optional")) == Some(&Value::Bool(true));
            if !whole.iter().any(|(k, n, _)| *k == kind && *n == name) {
                whole.push((kind, name, optional));
            }
        }
    }
    for e in list(app, "env") {
        let Some(var) = str_at(e, "/name") else {
            continue;
        };
        for (field, kind) in [("secretKeyRef", "secret"), ("configMapKeyRef", "configMap")] {
            let at = format!("/valueFrom/{field}");
            let (Some(name), Some(key)) = (
                str_at(e, &format!("{at}/name")),
                str_at(e, &format!("{at}/key")),
            ) else {
                continue;
            };
            if var.contains('/') || var == ".." || var.starts_with("..") {
                plan.warnings.push(format!(
                    "variable '{}' cannot be a file's name: not watched",
                    crate::text::value(var)
                ));
                continue;
            }
            let optional = e.pointer(&format!("{at}/optional")) == Some(&Value::Bool(true));
            let entry = keyed.entry((kind, name)).or_default();
            entry.0.push(json!({"key": key, "path": var}));
            entry.1 |= optional;
        }
    }
    let source = |kind: &str, name: &str, optional: bool, items: Option<Vec<Value>>| {
        let mut inner = Map::new();
        inner.insert(
            if kind == "secret" {
                "secretName"
            } else {
                "name"
            }
            .into(),
            name.into(),
        );
        if let Some(items) = items {
            inner.insert("items".into(), Value::Array(items));
        }
        if optional {
            inner.insert("optional".into(), true.into());
        }
        let mut s = Map::new();
        s.insert(kind.into(), Value::Object(inner));
        Value::Object(s)
    };
    for (kind, name, optional) in whole {
        let volume = volume_name(kind, name, "");
        plan.env.push(EnvGroup {
            volume,
            source: source(kind, name, optional, None),
        });
    }
    for ((kind, name), (items, optional)) in keyed {
        let volume = volume_name(kind, name, "-keys");
        plan.env.push(EnvGroup {
            volume,
            source: source(kind, name, optional, Some(items)),
        });
    }
    let (taken, free): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.env)
        .into_iter()
        .partition(|g| volumes.contains_key(g.volume.as_str()));
    plan.env = free;
    for g in taken {
        plan.warnings.push(format!(
            "the pod already has a volume named '{}': that environment source is not watched",
            g.volume
        ));
    }
}

/// `sr-env-<kind>-<name><suffix>`: a DNS label (lower case, at most 63), with a short hash of
/// the original when it had to be changed to fit.
fn volume_name(kind: &str, name: &str, suffix: &str) -> String {
    let base = format!("sr-env-{}-{name}", kind.to_ascii_lowercase());
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let max = 63 - suffix.len();
    if clean == base && clean.len() <= max {
        return format!("{clean}{suffix}");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(base.as_bytes());
    let tag: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    let keep: String = clean.chars().take(max - 7).collect();
    format!("{}-{tag}{suffix}", keep.trim_end_matches('-'))
}

/// The array at `spec[field]` (empty when absent).
pub(crate) fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string at a JSON pointer.
pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}
