//! Injection: `secret-reloader-inject` over a 1,000-document stream (the binary measured, as a
//! pipeline runs it), and the admission webhook under a steady load of reviews.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64ct::Encoding;
use serde_json::{Value, json};

use crate::daemon::{Daemon, get_text, rss_kib};
use crate::load::{Answer, Client, Pace};
use crate::util::{Stats, mib, row, stats};
use crate::{Figures, Opts};

/// Reviews per second sent to the webhook.
const RATE: u32 = 200;
/// Kept-alive connections the reviews share (the API server keeps a few to a webhook).
const CONNECTIONS: usize = 4;
/// Between two readings of the webhook's RSS under load.
const RSS_EVERY: Duration = Duration::from_millis(10);

/// A Deployment whose pod template carries the annotation, two containers (the app named), three
/// volumes and an environment source: the shape of a real workload.
fn deployment(i: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: team-{ns}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: app-{i}}}
  template:
    metadata:
      labels: {{app: app-{i}}}
      annotations:
        secret-reloader.io/inject: "true"
        secret-reloader.io/container: app
    spec:
      securityContext: {{runAsUser: 1001, runAsGroup: 1001, fsGroup: 2000}}
      containers:
        - name: app
          image: registry.example/app:1.{i}
          command: [/usr/local/bin/app, --port=8443]
          envFrom: [{{secretRef: {{name: app-{i}-env}}}}]
          volumeMounts:
            - {{name: tls, mountPath: /etc/app/tls, readOnly: true}}
            - {{name: conf, mountPath: /etc/app/conf, readOnly: true}}
            - {{name: token, mountPath: /var/run/app/token, readOnly: true}}
        - name: proxy
          image: registry.example/proxy:2
      volumes:
        - {{name: tls, secret: {{secretName: app-{i}-tls, defaultMode: 0440}}}}
        - {{name: conf, configMap: {{name: app-{i}-conf}}}}
        - name: token
          projected:
            sources: [{{serviceAccountToken: {{path: token, audience: api, expirationSeconds: 3600}}}}]
"#,
        ns = i % 7
    )
}

/// Runs `inject` over `input`: how long until it exited, and whether it succeeded.
fn inject_once(bin: &str, input: &str) -> (Duration, bool) {
    let started = Instant::now();
    let child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return (started.elapsed(), false);
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let text = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()).is_ok());
    let out = child.wait_with_output();
    let took = started.elapsed();
    let wrote = writer.join().unwrap_or(false);
    let ok = wrote && out.is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    (took, ok)
}

pub fn inject(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## Injection\n");
    let input: String = (0..1000).map(deployment).collect::<Vec<_>>().join("---\n");
    let runs = if o.quick { 3 } else { 7 };
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..runs {
        let (took, ok) = inject_once(&o.inject_bin, &input);
        if ok {
            times.push(took);
        } else {
            failed += 1;
        }
    }
    times.sort();
    let median = times.get(times.len() / 2).copied();
    f.inject_1000 = median;
    let _ = writeln!(
        out,
        "`secret-reloader-inject` of a stream of 1,000 Deployments ({:.0} KiB of YAML; two \
         containers, three volumes and an `envFrom` each), the process started, fed on stdin and \
         waited for, {runs} runs: median {}, fastest {}{}.\n",
        input.len() as f64 / 1024.0,
        median.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        times
            .first()
            .map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        if failed > 0 {
            format!(" ({failed} runs failed)")
        } else {
            String::new()
        }
    );
}

/// A pod of a ReplicaSet with 20 containers and 30 volumes (10 Secret, 10 ConfigMap, 10 projected
/// of a Secret, a ConfigMap and a token), every volume mounted by the app container, which the
/// annotation names; the uid declared: each review injects.
fn big_pod() -> Value {
    let name = |k: usize| format!("v{k:02}");
    let volumes: Vec<Value> = (0..30)
        .map(|k| match k % 3 {
            0 => json!({"name": name(k), "secret": {"secretName": format!("app-secret-{k}"), "defaultMode": 288}}),
            1 => json!({"name": name(k), "configMap": {"name": format!("app-conf-{k}")}}),
            _ => json!({"name": name(k), "projected": {"sources": [
                {"secret": {"name": format!("app-tls-{k}")}},
                {"configMap": {"name": format!("app-ca-{k}")}},
                {"serviceAccountToken": {"path": "token", "audience": "api", "expirationSeconds": 3600}}
            ]}}),
        })
        .collect();
    let mounts: Vec<Value> = (0..30)
        .map(|k| json!({"name": name(k), "mountPath": format!("/etc/app/{}", name(k)), "readOnly": true}))
        .collect();
    let mut containers = vec![json!({
        "name": "app",
        "image": "registry.example/app:1.4.2",
        "command": ["/usr/local/bin/app", "--config=/etc/app/v01/app.yaml"],
        "ports": [{"containerPort": 8443, "name": "https"}],
        "env": [{"name": "MODE", "value": "production"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
        "volumeMounts": mounts
    })];
    containers.extend((1..20).map(|k| {
        json!({
            "name": format!("side-{k:02}"),
            "image": format!("registry.example/side-{k}:2.{k}"),
            "args": ["--port", (9000 + k).to_string()],
            "env": [{"name": "SIDE", "value": k.to_string()}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "volumeMounts": [{"name": "v00", "mountPath": "/etc/side", "readOnly": true}]
        })
    }));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "app-7d4b9-",
            "namespace": "shop",
            "labels": {"app": "app", "pod-template-hash": "7d4b9"},
            "annotations": {"secret-reloader.io/inject": "true", "secret-reloader.io/container": "app"}
        },
        "spec": {
            "securityContext": {"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 2000},
            "containers": containers,
            "volumes": volumes
        }
    })
}

/// The review of a Pod CREATE of [`big_pod`], its uid `@UID@` (replaced per review).
fn review_template() -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "@UID@",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": big_pod(),
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
}

fn uid(i: usize) -> String {
    format!("6f1c2a4e-bench-{i:08}")
}

/// What an answer to review `uid` lacks: a 200, the uid, a patch.
fn check(uid: &str, a: &Answer) -> Result<(), String> {
    let body = String::from_utf8_lossy(&a.body);
    if a.status != 200 {
        return Err(format!("status {}", a.status));
    }
    if !body.contains(uid) {
        return Err("an answer without the review's uid".into());
    }
    if !body.contains("\"patch\":") {
        return Err("an answer without a patch".into());
    }
    Ok(())
}

/// The first answer, read whole: allowed with a JSONPatch; the patch's size in bytes.
fn first_patch(a: &Answer) -> Result<usize, String> {
    let v: Value = serde_json::from_slice(&a.body)
        .map_err(|e| format!("the first answer (status {}) is not JSON: {e}", a.status))?;
    let r = &v["response"];
    let patch = r["patch"].as_str().filter(|p| !p.is_empty());
    match patch {
        Some(p) if r["allowed"] == true && r["patchType"] == "JSONPatch" => {
            base64ct::Base64::decode_vec(p)
                .map(|b| b.len())
                .map_err(|e| format!("the first answer's patch is not base64: {e}"))
        }
        _ => Err(format!(
            "the first answer has no patch (status {}, warnings {})",
            a.status, r["warnings"]
        )),
    }
}

/// A figure of the webhook's `/metrics` (the line `name value`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What the webhook under load gave.
struct Measured {
    latency: Stats,
    outcome: crate::load::Outcome,
    total: usize,
    review_bytes: usize,
    patch_bytes: usize,
    rss_start: u64,
    rss_max: u64,
    rss_after: u64,
    /// From its `/metrics`: (reviews injected, mean review time in ms), the first ones included.
    server: Option<(f64, f64)>,
}

fn measure(o: &Opts) -> Result<Measured, String> {
    let dir = tempfile::Builder::new()
        .prefix("sr-bench-webhook-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    crate::tls::certificates(dir.path())?;
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (cert, key) = (path("srv.crt"), path("srv.key"));
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ];
    let (hook, admin) = Daemon::try_start_webhook(&o.inject_bin, &args)?;
    let rss_start = hook.rss_kib();
    let ca = std::fs::read(path("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
    let client = Client::new(&ca, hook.addr)?;
    let template = review_template();
    let body = |i: usize| template.replacen("@UID@", &uid(i), 1).into_bytes();
    // Each connection's handshake made and a first review answered before the clock starts.
    let mut streams = Vec::new();
    let mut patch_bytes = 0;
    for k in 0..CONNECTIONS {
        let mut s = client.connect()?;
        let first = 10_000_000 + k;
        let (answer, _) = crate::load::post(&mut s, "/mutate", &body(first))?;
        if k == 0 {
            patch_bytes = first_patch(&answer)?;
        }
        check(&uid(first), &answer)?;
        streams.push(s);
    }
    let secs = if o.quick { 3 } else { 10 };
    let pace = Pace {
        path: "/mutate",
        start: Instant::now() + Duration::from_millis(50),
        period: Duration::from_secs(1) / RATE,
        total: (RATE * secs) as usize,
    };
    let (pid, sampling) = (hook.pid(), AtomicBool::new(true));
    let (outcome, rss_max) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                max = max.max(rss_kib(pid));
                std::thread::sleep(RSS_EVERY);
            }
            max
        });
        let answered = |i: usize, a: &Answer| check(&uid(i), a);
        let outcome = crate::load::paced(&client, streams, &pace, &body, &answered);
        sampling.store(false, Ordering::Relaxed);
        (outcome, sampler.join().unwrap_or(0))
    });
    let rss_after = hook.rss_kib();
    let server = get_text(admin, "/metrics").and_then(|m| {
        let injected = metric(
            &m,
            "secret_reloader_webhook_reviews_total{result=\"injected\"}",
        )?;
        let sum = metric(&m, "secret_reloader_webhook_review_duration_seconds_sum")?;
        let count = metric(&m, "secret_reloader_webhook_review_duration_seconds_count")?;
        Some((injected, sum / count.max(1.0) * 1e3))
    });
    Ok(Measured {
        latency: stats(outcome.latencies.clone()),
        outcome,
        total: pace.total,
        review_bytes: body(0).len(),
        patch_bytes,
        rss_start,
        rss_max: rss_max.max(rss_after),
        rss_after,
        server,
    })
}

/// `secret-reloader-inject webhook` under a steady load of reviews of a large pod: latency and RSS.
pub fn webhook(out: &mut String, o: &Opts, f: &mut Figures) {
    let m = match measure(o) {
        Ok(m) => m,
        Err(e) => {
            // One line, bounded: the error may carry the webhook's log.
            let e: String = e.split_whitespace().collect::<Vec<_>>().join(" ");
            let e: String = e.chars().take(600).collect();
            let _ = writeln!(
                out,
                "`secret-reloader-inject webhook` under load: not measured ({e}).\n"
            );
            return;
        }
    };
    let secs = m.total as u32 / RATE;
    let _ = writeln!(
        out,
        "`secret-reloader-inject webhook` (HTTPS, a CA-signed pair for 127.0.0.1) answering {RATE} \
         reviews/s for {secs} s, sent on a fixed schedule (open loop) over {CONNECTIONS} kept-alive \
         connections of this process's rustls client (one thread each; a review waits for a free \
         connection, and that wait counts). Each review is a Pod CREATE of 20 containers and 30 \
         volumes (Secret, ConfigMap and projected, all mounted by the app container), {:.1} KiB, \
         answered with a patch of {:.1} KiB; each connection's handshake and first review came \
         before the clock started. Latency from each review's scheduled send time to the last byte \
         of its answer, so this process's own wakeups count too. One run on a shared machine: the \
         client, the webhook and other work share its cores.\n",
        m.review_bytes as f64 / 1024.0,
        m.patch_bytes as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| path | median | p99 | max | n |\n|---|---|---|---|---|"
    );
    row(
        out,
        &format!("review scheduled → its answer's last byte, {RATE}/s"),
        &m.latency,
    );
    let _ = writeln!(
        out,
        "\nRSS of the webhook: {:.2} MiB after start, max {:.2} MiB under load (read every {} ms), \
         {:.2} MiB after. Answered with a patch: {} of {}{}{}.{}\n",
        mib(m.rss_start),
        mib(m.rss_max),
        RSS_EVERY.as_millis(),
        mib(m.rss_after),
        m.latency.n,
        m.total,
        if m.outcome.failed > 0 {
            format!(
                "; **{} failed** (first: {})",
                m.outcome.failed,
                m.outcome.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        },
        if m.outcome.reconnects > 0 {
            format!("; {} connection(s) made again", m.outcome.reconnects)
        } else {
            String::new()
        },
        match m.server {
            Some((injected, mean)) => format!(
                " The webhook's own metrics: {injected:.0} reviews injected (the first \
                 {CONNECTIONS} included), mean time in the webhook {mean:.3} ms."
            ),
            None => String::new(),
        }
    );
    f.webhook_p99 = (m.latency.n > 0).then_some(m.latency.p99);
    f.webhook_failed = Some(m.outcome.failed);
    f.webhook_rss_kib = Some(m.rss_max);
    f.webhook_rss_start_kib = Some(m.rss_start);
}
