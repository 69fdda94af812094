//! HAProxy (the Debian package) in master-worker mode, serving TLS from a combined PEM in a
//! kubelet-style volume: the Secret rotates, the daemon sends USR2 to the master (which starts
//! new workers with the new certificate), and the certificate served becomes the new one, as the
//! daemon's `--verify-served-cert` and `openssl s_client` see it.
//!
//! HAProxy and the daemon run in their own PID namespace, as in a pod with
//! `shareProcessNamespace: true`: `--process-name haproxy` sees this test's master and workers,
//! and picks the master (the top-level match).

use std::path::Path;

use crate::support::tls::{KeyKind, pair, served_subject};
use crate::support::{AtomicWriter, daemon_beside, eventually, free_port, tempdir};

/// Requires the Debian package: `scripts/test` installs it. Its absence is a failure, not a skip.
pub fn haproxy() -> &'static str {
    let path = "/usr/sbin/haproxy";
    assert!(
        Path::new(path).exists(),
        "HAProxy is not installed: apt-get install haproxy (see scripts/test)"
    );
    path
}

#[test]
fn haproxy_serves_the_rotated_certificate_after_usr2_to_its_master() {
    let dir = tempdir();
    let p = dir.path();
    let vol = p.join("tls");
    let w = AtomicWriter::new(&vol);
    let (crt1, key1) = pair(p, "hap-v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(p, "hap-v2", KeyKind::RsaPkcs8);
    w.write(&[("tls.pem", format!("{crt1}{key1}"))]).unwrap();
    let port = free_port();
    let conf = p.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  master-worker\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n\
             timeout server 5s\nfrontend f\n  bind 127.0.0.1:{port} ssl crt {}/tls.pem\n\
             http-request return status 200 content-type text/plain string ok\n",
            vol.display()
        ),
    )
    .unwrap();
    let app = format!(
        "{} -W -db -f {} >{}/haproxy.log 2>&1",
        haproxy(),
        conf.display(),
        p.display()
    );
    let served = format!("127.0.0.1:{port}");
    let d = daemon_beside(
        &app,
        &[
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            "haproxy",
            "--signal",
            "USR2",
            "--verify-served-cert",
            &served,
            "--min-reload-interval",
            "0",
        ],
    );
    d.wait_ready();
    eventually(
        "HAProxy to serve v1",
        || served_subject(port),
        |s| s.contains("CN=hap-v1"),
    );

    w.write(&[("tls.pem", format!("{crt2}{key2}"))]).unwrap();
    let t = eventually(
        "the rotation applied: HAProxy serving v2",
        || d.status()["targets"][0].clone(),
        |t| {
            t["stale"] == false
                && t["served_certificate"]["matches_disk"] == true
                && t["last_attempt"]["result"] == "success"
        },
    );
    let detail = t["last_attempt"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("SIGUSR2 sent to pid") && detail.contains("serves the certificate on disk"),
        "{detail}"
    );
    // Old workers finish their connections and release the port shortly after the new ones
    // serve: a client converges on the new certificate.
    eventually(
        "openssl to see v2",
        || served_subject(port),
        |s| s.contains("CN=hap-v2"),
    );
    let log = std::fs::read_to_string(p.join("haproxy.log")).unwrap_or_default();
    assert!(log.contains("Reloading HAProxy"), "{log}");
}
