//! Fleets: ten daemons on one kubelet-style volume, sharing a `--fingerprint-key-file`, scraped by a
//! real Prometheus that evaluates deploy/rules as shipped. After a rotation that two of them hold
//! back (their app cannot read the new file, `--access-policy block`), the recording rule counts
//! two versions and both fleet alerts become pending, for those two pods only; a rotation all of
//! them apply clears it.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use secret_reloader::demo::atomic_writer::Key;

use crate::support::prometheus::{Prometheus, START_DEADLINE};
use crate::support::{AtomicWriter, Daemon, credential, eventually, open_dir};

const REPLICAS: usize = 10;
const HELD: [usize; 2] = [8, 9];

fn token(version: &str, mode: u32) -> BTreeMap<String, Key> {
    BTreeMap::from([(
        "token".to_string(),
        Key {
            data: credential(version).into_bytes(),
            mode,
        },
    )])
}

#[test]
fn prometheus_counts_versions_across_replicas_and_names_the_ones_that_hold_back() {
    let dir = open_dir();
    let vol = dir.path().join("secret");
    let writer = AtomicWriter::new(&vol);
    writer.write_keys(&token("1", 0o444)).unwrap();
    let key = dir.path().join("fingerprint.key");
    fs::write(&key, "a key the replicas share\n").unwrap();

    let daemons: Vec<Daemon> = (0..REPLICAS)
        .map(|i| {
            let mut args = vec![
                "--watch",
                vol.to_str().unwrap(),
                "--exec",
                "true",
                "--fingerprint-key-file",
                key.to_str().unwrap(),
                "--app-uid",
                "4242",
                "--app-gid",
                "4242",
                "--min-reload-interval",
                "0",
            ];
            if HELD.contains(&i) {
                args.extend(["--access-policy", "block"]);
            }
            Daemon::start(&args)
        })
        .collect();
    for d in &daemons {
        d.wait_ready();
    }
    let applied = |d: &Daemon| {
        let m = d.metrics();
        crate::support::parse_metrics(&m)
            .into_iter()
            .find(|s| s.name == "secret_reloader_applied_version_info")
            .and_then(|s| s.labels.get("version").cloned())
    };
    let v1 = eventually(
        "every replica to hold version 1",
        || daemons.iter().map(applied).collect::<Vec<_>>(),
        |all| all.iter().all(|v| v.is_some() && *v == all[0]),
    )[0]
    .clone()
    .unwrap();

    // Prometheus scrapes them as a PodMonitor would label them, and evaluates the shipped rules.
    let prom_dir = dir.path().join("prometheus");
    fs::create_dir(&prom_dir).unwrap();
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/rules/secret-reloader.rules.yml"
    );
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{rules}']\nscrape_configs:\n  - job_name: shop/secret-reloader\n    static_configs:\n"
    );
    for (i, d) in daemons.iter().enumerate() {
        config.push_str(&format!(
            "      - targets: ['{}']\n        labels: {{namespace: shop, controller: web-6d5f8b7c9, \
             pod: web-6d5f8b7c9-{i}, container: secret-reloader}}\n",
            d.addr
        ));
    }
    let config_path = prom_dir.join("prometheus.yml");
    fs::write(&config_path, config).unwrap();
    let prom = Prometheus::start_with(&config_path, &prom_dir.join("data"), &[]);
    let count =
        "secret_reloader:applied_versions:count{namespace=\"shop\",controller=\"web-6d5f8b7c9\"}";
    prom.wait_until("every replica scraped, one version", START_DEADLINE, || {
        prom.value("count(up{job=\"shop/secret-reloader\"} == 1)") == Some(REPLICAS as f64)
            && prom.value(count) == Some(1.0)
    });

    // Version 2, readable by root only: eight replicas apply it (warn), two hold it back (block).
    writer.write_keys(&token("2", 0o400)).unwrap();
    let rotated = Instant::now();
    let versions = eventually(
        "eight replicas on version 2, two on version 1",
        || daemons.iter().map(applied).collect::<Vec<_>>(),
        |v| {
            v.iter()
                .filter(|x| x.as_deref() == Some(v1.as_str()))
                .count()
                == HELD.len()
                && v.iter().all(|x| x.is_some())
        },
    );
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(
            HELD.contains(&i),
            v.as_deref() == Some(v1.as_str()),
            "replica {i}: {versions:?}"
        );
    }
    prom.wait_until("two versions counted", START_DEADLINE, || {
        prom.value(count) == Some(2.0)
    });
    let disagree_after = rotated.elapsed();
    // Each replica's new version is in Prometheus once it was scraped after the change.
    let sizes = || {
        let by_version = prom
            .query("count by (version) (secret_reloader_applied_version_info{namespace=\"shop\"})");
        let mut sizes: Vec<f64> = by_version.iter().map(|(_, n)| *n).collect();
        sizes.sort_by(f64::total_cmp);
        sizes
    };
    prom.wait_until(
        "eight replicas on one version, two on the other",
        START_DEADLINE,
        || sizes() == [2.0, 8.0],
    );

    // Both alerts are pending (their `for` is minutes): the held-back pods, and the disagreement.
    prom.wait_until("the alerts to be pending", START_DEADLINE, || {
        let holds = prom.query(
            "ALERTS{alertname=\"SecretReloaderReplicaHoldsBack\",alertstate=\"pending\"}",
        );
        let mut pods: Vec<String> = holds
            .iter()
            .filter_map(|(m, _)| m["pod"].as_str().map(str::to_string))
            .collect();
        pods.sort();
        let want: Vec<String> = HELD.iter().map(|i| format!("web-6d5f8b7c9-{i}")).collect();
        pods == want
            && prom
                .value("count(ALERTS{alertname=\"SecretReloaderReplicasDisagree\",alertstate=\"pending\"})")
                == Some(1.0)
    });

    // Version 3, readable by the app: every replica applies it, the fleet agrees again.
    writer.write_keys(&token("3", 0o444)).unwrap();
    let fixed = Instant::now();
    prom.wait_until("one version again", START_DEADLINE, || {
        prom.value(count) == Some(1.0)
    });
    let agree_after = fixed.elapsed();
    prom.wait_until("the alerts to clear", START_DEADLINE, || {
        prom.query("ALERTS{alertname=~\"SecretReloaderReplica.*\"}")
            .is_empty()
    });
    eprintln!(
        "fleet of {REPLICAS}: two versions counted {:.1} s after the held-back rotation; one version \
         {:.1} s after the fix (scrape and evaluation every 1 s)",
        disagree_after.as_secs_f64(),
        agree_after.as_secs_f64()
    );
    assert!(agree_after < Duration::from_secs(60));
}
