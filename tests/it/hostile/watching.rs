//! Watched content that lies, leads elsewhere or changes its nature: symlinks out of a watched
//! directory, a kubelet `..data` pointing outside its volume, too many files, a file replaced by a
//! directory, held-back content counted as stale; a busy writer next to a watched directory; the
//! return from the polling fallback to inotify.

use std::fs;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, Daemon, credential, daemon_for, eventually, now_ns, tempdir};

fn problems_of(status: &serde_json::Value) -> Vec<(String, String)> {
    status["watches"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn symlink_out_of_a_watched_directory_is_skipped_unless_external_symlinks_are_followed() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    fs::create_dir(&conf).unwrap();
    fs::write(conf.join("token"), credential("1")).unwrap();
    let outside = dir.path().join("etc-shadow");
    fs::write(
        &outside,
        "root:$6$fakehash$outside-the-volume:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, conf.join("shadow")).unwrap();
    // A symlink that stays inside is content.
    std::os::unix::fs::symlink("token", conf.join("token-link")).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&conf], &sink, &[]);
    let status = d.status();
    let files = status["watches"][0]["files"].to_string();
    assert!(
        !files.contains("shadow"),
        "followed out of the directory: {files}"
    );
    assert!(files.contains("token-link"), "{files}");
    let skipped = status["watches"][0]["skipped"].to_string();
    assert!(
        skipped.contains("/conf/shadow") && skipped.contains("outside"),
        "{skipped}"
    );
    assert_eq!(status["watches"][0]["complete"], true, "{status}");
    // A change of the outside file is no change of the content.
    fs::write(&outside, "root:changed\n").unwrap();
    fs::write(conf.join("token"), credential("2")).unwrap();
    eventually("the reload", || sink.count(), |n| *n == 1);
    drop(d);

    let d = daemon_for(&[&conf], &sink, &["--follow-external-symlinks"]);
    let status = d.status();
    let files = status["watches"][0]["files"].to_string();
    assert!(files.contains("/conf/shadow"), "{files}");
    assert!(
        !status["watches"][0]["skipped"]
            .to_string()
            .contains("shadow"),
        "{status}"
    );
}

#[test]
fn kubelet_data_pointing_outside_the_volume_is_held_back_and_never_reloaded() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("token"), credential("evil")).unwrap();
    let sink = Sink::start();
    let t = now_ns();
    let d = daemon_for(&[&vol], &sink, &["--resync-interval", "1s"]);
    d.passed(t);
    // `..data` swapped for an absolute symlink to a directory outside the volume.
    let tmp = vol.join("..data_tmp");
    std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
    fs::rename(&tmp, vol.join("..data")).unwrap();
    let status = eventually(
        "the hold",
        || d.status(),
        |s| s["watches"][0]["complete"] == false,
    );
    let problems = problems_of(&status);
    assert!(
        problems
            .iter()
            .any(|(_, m)| m.contains("..data") && m.contains("outside")),
        "{problems:?}"
    );
    fs::write(elsewhere.join("token"), credential("evil2")).unwrap();
    let t = now_ns();
    // Swapped in again (an event: the group scans after `t`; see
    // `held_back_content_is_rescanned_at_each_resync` for the resync).
    std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
    fs::rename(&tmp, vol.join("..data")).unwrap();
    let status = d.passed(t);
    assert_eq!(sink.count(), 0, "reloaded from outside the volume");
    assert_eq!(status["targets"][0]["state"], "held", "{status}");
    assert_eq!(
        d.metric("content_blocked", &[("watch", "default")]),
        Some(1.0)
    );
}

#[test]
fn more_files_than_max_files_are_held_back() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    fs::create_dir(&conf).unwrap();
    for i in 0..10 {
        fs::write(conf.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let sink = Sink::start();
    let d = daemon_for(
        &[&conf],
        &sink,
        &["--max-files", "5", "--resync-interval", "1s"],
    );
    let status = d.status();
    assert_eq!(status["watches"][0]["complete"], false, "{status}");
    let problems = problems_of(&status);
    assert!(
        problems.iter().any(|(k, _)| k == "too_many_files"),
        "{problems:?}"
    );
    fs::write(conf.join("f0"), "changed").unwrap();
    let t = now_ns();
    let status = d.passed(t);
    assert_eq!(sink.count(), 0);
    assert_eq!(status["targets"][0]["state"], "held", "{status}");
}

#[test]
fn watched_file_replaced_by_a_directory_is_held_back_as_wrong_kind() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    fs::create_dir(&conf).unwrap();
    let token = conf.join("token");
    fs::write(&token, credential("1")).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&token], &sink, &["--resync-interval", "1s"]);
    fs::remove_file(&token).unwrap();
    fs::create_dir(&token).unwrap();
    fs::write(token.join("token"), credential("2")).unwrap();
    let status = eventually(
        "the hold",
        || d.status(),
        |s| {
            s["watches"][0]["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["kind"] == "wrong_kind"))
        },
    );
    assert_eq!(status["watches"][0]["complete"], false);
    let t = now_ns();
    // Replaced by another directory (events on the watched name: a scan after `t`).
    fs::remove_dir_all(&token).unwrap();
    fs::create_dir(&token).unwrap();
    fs::write(token.join("token"), credential("3")).unwrap();
    let status = d.passed(t);
    assert_eq!(sink.count(), 0, "reloaded a directory where a file was");
    assert_eq!(status["targets"][0]["state"], "held", "{status}");
    assert_eq!(d.metric("stale", &[]), Some(1.0));
}

#[test]
fn held_back_content_counts_as_stale_and_held() {
    // A watched file of a kubelet volume removed by a new version.
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1")), ("ca.crt", "ca-1".into())])
        .unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&vol.join("token"), &vol.join("ca.crt")], &sink, &[]);
    assert_eq!(d.metric("stale", &[]), Some(0.0));
    w.write(&[("ca.crt", "ca-2")]).unwrap();
    let status = eventually(
        "the hold",
        || d.status(),
        |s| s["targets"][0]["state"] == "held",
    );
    assert_eq!(status["targets"][0]["stale"], true, "{status}");
    assert_eq!(d.metric("stale", &[]), Some(1.0), "{}", d.metrics());
    assert_eq!(d.metric("target_state", &[("state", "held")]), Some(1.0));
    assert_eq!(sink.count(), 0);
    drop(d);

    // An unreadable file with --access-policy block.
    let conf = dir.path().join("conf");
    fs::create_dir(&conf).unwrap();
    let token = conf.join("token");
    fs::write(&token, credential("1")).unwrap();
    let d = daemon_for(
        &[&conf],
        &sink,
        &[
            "--access-policy",
            "block",
            "--app-uid",
            "1001",
            "--app-gid",
            "1001",
        ],
    );
    assert_eq!(d.metric("stale", &[]), Some(0.0));
    let tmp = conf.join(".token.new");
    fs::write(&tmp, credential("2")).unwrap();
    // Owned by root, mode 0600: uid 1001 cannot read it.
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::rename(&tmp, &token).unwrap();
    let status = eventually(
        "the hold",
        || d.status(),
        |s| s["targets"][0]["state"] == "held",
    );
    assert_eq!(status["targets"][0]["stale"], true, "{status}");
    assert_eq!(d.metric("stale", &[]), Some(1.0), "{}", d.metrics());
    assert_eq!(sink.count(), 0);
}

#[test]
fn busy_writer_in_the_parent_of_a_watched_directory_delays_nothing() {
    let dir = tempdir();
    let parent = dir.path().join("parent");
    let conf = parent.join("conf");
    fs::create_dir_all(&conf).unwrap();
    fs::write(conf.join("token"), credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(conf.join("token")));
    let d = daemon_for(&[&conf], &sink, &["--debounce-max", "10s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), parent.join("app.log"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Open for long, closed for a moment now and then.
                let mut f = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    writeln!(f, "line {n}").unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    // The writer is busy before the first change.
    eventually(
        "the writer to have written",
        || {
            fs::read_to_string(parent.join("app.log"))
                .map(|l| l.lines().count())
                .unwrap_or(0)
        },
        |n| *n >= 10,
    );
    let mut worst = Duration::ZERO;
    for v in ["2", "3", "4"] {
        let before = sink.count();
        let written = Instant::now();
        fs::write(conf.join("token"), credential(v)).unwrap();
        let calls = eventually("the reload", || sink.calls(), |c| c.len() > before);
        let took = calls[before].at.duration_since(written);
        assert_eq!(calls[before].version.as_deref(), Some(v));
        worst = worst.max(took);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "a change inside the watched directory waited {worst:?} for the writer next to it"
    );
    drop(d);
}

#[test]
fn inotify_returns_after_the_polling_fallback_once_it_can() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let w = AtomicWriter::new(&vol);
    w.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let url = sink.url("/-/reload");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        "echo 0 > /proc/sys/user/max_inotify_instances && exec \"$0\" \"$@\"",
        crate::support::bin(),
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
        "--resync-interval",
        "1s",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let d = Daemon::spawn(cmd);
    d.wait_ready();
    assert_eq!(d.status()["watches"][0]["watch_mode"], "poll_fallback");
    assert_eq!(d.metric("inotify_restored_total", &[]), Some(0.0));
    let pid = d.pid().to_string();
    let raised = std::process::Command::new("nsenter")
        .args([
            "--user",
            "--target",
            &pid,
            "sh",
            "-c",
            "echo 128 > /proc/sys/user/max_inotify_instances",
        ])
        .status()
        .unwrap();
    assert!(raised.success(), "cannot raise the namespace's limit");
    eventually(
        "inotify to be restored",
        || d.metric("inotify_restored_total", &[]),
        |v| *v == Some(1.0),
    );
    // The group sets its watches up again on its scan after the restore (on its lane): shown
    // once that scan is recorded.
    eventually(
        "the group back on inotify",
        || d.status()["watches"][0]["watch_mode"].clone(),
        |m| *m == "inotify",
    );
    assert_eq!(d.metric("polling", &[("watch", "default")]), Some(0.0));
    w.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually("the reload", || sink.calls(), |c| !c.is_empty());
    assert_eq!(calls[0].version.as_deref(), Some("2"));
}

#[test]
fn held_back_content_is_rescanned_at_each_resync() {
    // Held back (a FIFO where the file should be), nothing changes, no event comes: the resync
    // is the safety net and must go on scanning.
    let dir = tempdir();
    let token = dir.path().join("token");
    nix::unistd::mkfifo(&token, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let sink = Sink::start();
    let d = daemon_for(&[&token], &sink, &["--resync-interval", "1s"]);
    assert_eq!(d.status()["watches"][0]["complete"], false);
    let scans = |d: &Daemon| d.status()["watches"][0]["scans"].as_u64().unwrap();
    let before = scans(&d);
    let started = Instant::now();
    eventually(
        "a resync of the held-back group",
        || scans(&d),
        |n| *n >= before + 3,
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "three resyncs of 1s took {:?}",
        started.elapsed()
    );
}
