//! Injection: `secret-reloader inject` over a 1,000-document stream (the binary measured, as a
//! pipeline runs it), and the admission webhook under a steady load of reviews.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Figures, Opts};

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
        .arg("inject")
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
        let (took, ok) = inject_once(&o.bin, &input);
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
        "`secret-reloader inject` of a stream of 1,000 Deployments ({:.0} KiB of YAML; two \
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
