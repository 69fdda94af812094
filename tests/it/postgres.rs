//! PostgreSQL 15 (the Debian package) with `ssl = on`, its `server.crt`/`server.key` in a
//! kubelet-style volume of an `fsGroup` pod (root:postgres, 0640, as PostgreSQL demands of a key
//! it does not own): the Secret rotates, the daemon sends SIGHUP to the postmaster, and the
//! certificate PostgreSQL serves (read after an SSLRequest, by the daemon and by `openssl
//! s_client -starttls postgres`) becomes the new one; only then does the reload count.
//!
//! PostgreSQL and the daemon run in their own PID namespace, as in a pod with
//! `shareProcessNamespace: true`: `--process-name postgres` sees this test's server only.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use secret_reloader::demo::atomic_writer::Key;

use crate::support::tls::{KeyKind, pair, serial, served_subject_postgres as served_subject};
use crate::support::{AtomicWriter, daemon_beside, eventually, free_port, tempdir};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The `postgres` account the Debian package creates: (uid, gid).
fn account() -> (u32, u32) {
    assert!(
        Path::new(BIN).join("postgres").exists(),
        "PostgreSQL 15 is not installed: apt-get install postgresql-15 (see scripts/test)"
    );
    let u = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres account (created by the postgresql-15 package)");
    (u.uid.as_raw(), u.gid.as_raw())
}

fn tls_keys(crt: &str, key: &str) -> BTreeMap<String, Key> {
    let key_of = |data: &str| Key {
        data: data.as_bytes().to_vec(),
        mode: 0o640,
    };
    BTreeMap::from([
        ("server.crt".to_string(), key_of(crt)),
        ("server.key".to_string(), key_of(key)),
    ])
}

#[test]
fn postgres_serves_the_rotated_certificate_after_sighup_to_the_postmaster() {
    let (uid, gid) = account();
    let dir = tempdir();
    let p = dir.path();
    // The postgres account must reach its data directory and the volume.
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let vol = p.join("tls");
    let w = AtomicWriter::new(&vol).with_group(gid);
    let (crt1, key1) = pair(p, "pg-v1", KeyKind::EcPkcs8);
    let (crt2, key2) = pair(p, "pg-v2", KeyKind::EcPkcs8);
    let s2 = serial(p, &crt2);
    w.write_keys(&tls_keys(&crt1, &key1)).unwrap();

    let data = p.join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let as_postgres = |cmd: &str| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--clear-groups",
        ])
        .arg(Path::new(BIN).join(cmd));
        c
    };
    let out = as_postgres("initdb")
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth",
            "trust",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let (v, d, dd) = (vol.display(), p.display(), data.display());
    std::fs::write(
        data.join("postgresql.auto.conf"),
        format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dd}'\n\
             ssl = on\nssl_cert_file = '{v}/server.crt'\nssl_key_file = '{v}/server.key'\n"
        ),
    )
    .unwrap();

    // PostgreSQL in the background, the daemon as PID 1 of a new PID namespace.
    let served = format!("postgres://127.0.0.1:{port}");
    let app = format!(
        "setpriv --reuid postgres --regid postgres --clear-groups {BIN}/postgres -D {} \
         >{d}/postgres.log 2>&1",
        data.display()
    );
    let vol_s = vol.to_str().unwrap();
    let daemon = daemon_beside(
        &app,
        &[
            "--watch",
            vol_s,
            "--process-name",
            "postgres",
            "--verify-served-cert",
            &served,
            "--min-reload-interval",
            "0",
        ],
    );
    daemon.wait_ready();
    eventually(
        "PostgreSQL to serve v1",
        || served_subject(port),
        |s| s.contains("CN=pg-v1"),
    );

    w.write_keys(&tls_keys(&crt2, &key2)).unwrap();
    let t = eventually(
        "the rotation applied: PostgreSQL serving v2",
        || daemon.status()["targets"][0].clone(),
        |t| t["stale"] == false && t["served_certificate"]["serial"] == s2.as_str(),
    );
    assert_eq!(t["served_certificate"]["matches_disk"], true, "{t}");
    assert_eq!(t["served_certificate"]["endpoint"], served.as_str(), "{t}");
    let detail = t["last_attempt"]["detail"].as_str().unwrap();
    let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    let master = pid.lines().next().unwrap().trim().to_string();
    assert!(
        detail.contains(&format!("SIGHUP sent to pid {master}"))
            && detail.contains("serves the certificate on disk"),
        "{detail} (postmaster {master})"
    );
    // Forked per connection, each look's backend stands for the postmaster, the one process
    // holding the port: PostgreSQL has one worker, seen through its backends.
    let sc = &t["served_certificate"];
    assert_eq!(sc["per_worker"], true, "{sc}");
    assert_eq!(sc["workers"].as_array().map(Vec::len), Some(1), "{sc}");
    assert_eq!(sc["workers"][0]["pid"].to_string(), master, "{sc}");
    assert_eq!(sc["workers"][0]["serial"], s2.as_str(), "{sc}");
    assert!(detail.contains("(seen through pid"), "{detail}");
    assert!(served_subject(port).contains("CN=pg-v2"));
    let log = std::fs::read_to_string(p.join("postgres.log")).unwrap_or_default();
    assert!(
        log.contains("received SIGHUP, reloading configuration files"),
        "{log}"
    );
}
