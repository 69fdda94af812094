//! `secret-reloader-inject webhook`, the real binary on 127.0.0.1 with a CA and serving certificates
//! made by openssl in a kubelet-style volume, reviewed over real HTTPS (a rustls client, the
//! CA trusted, the name `webhook.test`): pods allowed with or without a patch, everything it
//! cannot handle allowed with a warning or refused with 400/413/408 and counted while it keeps
//! serving, slow clients holding nothing, the certificate rotated by a `..data` swap and a broken
//! pair refused, probes and metrics on both ports, SIGTERM finishing the review in flight.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64ct::Encoding;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::support::process::{os, run_inject_bin};
use crate::support::tls::{ca, leaf, serial};
use crate::support::{AtomicWriter, Daemon, eventually, http_get, inject_bin, metric, tempdir};

/// The name the serving certificates carry.
const NAME: &str = "webhook.test";

/// The webhook, serving a certificate of the test's CA from a kubelet-style volume.
struct Hook {
    daemon: Daemon,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    volume: AtomicWriter,
    client: Arc<rustls::ClientConfig>,
}

impl Hook {
    /// Started with the serving pair of serial `first`, and `extra` flags.
    fn start(first: u32, extra: &[&str]) -> Hook {
        let dir = tempdir();
        ca(dir.path(), "hook-ca");
        let volume = AtomicWriter::new(dir.path().join("certs"));
        let hook_dir = dir.path().to_path_buf();
        let pair = leaf(
            &hook_dir,
            "hook-ca",
            NAME,
            &format!("subjectAltName=DNS:{NAME}"),
            first,
        );
        volume
            .write(&[("tls.crt", &pair.0), ("tls.key", &pair.1)])
            .unwrap();
        let mut cmd = Command::new(inject_bin());
        cmd.arg("webhook")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--tls-cert-file")
            .arg(volume.dir().join("tls.crt"))
            .arg("--tls-key-file")
            .arg(volume.dir().join("tls.key"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let daemon = Daemon::spawn(cmd);
        let admin = eventually(
            "the admin address in the log",
            || {
                let log = daemon.log();
                let at = log.split(" admin=").nth(1)?.split_whitespace().next()?;
                at.parse::<SocketAddr>().ok()
            },
            Option::is_some,
        )
        .unwrap();
        let client = client_config(&dir.path().join("hook-ca.crt"));
        Hook {
            daemon,
            admin,
            dir,
            volume,
            client,
        }
    }

    /// A TLS session with the webhook (`webhook.test`, the test's CA).
    fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let tcp = TcpStream::connect_timeout(&self.daemon.addr, Duration::from_secs(5)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let name = ServerName::try_from(NAME).unwrap().to_owned();
        let conn = rustls::ClientConnection::new(self.client.clone(), name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }

    /// `POST /mutate` with `body`: (status, body).
    fn post(&self, body: &[u8]) -> (u16, String) {
        let mut s = self.connect();
        let head = format!(
            "POST /mutate HTTP/1.1\r\nHost: {NAME}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.flush().unwrap();
        response(&mut s)
    }

    /// A review's answer, checked to be an allowed AdmissionReview for `uid`.
    fn allowed(&self, review: &Value) -> Value {
        let (status, body) = self.post(review.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("an AdmissionReview");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "{body}"
        );
        assert_eq!(answer["response"]["allowed"], true, "{body}");
        answer
    }

    /// The admin port's `/metrics`.
    fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").expect("GET /metrics").1
    }

    /// `secret_reloader_webhook_reviews_total{result}`.
    fn reviews(&self, result: &str) -> f64 {
        let name = "secret_reloader_webhook_reviews_total";
        metric(&self.metrics(), name, &[("result", result)]).unwrap_or(-1.0)
    }

    /// `secret_reloader_webhook_certificate_reloads_total{result}`.
    fn reloads(&self, result: &str) -> f64 {
        let name = "secret_reloader_webhook_certificate_reloads_total";
        metric(&self.metrics(), name, &[("result", result)]).unwrap_or(-1.0)
    }

    /// The serial of the certificate a new handshake gets, as openssl prints it.
    fn served_serial(&self) -> String {
        let port = self.daemon.addr.port();
        let script = format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {NAME} -showcerts </dev/null \
             2>/dev/null | openssl x509 -noout -serial"
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        out.trim().trim_start_matches("serial=").to_string()
    }

    /// A new serving pair of serial `n`: (cert, key) PEM.
    fn pair(&self, n: u32) -> (String, String) {
        leaf(
            self.dir.path(),
            "hook-ca",
            NAME,
            &format!("subjectAltName=DNS:{NAME}"),
            n,
        )
    }
}

fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Reads a response until the server closes: (status, body).
fn response(s: &mut impl Read) -> (u16, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Until the close (with or without TLS's close_notify) or a reset.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// An AdmissionReview of a Pod CREATE of `pod` in `shop`, with `uid`.
fn review(uid: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// A pod of a ReplicaSet (no name yet), mounting a Secret; with `annotations`.
fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d4b9-", "labels": {"app": "web"},
                     "annotations": annotations},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27",
                            "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls"}]}],
            "volumes": [{"name": "tls", "secret": {"secretName": "web-tls"}}]
        }
    })
}

#[test]
fn a_pod_without_the_annotation_is_allowed_unpatched_and_counted() {
    let hook = Hook::start(0x101, &[]);
    let answer = hook.allowed(&review("a1", pod(json!({"team": "shop"}))));
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    assert_eq!(hook.reviews("unchanged"), 1.0);
    let text = hook.metrics();
    assert!(
        metric(
            &text,
            "secret_reloader_webhook_review_duration_seconds_count",
            &[]
        ) == Some(1.0),
        "{text}"
    );
    // Nothing of the pod but its namespace and name is logged (here not even those: DEBUG).
    assert!(!hook.daemon.log().contains("nginx:1.27"));
}

#[test]
fn a_dry_run_is_answered_like_any_other_review() {
    let hook = Hook::start(0x101, &[]);
    let mut r = review("d1", pod(json!({})));
    r["request"]["dryRun"] = json!(true);
    let answer = hook.allowed(&r);
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert_eq!(hook.reviews("unchanged"), 1.0);
}

#[test]
fn reviews_it_cannot_handle_are_allowed_or_refused_counted_and_it_keeps_serving() {
    let hook = Hook::start(0x101, &[]);
    // Not a Pod CREATE: allowed, with a warning naming what it got.
    let mut deployment = review(
        "n1",
        json!({"kind": "Deployment", "metadata": {"name": "web"}}),
    );
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    let answer = hook.allowed(&deployment);
    let warning = answer["response"]["warnings"][0].as_str().unwrap_or("");
    assert!(warning.contains("Deployment"), "{answer}");
    // Another review version: allowed, answered in its own version.
    let mut old = review("v1", pod(json!({})));
    old["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let answer = hook.allowed(&old);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    assert!(
        answer["response"]["warnings"][0].as_str().is_some(),
        "{answer}"
    );
    // Not JSON: no uid to answer to, 400.
    let (status, body) = hook.post(b"{\"apiVersion\": \"admission.k8s.io/v1\", \"request\": ");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("malformed AdmissionReview"), "{body}");
    // Too large, said by Content-Length: refused before the body is read.
    let mut s = hook.connect();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: {}\r\n\r\n",
        4 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).unwrap();
    s.flush().unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, 413, "{body}");
    // Too large, found while reading a chunked body: every byte sent is read, then 413.
    let mut s = hook.connect();
    let head =
        format!("POST /mutate HTTP/1.1\r\nHost: {NAME}\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..(3 * 16 + 1) {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.flush();
    let (status, body) = response(&mut s);
    assert_eq!(status, 413, "{body}");

    // Still serving, and each one counted.
    hook.allowed(&review("after", pod(json!({}))));
    for (result, n) in [
        ("not_pod", 1.0),
        ("unsupported", 1.0),
        ("malformed", 1.0),
        ("too_large", 2.0),
        ("unchanged", 1.0),
    ] {
        assert_eq!(hook.reviews(result), n, "{result}:\n{}", hook.metrics());
    }
    assert!(hook.daemon.log().contains("result=\"too_large\""));
}

#[test]
fn a_slow_client_holds_no_other_review() {
    let hook = Hook::start(0x101, &[]);
    // One that never says hello, one that sends half a head, one that sends half a body.
    let silent = TcpStream::connect(hook.daemon.addr).unwrap();
    let mut half_head = hook.connect();
    half_head
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: webh")
        .unwrap();
    half_head.flush().unwrap();
    let mut half_body = hook.connect();
    let body = review("slow", pod(json!({}))).to_string();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    half_body.write_all(head.as_bytes()).unwrap();
    half_body
        .write_all(&body.as_bytes()[..body.len() / 2])
        .unwrap();
    half_body.flush().unwrap();

    // Another review is answered meanwhile, well within the slow ones' limits (5 s, 10 s).
    let started = Instant::now();
    hook.allowed(&review("quick", pod(json!({}))));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // The half body runs out of time: 408, counted.
    let (status, body) = response(&mut half_body);
    assert_eq!(status, 408, "{body}");
    eventually(
        "the timeout counted",
        || hook.reviews("timeout"),
        |n| *n == 1.0,
    );
    // The half head and the silent one were closed, counted as header timeouts.
    let (status, _) = response(&mut half_head);
    assert_eq!(status, 0, "no answer to half a head");
    eventually(
        "the slow head and handshake counted",
        || {
            let name = "secret_reloader_webhook_connections_dropped_total";
            metric(&hook.metrics(), name, &[("reason", "header_timeout")])
        },
        |n| *n == Some(2.0),
    );
    drop(silent);
}

#[test]
fn the_certificate_rotates_in_a_kubelet_volume_without_a_restart() {
    let hook = Hook::start(0x101, &[]);
    let pid = hook.daemon.pid();
    let data = hook.volume.dir().join("..data");
    let first_dir = std::fs::read_link(&data).unwrap();
    assert!(
        first_dir.to_string_lossy().starts_with(".."),
        "{first_dir:?}"
    );
    let first = serial(
        hook.dir.path(),
        &std::fs::read_to_string(hook.volume.dir().join("tls.crt")).unwrap(),
    );
    assert_eq!(hook.served_serial(), first);

    // kubelet's swap: a new timestamped directory, `..data` renamed over.
    let second = hook.pair(0x102);
    hook.volume
        .write(&[("tls.crt", &second.0), ("tls.key", &second.1)])
        .unwrap();
    assert_ne!(std::fs::read_link(&data).unwrap(), first_dir);
    let second_serial = serial(hook.dir.path(), &second.0);
    eventually(
        "the new serial served",
        || hook.served_serial(),
        |s| *s == second_serial,
    );
    assert_eq!(hook.reloads("success"), 1.0);
    let expiry = metric(
        &hook.metrics(),
        "secret_reloader_webhook_certificate_expiry_timestamp_seconds",
        &[],
    );
    assert!(expiry.is_some_and(|e| e > 1.7e9), "{expiry:?}");

    // A certificate with another's key, then no PEM at all: refused, the previous pair served.
    let third = hook.pair(0x103);
    hook.volume
        .write(&[("tls.crt", &third.0), ("tls.key", &second.1)])
        .unwrap();
    eventually(
        "the mismatched pair refused",
        || (hook.served_serial(), hook.reloads("failure")),
        |(s, n)| *s == second_serial && *n == 1.0,
    );
    hook.volume
        .write(&[("tls.crt", "not PEM"), ("tls.key", "")])
        .unwrap();
    eventually(
        "the broken pair refused",
        || (hook.served_serial(), hook.reloads("failure")),
        |(s, n)| *s == second_serial && *n == 2.0,
    );
    assert!(
        hook.daemon
            .log()
            .contains("the previous pair is still served")
    );
    // And a good one after them is taken.
    hook.volume
        .write(&[("tls.crt", &third.0), ("tls.key", &third.1)])
        .unwrap();
    let third_serial = serial(hook.dir.path(), &third.0);
    eventually(
        "the third serial served",
        || hook.served_serial(),
        |s| *s == third_serial,
    );
    assert_eq!(hook.reloads("success"), 2.0);
    assert_eq!(hook.daemon.pid(), pid);
    hook.allowed(&review("after-rotation", pod(json!({}))));
}

#[test]
fn probes_and_metrics_on_both_ports_and_sigterm_finishes_the_review_in_flight() {
    let mut hook = Hook::start(0x101, &[]);
    for path in ["/healthz", "/readyz"] {
        let (status, _) = http_get(hook.admin, path).unwrap();
        assert_eq!(status, 200, "{path}");
    }
    let text = hook.metrics();
    for name in [
        "secret_reloader_build_info",
        "secret_reloader_webhook_reviews_total",
        "secret_reloader_webhook_review_duration_seconds_bucket",
        "secret_reloader_webhook_certificate_reloads_total",
        "secret_reloader_webhook_certificate_expiry_timestamp_seconds",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    // The admin port serves only the three.
    assert_eq!(http_get(hook.admin, "/mutate").unwrap().0, 404);
    // The HTTPS port serves them too.
    let mut s = hook.connect();
    s.write_all(
        format!("GET /readyz HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(response(&mut s).0, 200);

    // A review in flight (half its body sent) when SIGTERM comes is still answered.
    let mut in_flight = hook.connect();
    let body = review("last", pod(json!({}))).to_string();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).unwrap();
    in_flight.write_all(&body.as_bytes()[..10]).unwrap();
    in_flight.flush().unwrap();
    eventually(
        "the review in flight",
        || hook.metrics(),
        |t| metric(t, "secret_reloader_webhook_connections_open", &[]).is_some_and(|n| n >= 2.0),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hook.daemon.pid()),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    eventually(
        "the shutdown logged",
        || hook.daemon.log(),
        |l| l.contains("shutting down"),
    );
    in_flight.write_all(&body.as_bytes()[10..]).unwrap();
    in_flight.flush().unwrap();
    let (status, answer) = response(&mut in_flight);
    assert_eq!(status, 200, "{answer}");
    let status = hook.daemon.exited("SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", hook.daemon.log());
}

#[test]
fn a_bad_pair_at_start_is_an_error_and_bad_flags_are_usage_errors() {
    let dir = tempdir();
    ca(dir.path(), "hook-ca");
    let a = leaf(
        dir.path(),
        "hook-ca",
        NAME,
        "subjectAltName=DNS:webhook.test",
        1,
    );
    let b = leaf(
        dir.path(),
        "hook-ca",
        NAME,
        "subjectAltName=DNS:webhook.test",
        2,
    );
    let (crt, key): (PathBuf, PathBuf) = (dir.path().join("a.crt"), dir.path().join("b.key"));
    std::fs::write(&crt, &a.0).unwrap();
    std::fs::write(&key, &b.1).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "none",
        ];
        args.extend(["--tls-cert-file", crt.to_str().unwrap()]);
        args.extend(["--tls-key-file", key.to_str().unwrap()]);
        args.extend(extra);
        run_inject_bin(&os(&args))
    };
    let e = run(&[]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert!(
        e.stderr.contains("is not the key of --tls-cert-file"),
        "{}",
        e.stderr
    );
    std::fs::write(&key, "no key here").unwrap();
    let e = run(&[]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert!(
        e.stderr.contains("--tls-key-file") && e.stderr.contains("no private key"),
        "{}",
        e.stderr
    );
    let e = run(&["--listen", "nowhere"]);
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("--listen"), "{}", e.stderr);
}

/// Applies an RFC 6902 patch of `add`, `remove` and `replace` operations to `doc`.
fn apply(mut doc: Value, ops: &Value) -> Value {
    for op in ops.as_array().expect("a list of operations") {
        let path = op["path"].as_str().unwrap();
        if path.is_empty() {
            doc = op["value"].clone();
            continue;
        }
        let tokens: Vec<String> = path[1..]
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = tokens.split_last().unwrap();
        let mut at = &mut doc;
        for t in parents {
            at = match at {
                Value::Array(v) => &mut v[t.parse::<usize>().unwrap()],
                other => other
                    .get_mut(t.as_str())
                    .unwrap_or_else(|| panic!("no {t} in {path}")),
            };
        }
        match (op["op"].as_str().unwrap(), at) {
            ("remove", Value::Object(m)) => {
                m.shift_remove(last).unwrap();
            }
            (_, Value::Object(m)) => {
                m.insert(last.clone(), op["value"].clone());
            }
            ("replace", Value::Array(v)) => v[last.parse::<usize>().unwrap()] = op["value"].clone(),
            (o, _) => panic!("{o} at {path} is not applicable"),
        }
    }
    doc
}

/// An annotated pod's review against what `inject::pod` makes of it with the same flags: the
/// patch (when `inject` changes the pod) applied to the pod gives exactly that.
fn annotated_pod_answer(must_inject: bool) {
    let hook = Hook::start(0x101, &["--image", "secret-reloader:test"]);
    let pod = pod(json!({"secret-reloader.io/inject": "true",
        "secret-reloader.io/process-name": "nginx", "secret-reloader.io/app-uid": "101"}));
    let flags = secret_reloader::inject::InjectFlags {
        image: "secret-reloader:test".into(),
        layout: secret_reloader::inject::Layout::Native,
        all: false,
    };
    let expected = secret_reloader::inject::pod(&pod, &flags).expect("injectable");
    let answer = hook.allowed(&review("i1", pod.clone()));
    let response = &answer["response"];
    match (&expected, response.get("patch")) {
        (Some(new), Some(patch)) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64ct::Base64::decode_vec(patch.as_str().unwrap()).unwrap();
            let ops: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(&apply(pod.clone(), &ops), new, "the patch: {ops}");
            assert_eq!(hook.reviews("injected"), 1.0);
            assert!(hook.daemon.log().contains("sidecar injected"));
            // A pod created from an injected template is left as it is.
            let again = hook.allowed(&review("i2", new.clone()));
            assert!(again["response"].get("patch").is_none(), "{again}");
            assert_eq!(hook.reviews("unchanged"), 1.0);
        }
        (None, None) => {
            assert!(!must_inject, "inject::pod did not inject an annotated pod");
            assert_eq!(hook.reviews("unchanged"), 1.0);
        }
        (e, p) => panic!("inject::pod gives {e:?}, the webhook's patch is {p:?}"),
    }
}

#[test]
fn an_annotated_pod_gets_the_patch_to_what_inject_makes() {
    annotated_pod_answer(true);
}
