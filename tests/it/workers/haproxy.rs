//! HAProxy (the Debian package) in master-worker mode, proxying a TCP connection to an upstream of
//! the test that holds it open: after USR2 (the master re-executes itself and forks a new worker)
//! the old worker keeps the connection, and the daemon names it until the connection closes.
//!
//! HAProxy and the daemon run in their own PID namespace, as in `tests/it/haproxy.rs`.

use super::{aged, consistent, counted_again, counts, older_pids, signals, target_when};
use crate::haproxy::haproxy;
use crate::support::held::{Client, Upstream, ns_pid};
use crate::support::process::running;
use crate::support::{
    credential, daemon_beside, eventually, free_port, let_content_age, tempdir, volume,
};

#[test]
fn haproxy_old_worker_holding_a_connection_is_named_until_it_closes() {
    let dir = tempdir();
    let p = dir.path();
    let (w, vol) = volume(p);
    let upstream = Upstream::start();
    let port = free_port();
    let conf = p.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  master-worker\ndefaults\n  mode tcp\n  timeout connect 1s\n\
             timeout client 1h\n  timeout server 1h\nfrontend f\n  bind 127.0.0.1:{port}\n\
             default_backend b\nbackend b\n  server up {}\n",
            upstream.addr
        ),
    )
    .unwrap();
    let_content_age();
    let log = p.join("haproxy.log");
    let app = format!(
        "{} -W -db -f {} >{} 2>&1",
        haproxy(),
        conf.display(),
        log.display()
    );
    let started = std::time::Instant::now();
    let d = daemon_beside(
        &app,
        &[
            "--watch",
            vol.to_str().unwrap(),
            "--process-name",
            "haproxy",
            "--signal",
            "USR2",
            "--min-reload-interval",
            "0",
            "--resync-interval",
            "1s",
            "--applied-when",
            "workers-replaced",
        ],
    );
    d.wait_ready();
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("HAProxy to be up", log, |l| l.contains("Loading success"));

    let client = Client::connect(port, "/hold");
    upstream.wait_held(1);
    let holders = client.proxy_side_holders();
    assert_eq!(
        holders.len(),
        1,
        "one process holds HAProxy's end: {holders:?}"
    );
    let host = holders[0];
    let old = i64::from(ns_pid(host).unwrap());
    assert!(
        log().contains(&format!("New worker ({old}) forked")),
        "the holder is HAProxy's worker {old}:\n{}",
        log()
    );

    aged(started);
    w.write(&[("token", credential("2"))]).unwrap();
    let t = target_when(&d, "the old worker named beside the new one", |t| {
        older_pids(t) == [old] && t["workers"]["total"] == 2
    });
    consistent(&t);
    assert_eq!(t["workers"]["older"][0]["name"], "haproxy", "{t}");
    assert_eq!(
        (&t["state"], &t["stale"]),
        (&"draining".into(), &true.into()),
        "{t}"
    );
    // Still named after the daemon looked twice more: it stays while the connection does.
    let t = counted_again(&d, counts(&t), 2);
    assert_eq!(older_pids(&t), [old], "{t}");
    assert!(running(host));

    upstream.release();
    client.wait_closed();
    let t = target_when(&d, "the old worker gone, the target applied", |t| {
        t["workers"]["older_than_version"] == 0 && t["state"] == "idle" && t["stale"] == false
    });
    consistent(&t);
    assert_eq!(t["workers"]["total"], 1, "the new worker only: {t}");
    assert!(!running(host), "the old worker exited");
    d.passed(crate::support::now_ns());
    assert_eq!(signals(&d), (1.0, 1.0), "one USR2 for one rotation");
    assert_eq!(log().matches("Reloading HAProxy").count(), 1, "{}", log());
}
