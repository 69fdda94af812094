//! What a writer of a watched directory can learn or make the daemon read (found in the second
//! adversarial round): the fingerprints `/status` shows cannot test a guess of another file's
//! content, and a `..data` that leads out of its volume in two hops is not followed.

use std::os::unix::fs::symlink;

use serde_json::Value;

use crate::support::{Daemon, eventually, open_dir};

fn files(status: &Value) -> Vec<(String, String)> {
    status["watches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["files"].as_array().unwrap().clone())
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["fingerprint"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_guess_written_beside_a_secret_never_shows_the_secrets_fingerprint() {
    let dir = open_dir();
    let secret = dir.path().join("secret");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(secret.join("pin.txt"), "7305").unwrap();
    // The right guess among others, in a directory someone else may write.
    for guess in 7300..7310 {
        std::fs::write(shared.join(guess.to_string()), guess.to_string()).unwrap();
    }
    std::fs::write(shared.join("copy"), "7305").unwrap();
    let d = Daemon::start(&[
        "--watch",
        secret.to_str().unwrap(),
        "--watch",
        shared.to_str().unwrap(),
        "--exec",
        "true",
    ]);
    d.wait_ready();
    let status = eventually(
        "both groups scanned",
        || d.status(),
        |s| files(s).len() == 12,
    );
    let all = files(&status);
    let pin = &all.iter().find(|(p, _)| p.ends_with("pin.txt")).unwrap().1;
    for (path, fp) in &all {
        if !path.ends_with("pin.txt") {
            assert_ne!(fp, pin, "{path} shows the fingerprint of pin.txt");
        }
    }
    // The shown value is still the file's own: it changes with its content.
    std::fs::write(secret.join("pin.txt"), "0000").unwrap();
    let changed = eventually(
        "the new content",
        || d.status(),
        |s| {
            files(s)
                .iter()
                .any(|(p, fp)| p.ends_with("pin.txt") && fp != pin)
        },
    );
    assert_eq!(files(&changed).len(), 12);
}

#[test]
fn a_data_link_that_leads_out_of_its_volume_in_two_hops_is_not_followed() {
    let dir = open_dir();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("private.key"), "not yours").unwrap();
    // `..data` names a sibling, as kubelet's does, but that sibling links out of the volume.
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    symlink("ts", vol.join("..data")).unwrap();
    symlink(&outside, vol.join("ts")).unwrap();
    symlink("..data/private.key", vol.join("private.key")).unwrap();
    // The same inside a plain watched directory.
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(shared.join("g")).unwrap();
    std::fs::write(shared.join("own"), "x").unwrap();
    symlink("ts", shared.join("g/..data")).unwrap();
    symlink(&outside, shared.join("g/ts")).unwrap();
    for watch in [
        vol.clone(),
        vol.join("private.key"),
        shared.clone(),
        // /proc/self as the second hop: the daemon's own environment is never read.
    ] {
        let d = Daemon::start(&["--watch", watch.to_str().unwrap(), "--exec", "true"]);
        let status = eventually(
            &format!("a scan of {}", watch.display()),
            || d.status(),
            |s| s["watches"][0]["last_scan"].is_object(),
        );
        let w = &status["watches"][0];
        assert!(
            !files(&status)
                .iter()
                .any(|(p, _)| p.contains("private.key")),
            "{}: read through the link: {w}",
            watch.display()
        );
        let problems = w["problems"].to_string();
        assert!(
            problems.contains("names a symbolic link, not a directory of the volume"),
            "{}: {problems}",
            watch.display()
        );
    }
    std::fs::remove_file(vol.join("ts")).unwrap();
    symlink("/proc/self", vol.join("ts")).unwrap();
    let d = Daemon::start(&["--watch", vol.to_str().unwrap(), "--exec", "true"]);
    let status = eventually(
        "a scan",
        || d.status(),
        |s| s["watches"][0]["last_scan"].is_object(),
    );
    assert_eq!(files(&status).len(), 0, "{status}");
}
