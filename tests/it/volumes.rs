//! Watching: kubelet's atomic writer in both symlink orders, other writers (in-place, rename-over,
//! delete + recreate), paths that appear late, directories removed and created again, special
//! files, polling. Each real change must give exactly one call; nothing else may give one.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::sink::Sink;
use crate::support::{
    AtomicWriter, Daemon, Fixture, SymlinkOrder, credential, daemon_for, eventually, now_ns,
    tempdir,
};

/// Waits for the `n`-th call and checks it loaded `version`.
fn expect_call(sink: &Sink, n: usize, version: &str) {
    let calls = eventually(
        &format!("call {n} (version {version})"),
        || sink.calls(),
        |c| c.len() >= n,
    );
    assert_eq!(calls.len(), n, "exactly {n} calls expected: {calls:#?}");
    assert_eq!(
        calls[n - 1].version.as_deref(),
        Some(version),
        "call {n} loaded the wrong version"
    );
}

fn kubelet_updates(order: SymlinkOrder) {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol).with_order(order);
    w.write(&[("token", credential("1")), ("ca.crt", "ca-1".into())])
        .unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    // The daemon's first scan starts after `t`. The resyncs make a scan after the last update
    // certain (a swap is scanned at once, maybe before the test reads the clock); they find the
    // same content and every call succeeds, so they cannot add a call.
    let t = now_ns();
    let d = daemon_for(&[&vol], &sink, &["--resync-interval", "1s"]);
    d.passed(t);
    assert_eq!(
        sink.count(),
        0,
        "no call at start for an HTTP target (auto): the app loaded what is there"
    );

    for i in 2..=12 {
        let v = i.to_string();
        // Keys come and go as a Secret is edited: added every third version, dropped after.
        let mut keys = vec![
            ("token", credential(&v)),
            ("ca.crt", format!("ca-{}", i / 4)),
        ];
        if i % 3 == 0 {
            keys.push(("extra.key", format!("extra-{i}")));
        }
        w.write(&keys).unwrap();
        expect_call(&sink, i - 1, &v);
    }
    let t = now_ns();
    d.passed(t);
    assert_eq!(sink.count(), 11, "one call per update, none after");
    assert_eq!(
        d.metric("changes_total", &[("watch", "default")]),
        Some(11.0)
    );
    assert_eq!(
        d.metric("reloads_total", &[("result", "success")]),
        Some(11.0)
    );
    assert_eq!(d.metric("stale", &[]), Some(0.0));
}

#[test]
fn kubelet_updates_give_one_call_each_symlinks_after_swap() {
    kubelet_updates(SymlinkOrder::AfterSwap);
}

#[test]
fn kubelet_updates_give_one_call_each_symlinks_before_swap() {
    kubelet_updates(SymlinkOrder::BeforeSwap);
}

#[test]
fn new_key_symlink_after_swap_gives_one_call_for_a_watched_file() {
    // Watching one key of a volume: a key added by the update is complete at the swap.
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("other", "x")]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("..data/token")));
    // Resyncs: the last swap may be scanned before `t`; they find the same content.
    let d = daemon_for(&[&vol.join("token")], &sink, &["--resync-interval", "1s"]);
    w.write(&[("other", "x".to_string()), ("token", credential("1"))])
        .unwrap();
    expect_call(&sink, 1, "1");
    w.write(&[
        ("other", "changed but not watched".to_string()),
        ("token", credential("1")),
    ])
    .unwrap();
    w.write(&[("other", "x".to_string()), ("token", credential("2"))])
        .unwrap();
    let t = now_ns();
    expect_call(&sink, 2, "2");
    d.passed(t);
    assert_eq!(
        sink.count(),
        2,
        "a change of another key of the volume is not a change of the watched file"
    );
}

#[test]
fn touch_chmod_and_identical_content_give_no_call() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("password"), "p1").unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    // Resyncs: a scan after `t` is certain even if the test thread stalls past the quiet period;
    // they find the same content.
    let d = daemon_for(
        &[&vol],
        &sink,
        &[
            "--watch",
            plain.to_str().unwrap(),
            "--resync-interval",
            "1s",
        ],
    );

    w.write(&[("token", credential("1"))]).unwrap(); // kubelet rewriting identical data
    let real = vol.join("..data/token");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap(); // chmod
    let f = fs::File::options().append(true).open(&real).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap(); // touch
    drop(f);
    fs::set_permissions(plain.join("password"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(plain.join("password"), "p1").unwrap(); // same bytes written again
    let t = now_ns();
    d.passed(t);
    assert_eq!(
        sink.count(),
        0,
        "nothing changed the content: {:#?}",
        sink.calls()
    );
    // The targets act before the group records its scan: wait for the record of one after `t`.
    let status = eventually(
        "a scan after the chmod to be recorded",
        || d.status(),
        |s| {
            s["watches"][0]["last_scan"]["started_monotonic_ns"]
                .as_u64()
                .is_some_and(|n| n > t)
        },
    );
    let files = status["watches"][0]["files"].as_array().unwrap();
    let token = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("/vol/token"))
        .unwrap();
    assert_eq!(
        token["mode"], "0600",
        "the scan after chmod shows the new mode: {token}"
    );

    w.write(&[("token", credential("2"))]).unwrap();
    expect_call(&sink, 1, "2");
}

#[test]
fn other_writers_in_place_rename_over_delete_recreate() {
    let dir = tempdir();
    let plain = dir.path().join("secrets");
    fs::create_dir(&plain).unwrap();
    let token = plain.join("token");
    fs::write(&token, credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(token.clone()));
    // Resyncs: the last write may be scanned before `t`; they find the same content.
    let d = daemon_for(&[&plain], &sink, &["--resync-interval", "1s"]);

    // In-place write (truncate and write through one descriptor).
    fs::write(&token, credential("2")).unwrap();
    expect_call(&sink, 1, "2");
    // Rename-over: write a temporary file, rename it onto the name (Vault Agent, editors).
    let tmp = plain.join(".token.tmp");
    fs::write(&tmp, credential("3")).unwrap();
    fs::rename(&tmp, &token).unwrap();
    expect_call(&sink, 2, "3");
    // Delete and create again.
    fs::remove_file(&token).unwrap();
    fs::write(&token, credential("4")).unwrap();
    let t = now_ns();
    expect_call(&sink, 3, "4");
    d.passed(t);
    assert_eq!(sink.count(), 3);
}

#[test]
fn watched_single_file_rename_over_and_in_place() {
    let dir = tempdir();
    let file = dir.path().join("token");
    fs::write(&file, credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(file.clone()));
    // Resyncs: the sibling's write wakes nothing (only the watched name is), so a scan after `t`
    // needs one; they find the same content.
    let d = daemon_for(&[&file], &sink, &["--resync-interval", "1s"]);
    let tmp = dir.path().join("token.new");
    fs::write(&tmp, credential("2")).unwrap();
    fs::rename(&tmp, &file).unwrap();
    expect_call(&sink, 1, "2");
    fs::write(&file, credential("3")).unwrap();
    expect_call(&sink, 2, "3");
    fs::write(dir.path().join("unrelated"), "x").unwrap();
    let t = now_ns();
    d.passed(t);
    assert_eq!(sink.count(), 2, "a sibling file is not watched content");
}

#[test]
fn path_that_appears_after_start_is_reloaded_once() {
    let dir = tempdir();
    let vol = dir.path().join("not/there/yet");
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let d = daemon_for(&[&vol], &sink, &[]);
    let status = d.status();
    assert_eq!(status["watches"][0]["complete"], false);
    assert!(
        status["watches"][0]["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{status}"
    );
    AtomicWriter::new(&vol)
        .write(&[("token", credential("1"))])
        .unwrap();
    expect_call(&sink, 1, "1");
    AtomicWriter::new(&vol)
        .write(&[("token", credential("2"))])
        .unwrap();
    expect_call(&sink, 2, "2");
}

#[test]
fn directory_removed_and_created_again_is_watched_again() {
    let dir = tempdir();
    let plain = dir.path().join("conf");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("token"), credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(plain.join("token")));
    let d = daemon_for(&[&plain], &sink, &[]);
    fs::remove_dir_all(&plain).unwrap();
    let status = eventually(
        "the removal to be seen",
        || d.status(),
        |s| s["watches"][0]["complete"] == false,
    );
    // No resync for this daemon: it would also find the change below that inotify must find. The
    // barrier is the scan that saw the removal (its record comes with `complete`).
    let seen = status["watches"][0]["last_scan"]["started_monotonic_ns"]
        .as_u64()
        .unwrap();
    d.passed(seen - 1);
    assert_eq!(sink.count(), 0, "an incomplete version is never reloaded");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("token"), credential("2")).unwrap();
    expect_call(&sink, 1, "2");
    // The new directory is watched: a change inside it is seen without a resync.
    fs::write(plain.join("token"), credential("3")).unwrap();
    expect_call(&sink, 2, "3");
}

#[test]
fn special_files_are_skipped_and_reported_without_hanging() {
    let dir = tempdir();
    let plain = dir.path().join("conf");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("token"), credential("1")).unwrap();
    nix::unistd::mkfifo(
        &plain.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(plain.join("sock")).unwrap();
    std::os::unix::fs::symlink("loop2", plain.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", plain.join("loop2")).unwrap();
    std::os::unix::fs::symlink("missing", plain.join("dangling")).unwrap();
    let sink = Sink::start_with_probe(Some(plain.join("token")));
    let d = daemon_for(&[&plain], &sink, &[]);
    let status = d.status();
    let skipped = status["watches"][0]["skipped"].to_string();
    for name in ["fifo", "sock", "loop1", "dangling"] {
        assert!(
            skipped.contains(name),
            "{name} not reported as skipped: {skipped}"
        );
    }
    assert_eq!(
        status["watches"][0]["complete"], true,
        "skipped entries do not block: {status}"
    );
    fs::write(plain.join("token"), credential("2")).unwrap();
    expect_call(&sink, 1, "2");
}

#[test]
fn forced_polling_sees_changes_and_says_so() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let d = daemon_for(&[&vol], &sink, &["--poll-interval", "100ms"]);
    assert_eq!(d.metric("polling", &[("watch", "default")]), Some(1.0));
    assert_eq!(d.status()["watches"][0]["watch_mode"], "poll");
    w.write(&[("token", credential("2"))]).unwrap();
    expect_call(&sink, 1, "2");
}

#[test]
fn status_shows_files_owners_modes_and_keyed_fingerprints_only() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&vol], &sink, &[]);
    let status = d.status();
    let watch = &status["watches"][0];
    assert_eq!(watch["name"], "default");
    assert_eq!(watch["paths"][0]["layout"], "kubelet_volume");
    let file = &watch["files"][0];
    assert!(
        file["path"].as_str().unwrap().ends_with("/vol/token"),
        "{file}"
    );
    assert_eq!(file["mode"], "0644");
    assert_eq!(file["uid"], nix::unistd::getuid().as_raw());
    let fp = watch["fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 16);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    let target = &status["targets"][0];
    assert_eq!(target["applied_fingerprint"], watch["fingerprint"]);
    assert_eq!(target["stale"], false);
    assert_eq!(status["ready"], true);
    assert!(
        status["config"]["groups"][0]["targets"][0]["action"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/-/reload")
    );
    let text = status.to_string() + &d.metrics() + &d.log();
    assert!(!text.contains("s3cr3t"), "secret content leaked");
}

/// Runs the daemon in a new user namespace whose inotify limits are set to `limits` (the
/// `/proc/sys/user` files are per user namespace): the machine's own limits stay untouched.
fn daemon_with_inotify_limits(limits: &[(&str, &str)], args: &[&str]) -> Daemon {
    let mut script = String::new();
    for (file, value) in limits {
        script.push_str(&format!("echo {value} > /proc/sys/user/{file} && "));
    }
    script.push_str("exec \"$0\" \"$@\"");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        &script,
        crate::support::bin(),
    ])
    .args(args)
    .args(["--listen", "127.0.0.1:0"])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    d
}

/// A volume, its endpoint, and a daemon calling it under the given inotify limits.
fn polled(limits: &[(&str, &str)]) -> (Fixture, Daemon) {
    let f = Fixture::new();
    let url = f.url();
    let d = daemon_with_inotify_limits(
        limits,
        &[
            "--watch",
            f.vol(),
            "--reload-url",
            &url,
            "--min-reload-interval",
            "0",
        ],
    );
    (f, d)
}

#[test]
fn watch_limit_reached_falls_back_to_polling_and_says_so() {
    let (f, d) = polled(&[("max_inotify_watches", "1")]);
    assert_eq!(d.metric("polling", &[("watch", "default")]), Some(1.0));
    assert!(
        d.metric("watch_errors_total", &[("kind", "watch_limit")])
            .unwrap()
            >= 1.0
    );
    let status = d.status();
    assert_eq!(status["watches"][0]["watch_mode"], "poll_fallback");
    let why = status["watches"][0]["watch_fallback"].as_str().unwrap();
    assert!(why.contains("max_user_watches"), "{why}");
    assert!(d.log().contains("polling instead"), "{}", d.log());
    f.rotate("2");
    expect_call(&f.sink, 1, "2");
}

#[test]
fn inotify_unavailable_falls_back_to_polling() {
    let (f, d) = polled(&[("max_inotify_instances", "0")]);
    assert_eq!(
        d.metric("watch_errors_total", &[("kind", "inotify_init")]),
        Some(1.0)
    );
    assert_eq!(d.metric("polling", &[("watch", "default")]), Some(1.0));
    f.rotate("2");
    expect_call(&f.sink, 1, "2");
}

#[test]
fn huge_and_binary_files_are_fingerprinted_without_trouble() {
    let dir = tempdir();
    let plain = dir.path().join("data");
    fs::create_dir(&plain).unwrap();
    let huge = fs::File::create(plain.join("huge.bin")).unwrap();
    huge.set_len(64 * 1024 * 1024).unwrap(); // sparse: 64 MiB to read, little disk
    drop(huge);
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    fs::write(plain.join("blob.bin"), &binary).unwrap();
    fs::write(plain.join("token"), credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(plain.join("token")));
    let d = daemon_for(&[&plain], &sink, &[]);
    let status = d.status();
    assert_eq!(status["watches"][0]["complete"], true, "{status}");
    let huge = status["watches"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("huge.bin"))
        .unwrap()
        .clone();
    assert_eq!(huge["empty"], false, "{huge}");
    assert!(huge.get("size").is_none(), "no exact size is shown: {huge}");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(plain.join("huge.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"x", 32 * 1024 * 1024).unwrap();
    drop(f);
    expect_call(&sink, 1, "1");
    fs::write(plain.join("token"), credential("2")).unwrap();
    expect_call(&sink, 2, "2");
    let (code, _) = crate::support::http_get(d.addr, "/healthz").unwrap();
    assert_eq!(code, 200);
}

#[test]
fn back_to_back_swaps_never_report_a_version_kubelet_removed_as_held_back() {
    // Kubelet removes the old timestamped directory right after each swap: a scan still reading
    // it finds files gone. That is the next version arriving, not incomplete content.
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1")), ("extra", "x".repeat(64))])
        .unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let d = daemon_for(&[&vol], &sink, &[]);
    let last = 400;
    for i in 2..=last {
        w.write(&[
            ("token", credential(&i.to_string())),
            ("extra", "x".repeat(64 + i % 7)),
        ])
        .unwrap();
    }
    eventually(
        "the final content to be delivered",
        || sink.calls(),
        |c| {
            c.last()
                .is_some_and(|c| c.version.as_deref() == Some("400"))
        },
    );
    // Each scan a swap tore is read again (up to 11 reads in all); only a volume that kept
    // swapping through all of them may be reported as found, and the daemon says so first.
    let log = d.log();
    let lines: Vec<&str> = log.lines().collect();
    let held: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            l.contains("held back")
                && !(i.saturating_sub(2)..*i).any(|j| lines[j].contains("kept swapping"))
        })
        .map(|(_, l)| *l)
        .collect();
    assert!(
        held.is_empty(),
        "{} held-back reports:\n{}",
        held.len(),
        held.join("\n")
    );
    eventually(
        "content_blocked 0 in the metrics (written after the status board)",
        || d.metric("content_blocked", &[("watch", "default")]),
        |v| *v == Some(0.0),
    );
}
