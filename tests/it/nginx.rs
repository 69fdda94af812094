//! nginx end to end: nginx (the Debian package) serves TLS from a kubelet-style volume on
//! 127.0.0.1; the Secret rotates; the daemon, told `--process-name nginx`, sends SIGHUP to the
//! master; the certificate served changes, as a TLS client sees it.
//!
//! nginx and the daemon run in their own PID namespace (`unshare --pid`), as in a pod with
//! `shareProcessNamespace: true`: `--process-name nginx` then sees this test's nginx only, and
//! when the daemon (PID 1 there) ends, the kernel ends everything in the namespace.

use std::path::Path;
use std::time::Duration;

use crate::support::tls::{KeyKind, pair, served_subject};
use crate::support::{
    AtomicWriter, Daemon, daemon_beside, eventually, free_port, let_content_age, now_ns, tempdir,
};

/// Requires the Debian package: `.ci/run` installs it. Its absence is a failure, not a skip.
fn nginx() -> &'static str {
    let path = "/usr/sbin/nginx";
    assert!(
        Path::new(path).exists(),
        "nginx is not installed: apt-get install nginx-light (see .ci/run)"
    );
    path
}

/// Writes an nginx configuration serving TLS from `vol` on `port`, everything under `dir`.
pub fn nginx_conf(dir: &Path, vol: &Path, port: u16) -> std::path::PathBuf {
    nginx_conf_with(dir, 2, &tls_server(vol, &format!("127.0.0.1:{port} ssl")))
}

/// A server block's body listening on `listen` (`ADDR:PORT ssl …`) with the pair in `vol`.
pub fn tls_server(vol: &Path, listen: &str) -> String {
    let v = vol.display();
    format!(
        "listen {listen};\n    ssl_certificate {v}/tls.crt;\n    \
         ssl_certificate_key {v}/tls.key;\n    location / {{ return 200 \"ok\\n\"; }}"
    )
}

/// Writes an nginx configuration with `workers` worker processes and one server block of
/// `server`, everything (pid file, log, temporary files) under `dir`.
pub fn nginx_conf_with(dir: &Path, workers: u32, server: &str) -> std::path::PathBuf {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\nuser root;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log notice;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
         fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
         server {{\n    {server}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    path
}

/// nginx and the daemon (with `daemon_args`) in a new PID namespace.
pub fn nginx_and_daemon(dir: &Path, conf: &Path, daemon_args: &[&str]) -> Daemon {
    let app = format!(
        "{} -e {}/error.log -c {}",
        nginx(),
        dir.display(),
        conf.display()
    );
    daemon_beside(&app, daemon_args)
}

/// nginx serving the v1 pair already in `vol` (started clearly after that content), with the
/// daemon told `--process-name nginx`; returns nginx's port and the daemon.
///
/// The daemon resyncs every second, so that a scan after a test's last change is certain (a
/// swap is scanned at once, maybe before the test reads the clock): a resync finds the same
/// content, or content still held back, and no attempt fails (nothing to retry).
fn serving_v1(dir: &Path, vol: &Path) -> (u16, Daemon) {
    let_content_age();
    let port = free_port();
    let conf = nginx_conf(dir, vol, port);
    let d = nginx_and_daemon(
        dir,
        &conf,
        &[
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            "nginx",
            "--resync-interval",
            "1s",
        ],
    );
    d.wait_ready();
    eventually(
        "nginx to serve v1",
        || served_subject(port),
        |s| s.contains("CN=v1"),
    );
    (port, d)
}

#[test]
fn nginx_serves_the_rotated_certificate_after_one_sighup_to_its_master() {
    let dir = tempdir();
    let vol = dir.path().join("tls");
    let w = AtomicWriter::new(&vol);
    let (crt1, key1) = pair(dir.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(dir.path(), "v2", KeyKind::EcPkcs8);
    w.write(&[("tls.crt", &crt1), ("tls.key", &key1)]).unwrap();
    // The daemon's first scan starts after `t`.
    let t = now_ns();
    let (port, d) = serving_v1(dir.path(), &vol);
    d.passed(t);
    assert_eq!(d.signals_sent(), 0.0, "no signal at start");
    let log = || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert_eq!(
        log().matches("(SIGHUP) received").count(),
        0,
        "no reload at start: nginx read this content"
    );

    w.write(&[("tls.crt", &crt2), ("tls.key", &key2)]).unwrap();
    let t = now_ns();
    eventually(
        "nginx to serve v2",
        || served_subject(port),
        |s| s.contains("CN=v2"),
    );
    d.passed(t);
    assert_eq!(d.signals_sent(), 1.0, "one signal for one rotation");
    let log = log();
    assert_eq!(
        log.matches("(SIGHUP) received").count(),
        1,
        "exactly one SIGHUP: {log}"
    );
    let master = std::fs::read_to_string(dir.path().join("nginx.pid")).unwrap();
    let status = d.status();
    let detail = status["targets"][0]["last_attempt"]["detail"]
        .as_str()
        .unwrap();
    assert!(
        detail.contains(&format!("SIGHUP sent to pid {} (nginx)", master.trim())),
        "{detail} vs master {master}"
    );
}

#[test]
fn half_written_rotation_never_reaches_nginx() {
    let dir = tempdir();
    let vol = dir.path().join("tls");
    std::fs::create_dir(&vol).unwrap();
    let (crt1, key1) = pair(dir.path(), "v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(dir.path(), "v2", KeyKind::RsaPkcs8);
    std::fs::write(vol.join("tls.crt"), &crt1).unwrap();
    std::fs::write(vol.join("tls.key"), &key1).unwrap();
    let (port, d) = serving_v1(dir.path(), &vol);

    // A writer that is not kubelet: the certificate first, the key two seconds later.
    std::fs::write(vol.join("tls.crt"), &crt2).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(vol.join("tls.key"), &key2).unwrap();
    let t = now_ns();
    eventually(
        "nginx to serve v2",
        || served_subject(port),
        |s| s.contains("CN=v2"),
    );
    d.passed(t);
    assert_eq!(d.signals_sent(), 1.0, "one signal, for the completed pair");
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(
        !log.contains("key values mismatch"),
        "nginx was reloaded into a mismatched pair:\n{log}"
    );
    assert_eq!(log.matches("(SIGHUP) received").count(), 1, "{log}");
}
