//! `secret-reloader kubelet-write`, the hidden subcommand the CI scripts write their volumes with:
//! the layout it leaves is kubelet's.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{bin, tempdir};

fn kubelet_write(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("kubelet-write")
        .args(args)
        .output()
        .expect("run secret-reloader kubelet-write")
}

/// A file of the staging area with `content` and `mode`; returns `KEY=FILE`.
fn staged(dir: &Path, key: &str, content: &str, mode: u32) -> String {
    let path = dir.join(key);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    format!("{key}={}", path.display())
}

fn version_dir(vol: &Path) -> PathBuf {
    let target = fs::read_link(vol.join("..data")).expect("..data is a symlink");
    let name = target.to_str().unwrap();
    assert!(
        name.starts_with("..20") && !name.contains('/'),
        "..data points at a timestamped directory beside it: {name}"
    );
    assert!(vol.join(&target).is_dir(), "{name} is a directory");
    target
}

fn assert_key(vol: &Path, key: &str, content: &str, mode: u32) {
    assert_eq!(
        fs::read_link(vol.join(key)).unwrap(),
        Path::new("..data").join(key),
        "{key} is the user-visible symlink into ..data"
    );
    assert_eq!(fs::read_to_string(vol.join(key)).unwrap(), content, "{key}");
    let meta = fs::metadata(vol.join(key)).unwrap();
    assert_eq!(meta.mode() & 0o7777, mode, "{key}: mode {:o}", meta.mode());
}

#[test]
fn kubelet_write_lays_out_and_rotates_a_volume_as_kubelet_does() {
    let tmp = tempdir();
    let vol = tmp.path().join("vol");
    let stage = tmp.path().join("stage");
    fs::create_dir(&stage).unwrap();
    // The pod's fsGroup: another group than the test's as root, else one the test may give.
    let gid = if nix::unistd::geteuid().is_root() {
        "12345".to_string()
    } else {
        fs::metadata(tmp.path()).unwrap().gid().to_string()
    };

    // Version 1: one mode for every key (a defaultMode), the pod's fsGroup.
    let out = kubelet_write(&[
        "--dir",
        vol.to_str().unwrap(),
        "--gid",
        &gid,
        "--mode",
        "0440",
        &staged(&stage, "tls.crt", "cert-1", 0o600),
        &staged(&stage, "token", "token-1", 0o600),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let v1 = version_dir(&vol);
    assert_key(&vol, "tls.crt", "cert-1", 0o440);
    assert_key(&vol, "token", "token-1", 0o440);
    let dir = fs::metadata(vol.join(&v1)).unwrap();
    assert_eq!(dir.mode() & 0o7777, 0o2755, "the version directory");
    assert_eq!(dir.gid().to_string(), gid, "the version directory's group");
    assert_eq!(
        fs::metadata(vol.join("token")).unwrap().gid().to_string(),
        gid
    );

    // Version 2: each key with its file's own mode; token dropped, ca.crt added.
    let out = kubelet_write(&[
        "--dir",
        vol.to_str().unwrap(),
        &staged(&stage, "tls.crt", "cert-2", 0o400),
        &staged(&stage, "ca.crt", "ca-2", 0o644),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v2 = version_dir(&vol);
    assert_ne!(v1, v2, "a new version directory");
    assert!(!vol.join(&v1).exists(), "the old version directory removed");
    assert_key(&vol, "tls.crt", "cert-2", 0o400);
    assert_key(&vol, "ca.crt", "ca-2", 0o644);
    assert!(
        fs::symlink_metadata(vol.join("token")).is_err(),
        "the dropped key's symlink removed"
    );
    assert_eq!(
        fs::metadata(vol.join(&v2)).unwrap().mode() & 0o7777,
        0o755,
        "without --gid the version directory is 0755"
    );
    let mut names: Vec<String> = fs::read_dir(&vol)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let v2 = v2.to_str().unwrap().to_string();
    assert_eq!(
        names,
        [&v2, "..data", "ca.crt", "tls.crt"],
        "nothing else left"
    );

    // A usage error is named, exit 2, and nothing is written.
    for bad in [
        &["tls.crt"][..],
        &["--mode", "0999", "a=/dev/null"],
        &["..x=/dev/null"],
    ] {
        let mut args = vec!["--dir", vol.to_str().unwrap()];
        args.extend_from_slice(bad);
        let out = kubelet_write(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("kubelet-write: "),
            "{out:?}"
        );
        assert_eq!(version_dir(&vol).to_str().unwrap(), v2, "{bad:?}");
    }
}
