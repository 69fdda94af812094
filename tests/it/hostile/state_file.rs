//! The state file's key makes every fingerprint the daemon shows testable offline: it is never
//! handed to someone else (a temporary file left in the state directory is not written into),
//! never taken from a file others could read or write, and never empty.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::{Daemon, eventually, open_dir};

/// A ready daemon watching `watched`, an exec target, and `state` as its state file.
fn ready_with(watched: &std::path::Path, state: &std::path::Path) -> Daemon {
    let d = Daemon::start(&[
        "--watch",
        watched.to_str().unwrap(),
        "--exec",
        "true",
        "--state-file",
        state.to_str().unwrap(),
    ]);
    d.wait_ready();
    d
}

fn key_of(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["key"].as_str().map(str::to_string)
}

#[test]
fn a_temporary_file_left_in_the_state_directory_does_not_get_the_key() {
    let dir = open_dir();
    let sd = dir.path().join("sd");
    std::fs::create_dir(&sd).unwrap();
    std::fs::set_permissions(&sd, std::fs::Permissions::from_mode(0o777)).unwrap();
    let watched = dir.path().join("w");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("token"), "hunter2").unwrap();
    // Left by another uid, world-writable, waiting to be filled.
    let tmp = sd.join("state.tmp");
    std::fs::write(&tmp, "").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&tmp, Some(1234), Some(1234)).unwrap();
    let state = sd.join("state.json");
    let _d = ready_with(&watched, &state);
    eventually(
        "the state file with its key",
        || key_of(&state),
        |k| k.is_some(),
    );
    let md = std::fs::metadata(&state).unwrap();
    assert_eq!(
        md.uid(),
        nix::unistd::geteuid().as_raw(),
        "the state file is someone else's"
    );
    assert_eq!(md.mode() & 0o777, 0o600);
}

#[test]
fn a_state_file_others_could_read_or_an_empty_key_is_not_used() {
    for (mode, key) in [(0o644, "00112233445566778899aabbccddeeff"), (0o600, "")] {
        let dir = open_dir();
        let watched = dir.path().join("w");
        std::fs::create_dir(&watched).unwrap();
        std::fs::write(watched.join("token"), "hunter2").unwrap();
        let state = dir.path().join("state.json");
        std::fs::write(&state, format!(r#"{{"key":"{key}","targets":{{}}}}"#)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        let d = ready_with(&watched, &state);
        let new_key = eventually(
            "a new key in the state file",
            || key_of(&state),
            |k| k.as_deref().is_some_and(|k| k.len() >= 32 && k != key),
        );
        assert_ne!(new_key.unwrap(), key);
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o600);
        assert!(
            d.log().contains("not used") || d.log().contains("replaced"),
            "{}",
            d.log()
        );
        assert_eq!(
            d.status()["config"]["fingerprint_key"],
            "random, kept in the state file"
        );
    }
}

#[test]
fn a_state_file_that_cannot_be_written_is_said_and_counted() {
    let dir = open_dir();
    let watched = dir.path().join("w");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("token"), "1").unwrap();
    // A directory that does not exist: every write fails.
    let state = dir.path().join("gone").join("state.json");
    let d = ready_with(&watched, &state);
    eventually(
        "the failure counted",
        || d.metric("state_file_write_failures_total", &[]),
        |n| n.is_some_and(|n| n >= 1.0),
    );
    let status = d.status();
    let err = status["state_file_error"]["message"].as_str().unwrap();
    assert!(err.contains("state.json"), "{err}");
    assert!(
        d.log().contains("cannot write the state file"),
        "{}",
        d.log()
    );
}
