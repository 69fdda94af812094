//! `secret-reloader-inject`, the real binary on real manifests: what it derives from which field,
//! that it is idempotent and reversible, that every other object and field is left meaning-equal,
//! and that bad input gets an error naming the object, the field and the fix, with nothing on
//! stdout. (kubectl, kubernetes-validate and podman run the output in scripts/ci-inject.)

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::inject_bin;

/// Runs `secret-reloader-inject ARGS` with `input` on stdin: (exit code, stdout, stderr).
fn inject(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(inject_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start inject");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("inject output");
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The documents of a YAML or JSON stream, parsed by the binary's own reader.
fn docs(text: &str) -> Vec<Value> {
    secret_reloader::inject::stream::parse(text)
        .expect("parse output")
        .1
}

/// The seed's pod: the app takes `runtime-credentials` as environment variables, runs as 1001.
const SEED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: runtime
  namespace: prod
  annotations:
    secret-reloader.io/inject: "true"
spec:
  serviceAccountName: runtime-access
  securityContext: {runAsGroup: 2000, fsGroup: 3000, supplementalGroups: [4000]}
  containers:
    - name: app
      image: registry.example/app:1.4
      command: ["/usr/local/bin/app-server", "--port=8080"]
      envFrom:
        - secretRef: {name: runtime-credentials}
      env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
      securityContext: {runAsUser: 1001}
      volumeMounts:
        - {name: tls, mountPath: /etc/app/tls, readOnly: true}
        - {name: conf, mountPath: /etc/app/conf.yaml, subPath: conf.yaml}
  volumes:
    - name: tls
      secret: {secretName: app-tls, defaultMode: 0440}
    - name: conf
      configMap: {name: app-conf}
"#;

fn sidecar(pod_spec: &Value) -> &Value {
    pod_spec["initContainers"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == "secret-reloader"))
        .expect("the sidecar among the init containers")
}

fn config_of(sidecar: &Value) -> Value {
    let arg = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--config-json="))
        .expect("--config-json");
    serde_json::from_str(arg).expect("--config-json is JSON")
}

fn args_of(sidecar: &Value) -> Vec<String> {
    sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_seeds_pod_gets_a_sidecar_derived_field_by_field() {
    let (code, out, err) = inject(&[], SEED);
    assert_eq!(code, 0, "stderr: {err}");
    let pod = &docs(&out)[0];
    let spec = &pod["spec"];
    let s = sidecar(spec);
    // Identity: the app's uid (container level), the pod's gid, fsGroup and supplementalGroups.
    assert_eq!(s["securityContext"]["runAsUser"], 1001);
    assert_eq!(s["securityContext"]["runAsGroup"], 2000);
    assert_eq!(s["securityContext"]["runAsNonRoot"], true);
    assert_eq!(s["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(s["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(s["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        s["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let args = args_of(s);
    for want in ["--app-uid=1001", "--app-gid=2000", "--app-groups=3000,4000"] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    // Native layout, the three probes, the PID namespace, the PodMonitor's label.
    assert_eq!(s["restartPolicy"], "Always");
    for (probe, path) in [
        ("startupProbe", "/startupz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(s[probe]["httpGet"]["path"], path);
    }
    assert_eq!(spec["shareProcessNamespace"], true);
    assert_eq!(pod["metadata"]["labels"]["secret-reloader/sidecar"], "true");
    // What to watch: the Secret volume at the app's path, read-only; the subPath mount is not
    // watched, and the object says so.
    let mounts = s["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(&json!({"name": "tls", "mountPath": "/etc/app/tls", "readOnly": true}))
    );
    assert!(
        !mounts.iter().any(|m| m["name"] == "conf"),
        "a subPath mount is not watched"
    );
    let unwatched = pod["metadata"]["annotations"]["secret-reloader.io/unwatched"]
        .as_str()
        .unwrap();
    assert!(unwatched.contains("subPath conf.yaml"), "{unwatched}");
    assert!(
        err.contains("kubelet never updates a subPath mount"),
        "{err}"
    );
    // The groups: the volume, and the two environment sources, consumed as env, reporting only.
    let config = config_of(s);
    let groups = config["groups"].as_array().unwrap();
    assert_eq!(groups[0]["name"], "tls");
    assert_eq!(groups[0]["watch"], json!(["/etc/app/tls"]));
    assert_eq!(
        groups[0]["targets"][0],
        json!({"type": "signal", "process_name": "app-server"})
    );
    let env: Vec<&Value> = groups
        .iter()
        .filter(|g| g["consumed_as"] == "env")
        .collect();
    assert_eq!(env.len(), 2, "{groups:?}");
    for g in &env {
        assert_eq!(
            g["targets"][0]["signal"], "none",
            "no restart without the annotation"
        );
    }
    // envFrom: the whole Secret, in the sidecar only; secretKeyRef: its key as the variable's file.
    let volumes = spec["volumes"].as_array().unwrap();
    assert!(volumes.contains(&json!({"name": "sr-env-secret-runtime-credentials", "secret": {"secretName": "runtime-credentials"}})));
    assert!(volumes.contains(&json!({"name": "sr-env-secret-db-keys", "secret": {"secretName": "db", "items": [{"key": "password", "path": "DB_PASSWORD"}]}})));
    let app = &spec["containers"][0];
    assert_eq!(
        app["volumeMounts"].as_array().unwrap().len(),
        2,
        "the app's mounts are left alone"
    );
    // Everything else is unchanged: the YAML octal mode is read as Kubernetes reads it.
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 288);
    assert_eq!(spec["serviceAccountName"], "runtime-access");
}

#[test]
fn restart_on_env_change_sends_term_and_annotations_tune_the_action() {
    let seed = SEED.replace(
        "secret-reloader.io/inject: \"true\"",
        "secret-reloader.io/inject: \"true\"\n    secret-reloader.io/restart-on-env-change: \"true\"\n    \
         secret-reloader.io/process-name: srv\n    secret-reloader.io/signal: USR1\n    \
         secret-reloader.io/verify-served-cert: 127.0.0.1:8443\n    secret-reloader.io/splay: 30s",
    );
    let (code, out, err) = inject(&["--image", "registry.example/secret-reloader:9.9"], &seed);
    assert_eq!(code, 0, "{err}");
    let pod = &docs(&out)[0];
    let s = sidecar(&pod["spec"]);
    assert_eq!(s["image"], "registry.example/secret-reloader:9.9");
    assert!(args_of(s).contains(&"--splay=30s".to_string()));
    let config = config_of(s);
    let t = &config["groups"][0]["targets"][0];
    assert_eq!(t["process_name"], "srv");
    assert_eq!(t["signal"], "USR1");
    assert_eq!(t["verify_served_cert"], "127.0.0.1:8443");
    assert_eq!(config["groups"][1]["targets"][0]["signal"], "TERM");
}

#[test]
fn worker_and_verify_json_annotations_reach_a_configuration_the_daemon_accepts() {
    let seed = SEED.replace(
        "secret-reloader.io/inject: \"true\"",
        "secret-reloader.io/inject: \"true\"\n    secret-reloader.io/applied-when: workers-replaced\n    \
         secret-reloader.io/worker-drain-timeout: 90s\n    \
         secret-reloader.io/verify-url: http://127.0.0.1:9090/api/v1/status/runtimeinfo\n    \
         secret-reloader.io/verify-json: |\n      /data/reloadConfigSuccess == true\n      \
         /data/lastConfigTime >= $CHANGE",
    );
    let (code, out, err) = inject(&[], &seed);
    assert_eq!(code, 0, "{err}");
    let s = sidecar(&docs(&out)[0]["spec"]).clone();
    let config = config_of(&s);
    let t = &config["groups"][0]["targets"][0];
    assert_eq!(t["applied_when"], "workers-replaced");
    assert_eq!(t["worker_drain_timeout"], "90s");
    assert_eq!(
        t["verify_json"],
        serde_json::json!([
            "/data/reloadConfigSuccess == true",
            "/data/lastConfigTime >= $CHANGE"
        ])
    );
    // The daemon's own parser takes it: the doctor exits 2 on a configuration it refuses.
    let exit = crate::support::process::run_bin(&crate::support::process::os(&[
        "doctor",
        "--standalone",
        "--config-json",
        &config.to_string(),
    ]));
    assert_ne!(exit.code, 2, "{}", exit.stderr);
    // Each annotation is checked, and the ones that need another say which.
    for (extra, want) in [
        (
            "secret-reloader.io/applied-when: sometimes",
            "'sometimes' is not signalled or workers-replaced",
        ),
        (
            "secret-reloader.io/worker-drain-timeout: 1m",
            "worker-drain-timeout is the time old workers get",
        ),
        (
            "secret-reloader.io/verify-json: /a => 1",
            "'=>' is not an operator",
        ),
        (
            "secret-reloader.io/verify-json: /a == 1",
            "add secret-reloader.io/verify-url",
        ),
        (
            "secret-reloader.io/reload-url: http://127.0.0.1:1/\n    secret-reloader.io/applied-when: workers-replaced",
            "not with reload-url",
        ),
    ] {
        let seed = SEED.replace(
            "secret-reloader.io/inject: \"true\"",
            &format!("secret-reloader.io/inject: \"true\"\n    {extra}"),
        );
        let (code, out, err) = inject(&[], &seed);
        assert_eq!((code, out.as_str()), (1, ""), "{extra}");
        assert!(err.contains(want), "{extra}: {err}");
    }
}

#[test]
fn injecting_again_changes_nothing_and_remove_restores_the_input() {
    let (_, once, _) = inject(&[], SEED);
    let (code, twice, err) = inject(&[], &once);
    assert_eq!(code, 0, "{err}");
    assert_eq!(once, twice, "injecting an injected pod again is a no-op");
    let (code, removed, err) = inject(&["--remove"], &once);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs(&removed), docs(SEED), "--remove restores the pod");
    // A change of the flags updates the sidecar in place.
    let (_, classic, _) = inject(&["--layout", "classic"], &once);
    let spec = &docs(&classic)[0]["spec"];
    assert!(
        spec.get("initContainers").is_none(),
        "the native sidecar is gone: {spec}"
    );
    let names: Vec<&Value> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("app"), &json!("secret-reloader")]);
    let (_, back, _) = inject(&["--remove"], &classic);
    assert_eq!(docs(&back), docs(SEED));
}

#[test]
fn workloads_lists_and_other_objects_in_one_stream() {
    let pod_template = |name: &str| {
        json!({
            "metadata": {"labels": {"app": name}, "annotations": {"secret-reloader.io/inject": "true"}},
            "spec": {
                "containers": [{"name": name, "image": "x", "command": [format!("/bin/{name}")],
                    "securityContext": {"runAsUser": 101, "runAsGroup": 101},
                    "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls"}]}],
                "volumes": [{"name": "tls", "projected": {"sources": [{"secret": {"name": "t"}}]}}]
            }
        })
    };
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template("web")}});
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "data"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": pod_template("db")}});
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "job"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": pod_template("job")}}}});
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "annotations": {"secret-reloader.io/inject": "true"}},
        "spec": {"ports": [{"port": 443, "targetPort": "https"}], "selector": {"app": "web"}}});
    let mut plain = pod_template("plain");
    plain["metadata"]["annotations"] = json!({});
    let untouched = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "plain"},
        "spec": {"selector": {"matchLabels": {"app": "plain"}}, "template": plain}});
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [sts, cron]});
    let input = [&deploy, &svc, &list, &untouched]
        .iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let (code, out, err) = inject(&[], &input);
    assert_eq!(code, 0, "{err}");
    let out = docs(&out);
    assert_eq!(out.len(), 4);
    assert_eq!(out[1], svc, "a Service is left as it is, annotation or not");
    assert_eq!(
        out[3], untouched,
        "a pod template without the annotation is left as it is"
    );
    for (template, app) in [
        (&out[0]["spec"]["template"], "web"),
        (&out[2]["items"][0]["spec"]["template"], "db"),
        (
            &out[2]["items"][1]["spec"]["jobTemplate"]["spec"]["template"],
            "job",
        ),
    ] {
        let s = sidecar(&template["spec"]);
        assert_eq!(config_of(s)["groups"][0]["targets"][0]["process_name"], app);
        assert_eq!(s["securityContext"]["runAsUser"], 101);
    }
    assert_eq!(
        out[0]["spec"]["replicas"], 3,
        "the workload's own fields stay"
    );
    // --all takes the unannotated one too; JSON in, JSON out.
    let (code, out, err) = inject(&["--all"], &serde_json::to_string(&untouched).unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.trim_start().starts_with('{'),
        "JSON in, JSON out: {out}"
    );
    sidecar(&docs(&out)[0]["spec"]["template"]["spec"]);
}

/// Bad input: exit 1, nothing on stdout, a message naming the object, the field and the fix.
#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let pod = |annotations: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\n  annotations:\n    \
             secret-reloader.io/inject: \"true\"\n{annotations}spec:\n{spec}"
        )
    };
    let one = "  containers:\n  - name: app\n    command: [/bin/app]\n    securityContext: {runAsUser: 10}\n    \
               volumeMounts: [{name: s, mountPath: /s}]\n  volumes: [{name: s, secret: {secretName: s}}]\n";
    let two = "  containers:\n  - {name: a, securityContext: {runAsUser: 10}, volumeMounts: [{name: s, mountPath: /s}]}\n  \
               - {name: b}\n  volumes: [{name: s, secret: {secretName: s}}]\n";
    let cases: Vec<(String, &str)> = vec![
        ("key: [unclosed\n".into(), "not YAML or JSON"),
        ("- a\n- b\n".into(), "not a Kubernetes object"),
        (
            pod(
                "",
                "  containers:\n  - {name: app, securityContext: {runAsUser: 10}}\n",
            ),
            "Pod/ns/p: nothing to watch",
        ),
        (
            pod("", &format!("  hostPID: true\n{one}")),
            "Pod/ns/p: spec.hostPID is true",
        ),
        (
            pod("", two),
            "several containers (a, b): name the app with the annotation secret-reloader.io/container",
        ),
        (
            pod("    secret-reloader.io/contianer: app\n", one),
            "unknown annotation (a typo?)",
        ),
        (
            pod("    secret-reloader.io/signal: STOPP\n", one),
            "annotation secret-reloader.io/signal: 'STOPP' is not a signal name",
        ),
        (
            pod("    secret-reloader.io/reload-url: ftp://x/\n", one),
            "is not an http:// or https:// URL",
        ),
        (
            pod("    secret-reloader.io/inject: yes\n", one)
                .replace("    secret-reloader.io/inject: \"true\"\n", ""),
            "write \"true\" or \"false\"",
        ),
        (
            pod(
                "",
                &one.replace("securityContext: {runAsUser: 10}", "securityContext: {}"),
            ),
            "is not declared (no runAsUser",
        ),
        (
            pod("", &one.replace("runAsUser: 10", "runAsUser: 0")),
            "runs as root (uid 0)",
        ),
        (
            pod("", &one.replace("command: [/bin/app]", "image: x")),
            "secret-reloader.io/process-name",
        ),
    ];
    for (input, want) in &cases {
        let (code, out, err) = inject(&[], input);
        assert_eq!(code, 1, "exit 1 for {want}: {err}");
        assert!(out.is_empty(), "nothing on stdout for {want}: {out}");
        assert!(err.contains(want), "'{want}' in: {err}");
    }
    // An undeclared uid given by annotation is taken.
    let input = pod(
        "    secret-reloader.io/app-uid: \"10\"\n",
        &one.replace("securityContext: {runAsUser: 10}", "image: x"),
    );
    let (code, out, err) = inject(&[], &input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sidecar(&docs(&out)[0]["spec"])["securityContext"]["runAsUser"],
        10
    );
    // --keep-going: what can be injected is, the rest is reported (and left as it was), exit 1.
    let good = pod("", one).replace("name: p\n", "name: good\n");
    let bad = pod(
        "",
        "  containers:\n  - {name: app, securityContext: {runAsUser: 10}}\n",
    );
    let (code, out, err) = inject(&["--keep-going"], &format!("{good}---\n{bad}"));
    assert_eq!(code, 1, "{err}");
    let out = docs(&out);
    sidecar(&out[0]["spec"]);
    assert_eq!(out[1], docs(&bad)[0]);
    assert!(err.contains("Pod/ns/p: nothing to watch"), "{err}");
    // Usage: exit 2.
    let (code, _, _) = inject(&["--layout", "sideways"], "");
    assert_eq!(code, 2);
}

#[test]
fn an_annotation_on_the_workload_instead_of_its_template_is_explained() {
    let input = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "web", "annotations": {"secret-reloader.io/inject": "true"}},
      "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "a"}]}}}}"#;
    let (code, out, err) = inject(&[], input);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("Deployment/web: the annotation secret-reloader.io/inject is on the object's own metadata"), "{err}");
    assert!(err.contains("spec.template.metadata.annotations"), "{err}");
}

#[test]
fn a_thousand_document_stream_is_injected() {
    let one = SEED.replace("name: runtime\n", "name: runtime-NNN\n");
    let input: String = (0..1000)
        .map(|i| one.replace("NNN", &i.to_string()))
        .collect::<Vec<_>>()
        .join("---\n");
    let started = std::time::Instant::now();
    let (code, out, err) = inject(&[], &input);
    let took = started.elapsed();
    assert_eq!(code, 0, "{}", err.lines().last().unwrap_or_default());
    assert_eq!(docs(&out).len(), 1000);
    // The debug binary on a shared machine: a generous bound (the benchmark measures the release).
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

/// The sidecar `inject` writes, run with its own arguments beside a real app: the pod's mount
/// paths are this test's directories, the app runs as the pod's runAsUser (through setpriv, as
/// the kubelet would run it), and a kubelet-style rotation of the mounted Secret reaches it.
#[test]
fn the_injected_sidecars_own_arguments_reload_the_app() {
    injected_sidecar_reloads(true);
}

/// Without runAsGroup the injected sidecar declares no identity (the daemon takes one whole) and
/// learns it from the app's process: its arguments still run.
#[test]
fn without_run_as_group_the_injected_sidecar_learns_the_identity_and_reloads() {
    injected_sidecar_reloads(false);
}

fn injected_sidecar_reloads(declare_gid: bool) {
    use crate::support::{App, Daemon, credential, eventually, open_dir};
    use secret_reloader::demo::atomic_writer::AtomicWriter;
    let dir = open_dir();
    let tls = dir.path().join("tls");
    let writer = AtomicWriter::new(&tls);
    writer.write(&[("token", credential("1"))]).unwrap();
    let app = App::start_as(
        dir.path(),
        &tls.join("token"),
        &[],
        Some((1001, 1001, &[2000])),
    );
    app.wait_up();
    let mut security = json!({"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 2000});
    if !declare_gid {
        security = json!({"runAsUser": 1001});
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "e2e", "annotations": {"secret-reloader.io/inject": "true"}},
        "spec": {
            "securityContext": security,
            "containers": [{"name": "app", "image": "x", "command": [format!("/app/bin/{}", app.name)],
                "volumeMounts": [{"name": "tls", "mountPath": tls, "readOnly": true}]}],
            "volumes": [{"name": "tls", "secret": {"secretName": "tls"}}]
        }
    });
    let (code, out, err) = inject(&[], &pod.to_string());
    assert_eq!(code, 0, "{err}");
    let injected = &docs(&out)[0];
    let state = dir.path().join("state.json");
    let args: Vec<String> = args_of(sidecar(&injected["spec"]))
        .into_iter()
        .map(|a| match a.strip_prefix("--state-file=") {
            Some(_) => format!("--state-file={}", state.display()),
            None => a,
        })
        .collect();
    assert_eq!(
        args.iter().any(|a| a.starts_with("--app-uid=")),
        declare_gid,
        "a declared identity is whole: {args:?}"
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(&args);
    d.wait_ready();
    let status = d.status();
    assert_eq!(status["watches"][0]["name"], "tls", "{status}");
    writer.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "the app holds version 2",
        || app.state().map(|s| s.version),
        |v| v.as_deref() == Some("2"),
    );
    assert_eq!(app.reloads(), 1, "{}", d.log());
}

/// Found by the fuzzer (fuzz/corpus/inject/regression-*): a volume of the sidecar's name that the
/// injector did not put there would be doubled, and a stale `unwatched` annotation would survive
/// one injection but not the next; both broke "injecting again changes nothing".
#[test]
fn names_the_injector_owns_are_never_doubled_and_its_output_annotation_is_its_own() {
    let taken = SEED.replace(
        "    - name: conf\n      configMap: {name: app-conf}\n",
        "    - name: conf\n      configMap: {name: app-conf}\n    - name: secret-reloader-state\n      emptyDir: {}\n",
    );
    let (code, out, err) = inject(&[], &taken);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("already has a volume named secret-reloader-state"),
        "{err}"
    );
    let stale = SEED
        .replace(
            "        - {name: conf, mountPath: /etc/app/conf.yaml, subPath: conf.yaml}\n",
            "",
        )
        .replace(
            "    secret-reloader.io/inject: \"true\"\n",
            "    secret-reloader.io/inject: \"true\"\n    secret-reloader.io/unwatched: left from before\n",
        );
    let (code, once, err) = inject(&[], &stale);
    assert_eq!(code, 0, "{err}");
    assert!(
        docs(&once)[0]["metadata"]["annotations"]
            .get("secret-reloader.io/unwatched")
            .is_none()
    );
    let (_, twice, _) = inject(&[], &once);
    assert_eq!(once, twice);
}
