//! HTTPS and mTLS reload calls against nginx (the Debian package) on 127.0.0.1, with a CA,
//! server and client certificates made by openssl in the test: the right client certificate is
//! let in and logged by its serial; one rotated in its own kubelet-style volume is the one the
//! next call presents (the kept session made with the old one is not used again); a wrong CA, a
//! name the certificate does not carry and a missing client certificate fail with messages that
//! say what to fix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::native::exited_within;
use crate::support::tls::{ca, leaf};
use crate::support::{AtomicWriter, Daemon, credential, eventually, free_port, tempdir};

/// The extension of client certificates.
const CLIENT: &str = "extendedKeyUsage=clientAuth";

/// nginx serving HTTPS on `port`, requiring client certificates issued by `client_ca`; its
/// access log holds `SERIAL URI` per request. Stopped (TERM, then KILL) when dropped.
struct Nginx {
    child: Child,
    log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, port: u16, server: (&str, &str), client_ca: &Path) -> Nginx {
        let d = dir.join("nginx");
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        std::fs::write(d.join("server.crt"), server.0).unwrap();
        std::fs::write(d.join("server.key"), server.1).unwrap();
        let (dd, ca) = (d.display(), client_ca.display());
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {dd}/nginx.pid;\n\
             error_log {dd}/error.log notice;\nevents {{ worker_connections 64; }}\n\
             http {{\n  log_format serial '$ssl_client_serial $status $request_uri';\n\
             access_log {dd}/access.log serial;\n  client_body_temp_path {dd}/tmp;\n\
             proxy_temp_path {dd}/tmp;\n  fastcgi_temp_path {dd}/tmp;\n  uwsgi_temp_path {dd}/tmp;\n\
             scgi_temp_path {dd}/tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {dd}/server.crt;\n    ssl_certificate_key {dd}/server.key;\n\
             ssl_client_certificate {ca};\n    ssl_verify_client on;\n\
             location / {{ return 200 \"reloaded\\n\"; }}\n  }}\n}}\n"
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let nginx = "/usr/sbin/nginx";
        assert!(
            Path::new(nginx).exists(),
            "nginx is not installed: apt-get install nginx-light (see .ci/run)"
        );
        let child = Command::new(nginx)
            .args([
                "-e",
                &format!("{dd}/error.log"),
                "-c",
                &format!("{dd}/nginx.conf"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let n = Nginx {
            child,
            log: d.join("access.log"),
        };
        eventually(
            "nginx listening",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            |up| *up,
        );
        n
    }

    /// `(client serial, status)` of each request so far.
    fn requests(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if exited_within(&mut self.child, std::time::Duration::from_secs(5)) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA for the server, one for clients, nginx requiring client certificates, and a client
/// certificate (serial 0x1001) in a kubelet-style volume.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    nginx: Nginx,
    client: AtomicWriter,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempdir();
        let p = dir.path();
        ca(p, "server-ca");
        let client_ca = ca(p, "client-ca");
        let server = leaf(
            p,
            "server-ca",
            "reload.test",
            "subjectAltName=DNS:reload.test",
            7,
        );
        let port = free_port();
        let nginx = Nginx::start(p, port, (&server.0, &server.1), &client_ca);
        let client = AtomicWriter::new(p.join("client"));
        let (crt, key) = leaf(p, "client-ca", "sidecar", CLIENT, 0x1001);
        client.write(&[("tls.crt", crt), ("tls.key", key)]).unwrap();
        Setup {
            dir,
            port,
            nginx,
            client,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// A daemon watching `app` calling nginx over HTTPS as `host`, with `extra` flags.
    fn daemon(&self, app: &Path, host: &str, extra: &[&str]) -> Daemon {
        let url = format!("https://{host}:{}/-/reload", self.port);
        let mut args = vec![
            "--watch".to_string(),
            app.to_str().unwrap().to_string(),
            "--reload-url".into(),
            url,
            "--min-reload-interval".into(),
            "0".into(),
            "--retry-backoff-max".into(),
            "200ms".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Daemon::start(&args);
        d.wait_ready();
        d
    }
}

#[test]
fn https_reload_with_a_client_certificate_reaches_nginx_and_follows_its_rotation() {
    let s = Setup::new();
    let app = s.dir.path().join("app");
    let w = AtomicWriter::new(&app);
    w.write(&[("token", credential("1"))]).unwrap();
    let client = s.dir.path().join("client");
    let (ca, crt, key) = (
        s.path("server-ca.crt"),
        format!("{}/tls.crt", client.display()),
        format!("{}/tls.key", client.display()),
    );
    let d = s.daemon(
        &app,
        "127.0.0.1",
        &[
            "--watch",
            client.to_str().unwrap(),
            "--tls-ca-file",
            &ca,
            "--tls-server-name",
            "reload.test",
            "--tls-client-cert-file",
            &crt,
            "--tls-client-key-file",
            &key,
        ],
    );
    let calls = |n: usize| {
        eventually(
            &format!("{n} reload calls in nginx's log"),
            || s.nginx.requests(),
            |r| r.len() >= n,
        )
    };
    w.write(&[("token", credential("2"))]).unwrap();
    let r = calls(1);
    assert_eq!(r[0], ("1001".to_string(), "200".to_string()), "{r:?}");

    // The client certificate rotates in its own watched volume: that change is a reload too,
    // and it must already present the new certificate.
    let (crt2, key2) = leaf(s.dir.path(), "client-ca", "sidecar", CLIENT, 0x2002);
    s.client
        .write(&[("tls.crt", crt2), ("tls.key", key2)])
        .unwrap();
    let r = calls(2);
    assert_eq!(r[1], ("2002".to_string(), "200".to_string()), "{r:?}");
    w.write(&[("token", credential("3"))]).unwrap();
    let r = calls(3);
    assert_eq!(r[2], ("2002".to_string(), "200".to_string()), "{r:?}");
    let target = format!("https://127.0.0.1:{}/-/reload", s.port);
    assert_eq!(
        d.metric("tls_insecure_skip_verify", &[("target", &target)]),
        Some(0.0)
    );
    let status = d.status();
    let tls = &status["config"]["groups"][0]["targets"][0]["action"]["tls"];
    assert_eq!(tls["server_name"], "reload.test", "{status}");
    assert_eq!(tls["insecure_skip_verify"], false, "{status}");
    let log = d.log();
    assert!(!log.contains("BEGIN"), "no PEM in the log: {log}");
}

#[test]
fn https_failures_name_the_missing_issuer_the_names_carried_and_a_missing_client_certificate() {
    let s = Setup::new();
    let app = s.dir.path().join("app");
    let w = AtomicWriter::new(&app);
    w.write(&[("token", credential("1"))]).unwrap();
    let client = s.dir.path().join("client");
    let (crt, key) = (
        format!("{}/tls.crt", client.display()),
        format!("{}/tls.key", client.display()),
    );
    let mtls = [
        "--tls-client-cert-file",
        &crt,
        "--tls-client-key-file",
        &key,
    ];
    let (server_ca, client_ca) = (s.path("server-ca.crt"), s.path("client-ca.crt"));

    // The CA file holds another CA than the one that issued nginx's certificate.
    let mut a = vec![
        "--tls-ca-file",
        client_ca.as_str(),
        "--tls-server-name",
        "reload.test",
    ];
    a.extend(mtls);
    let wrong_ca = s.daemon(&app, "127.0.0.1", &a);
    // The URL's host is not a name the certificate carries.
    let mut a = vec!["--tls-ca-file", server_ca.as_str()];
    a.extend(mtls);
    let wrong_name = s.daemon(&app, "127.0.0.1", &a);
    // No client certificate: nginx completes the handshake and answers 400.
    let a = [
        "--tls-ca-file",
        server_ca.as_str(),
        "--tls-server-name",
        "reload.test",
    ];
    let no_client = s.daemon(&app, "127.0.0.1", &a);
    // Any certificate accepted: warned, shown, and the call goes through.
    let mut a = vec!["--tls-insecure-skip-verify"];
    a.extend(mtls);
    let insecure = s.daemon(&app, "127.0.0.1", &a);

    w.write(&[("token", credential("2"))]).unwrap();
    let logged = |d: &Daemon, what: &str, text: &str| {
        eventually(what, || d.log(), |l| l.contains(text));
    };
    logged(
        &wrong_ca,
        "the unknown issuer explained",
        "is issued by 'CN=server-ca', which --tls-ca-file",
    );
    assert!(wrong_ca.log().contains(&client_ca), "{}", wrong_ca.log());
    logged(
        &wrong_name,
        "the names the certificate carries",
        "names reload.test, not '127.0.0.1': set --tls-server-name",
    );
    logged(&no_client, "nginx's refusal", "answered 400");
    logged(
        &insecure,
        "the warning",
        "the endpoint's certificate is not verified (--tls-insecure-skip-verify)",
    );
    let target = format!("https://127.0.0.1:{}/-/reload", s.port);
    eventually(
        "the insecure target's reload",
        || {
            insecure.metric(
                "reloads_total",
                &[("target", &target), ("result", "success")],
            )
        },
        |v| v.is_some_and(|v| v >= 1.0),
    );
    assert_eq!(
        insecure.metric("tls_insecure_skip_verify", &[("target", &target)]),
        Some(1.0)
    );
    for d in [&wrong_ca, &wrong_name, &no_client] {
        let ok = d.metric(
            "reloads_total",
            &[("target", &target), ("result", "success")],
        );
        assert_eq!(ok.unwrap_or(0.0), 0.0, "no call succeeded: {}", d.log());
        let status = d.status();
        assert_eq!(status["targets"][0]["stale"], true, "{status}");
    }
}

#[test]
fn a_config_file_target_carries_its_own_tls_for_its_reload_and_verify_calls() {
    let s = Setup::new();
    let app = s.dir.path().join("app");
    let w = AtomicWriter::new(&app);
    w.write(&[("token", credential("1"))]).unwrap();
    let client = s.dir.path().join("client");
    let tls = serde_json::json!({
        "ca_file": s.path("server-ca.crt"),
        "server_name": "reload.test",
        "client_cert_file": client.join("tls.crt"),
        "client_key_file": client.join("tls.key"),
    });
    let config = serde_json::json!({"groups": [{
        "name": "app",
        "watch": [app],
        "min_reload_interval": "0s",
        "targets": [{
            "type": "http",
            "name": "nginx",
            "url": format!("https://127.0.0.1:{}/-/reload", s.port),
            "verify_url": format!("https://127.0.0.1:{}/ready", s.port),
            "tls": tls,
        }],
    }]});
    let file = s.dir.path().join("config.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let d = Daemon::start(&["--config", file.to_str().unwrap()]);
    d.wait_ready();
    w.write(&[("token", credential("2"))]).unwrap();
    eventually(
        "a verified reload",
        || {
            d.metric(
                "verify_total",
                &[("target", "nginx"), ("result", "success")],
            )
        },
        |v| v.is_some_and(|v| v >= 1.0),
    );
    // nginx logs a request after answering it: its log may lag the daemon's counters.
    eventually(
        "the reload call and the verify probe in nginx's log, with the client certificate",
        || s.nginx.requests(),
        |r| {
            r.iter()
                .filter(|(serial, status)| serial == "1001" && status == "200")
                .count()
                >= 2
        },
    );
    let status = d.status();
    let target = &status["config"]["groups"][0]["targets"][0];
    assert_eq!(
        target["verify"]["tls"]["server_name"], "reload.test",
        "{target}"
    );

    // An unknown TLS field is an error at start, named.
    let mut bad = config.clone();
    bad["groups"][0]["targets"][0]["tls"]["ca"] = "x".into();
    std::fs::write(&file, bad.to_string()).unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca"), "{err}");
}
