//! The native fixtures themselves (`support::native`): a test of the daemon on a stalled volume
//! or under a seccomp profile means something only if the fixture does what it claims. stallfs
//! must show a kubelet volume exactly as the backing directory is now, hold what it is told to
//! and nothing else, keep answering the rest meanwhile, and never leave a process stuck behind
//! it; seccomp_deny must refuse the named calls, to the command and what it starts.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::support::native::{
    StallFs, deny_syscalls, deny_syscalls_with, fuse_mount_of, seccomp_deny, task_state, task_wchan,
};
use crate::support::{AtomicWriter, DEADLINE, credential, eventually, open_dir, tempdir};

/// Reads `path` in a thread of this process; gives the thread's id, then the result.
fn read_in_thread(path: std::path::PathBuf) -> (i32, mpsc::Receiver<std::io::Result<String>>) {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        let _ = tx.send(std::fs::read_to_string(path));
    });
    (tid_rx.recv().unwrap(), rx)
}

/// The read behind `rx` has not returned while the server holds its `op` of `name`: first no
/// answer, then the request still held (so none can have come in between). No wait involved.
fn assert_held(fs: &StallFs, rx: &mpsc::Receiver<std::io::Result<String>>, op: &str, name: &str) {
    assert!(
        matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)),
        "a held {op} returned; log:\n{}",
        fs.log()
    );
    assert!(
        fs.stalled()
            .iter()
            .any(|(o, p)| o == op && p.contains(name)),
        "the {op} of {name} is no longer held; log:\n{}",
        fs.log()
    );
}

/// Runs `f` in a thread and waits at most `DEADLINE` for it: an access the fixture holds by
/// mistake fails the test instead of hanging it (the drop then releases the thread).
fn answered<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: no answer"))
}

#[test]
fn stallfs_holds_a_read_until_released_and_answers_the_rest_meanwhile() {
    let dir = tempdir();
    let back = dir.path().join("back");
    AtomicWriter::new(&back)
        .write(&[("token", credential("1")), ("other", credential("o"))])
        .unwrap();
    let fs = StallFs::mount(&back, &dir.path().join("mnt"));
    let token = fs.path().join("token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), credential("1"));

    fs.stall(&["read"], Some("token"));
    let (tid, rx) = read_in_thread(token.clone());
    let held = fs.wait_stalled("read", "token");
    assert!(
        held.starts_with("/..20") && held.ends_with("/token"),
        "{held}"
    );
    assert_held(&fs, &rx, "read", "token");
    let pid = std::process::id() as i32;
    assert_eq!(
        task_state(pid, tid),
        Some('S'),
        "reader in {}",
        task_wchan(pid, tid)
    );

    // Lookups, listings, links and other files' reads are not held.
    let mnt = fs.path().to_path_buf();
    let (names, link, is_file, other) = answered("the rest of the mount", move || {
        let names: Vec<String> = std::fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let link = std::fs::read_link(mnt.join("token")).unwrap();
        let is_file = std::fs::metadata(mnt.join("token")).unwrap().is_file();
        let other = std::fs::read_to_string(mnt.join("other")).unwrap();
        (names, link, is_file, other)
    });
    assert!(names.contains(&"token".to_string()), "{names:?}");
    assert!(names.contains(&"..data".to_string()), "{names:?}");
    assert_eq!(link, std::path::Path::new("..data/token"));
    assert!(is_file);
    assert_eq!(other, credential("o"));

    fs.release();
    let got = rx
        .recv_timeout(DEADLINE)
        .expect("the released read returns");
    assert_eq!(got.unwrap(), credential("1"));
    eventually("nothing held", || fs.stalled(), Vec::is_empty);
}

#[test]
fn stallfs_holds_each_named_operation_in_turn() {
    let dir = tempdir();
    let back = dir.path().join("back");
    AtomicWriter::new(&back)
        .write(&[("token", credential("1")), ("other", credential("o"))])
        .unwrap();
    let fs = StallFs::mount(&back, &dir.path().join("mnt"));

    // A read of `token` is a lookup (getattr) of each name on the way, the link's readlink, an
    // open and a read: each can be held, and a new setting replaces the last, so the same read
    // moves on to the next operation held.
    fs.stall(&["getattr"], Some("token"));
    let (_, rx) = read_in_thread(fs.path().join("token"));
    assert_eq!(fs.wait_stalled("getattr", "token"), "/token");
    assert_held(&fs, &rx, "getattr", "token");
    for op in ["readlink", "open", "read"] {
        fs.stall(&[op], Some("token"));
        fs.wait_stalled(op, "token");
        assert_held(&fs, &rx, op, "token");
        // Only what is named is held: the directory's listing, its other names. (Not while a
        // lookup is held: libfuse 3.14 has the kernel look up one name at a time per directory.)
        let mnt = fs.path().to_path_buf();
        let (other, entries) = answered("the rest of the directory", move || {
            let other = std::fs::read_to_string(mnt.join("other")).unwrap();
            (other, std::fs::read_dir(&mnt).unwrap().count())
        });
        assert_eq!(other, credential("o"));
        assert_eq!(entries, 4);
    }
    fs.release();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap().unwrap(), credential("1"));
}

#[test]
fn stallfs_keeps_answering_with_many_reads_held() {
    let dir = tempdir();
    let back = dir.path().join("back");
    AtomicWriter::new(&back)
        .write(&[("token", credential("1")), ("other", credential("o"))])
        .unwrap();
    let fs = StallFs::mount(&back, &dir.path().join("mnt"));
    fs.stall(&["read"], Some("token"));
    // More than libfuse's default of ten workers, each held read taking one.
    let readers: Vec<_> = (0..20)
        .map(|_| read_in_thread(fs.path().join("token")).1)
        .collect();
    eventually("20 reads held", || fs.stalled().len(), |n| *n == 20);
    let other = fs.path().join("other");
    let got = answered("another file", move || std::fs::read_to_string(other));
    assert_eq!(got.unwrap(), credential("o"));
    fs.release();
    for rx in readers {
        assert_eq!(rx.recv_timeout(DEADLINE).unwrap().unwrap(), credential("1"));
    }
}

#[test]
fn stallfs_shows_a_kubelet_volume_as_it_is_now() {
    // Searchable by the other user below, down to the mount.
    let dir = open_dir();
    let back = dir.path().join("back");
    let w = AtomicWriter::new(&back);
    w.write(&[("token", credential("1"))]).unwrap();
    let fs = StallFs::mount(&back, &dir.path().join("mnt"));
    let token = fs.path().join("token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), credential("1"));

    // No kernel caching: a rotation in the backing directory is what the next read sees.
    w.write(&[("token", credential("2"))]).unwrap();
    assert_eq!(std::fs::read_to_string(&token).unwrap(), credential("2"));
    assert_eq!(
        std::fs::read_link(fs.path().join("..data")).unwrap(),
        std::fs::read_link(back.join("..data")).unwrap()
    );
    // The backing inode numbers, so that a change of file is seen as one.
    assert_eq!(
        std::fs::metadata(&token).unwrap().ino(),
        std::fs::metadata(back.join("token")).unwrap().ino()
    );

    // allow_other: another uid reads it, as a daemon run under setpriv does.
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "cat",
        ])
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), credential("2"));

    // A key removed is gone at once (no negative or entry caching either).
    w.write(&[("other", credential("o"))]).unwrap();
    let err = std::fs::read_to_string(&token).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        std::fs::read_to_string(fs.path().join("other")).unwrap(),
        credential("o")
    );
}

#[test]
fn dropping_stallfs_frees_a_reader_killed_while_held() {
    let dir = tempdir();
    let back = dir.path().join("back");
    AtomicWriter::new(&back)
        .write(&[("token", credential("1"))])
        .unwrap();
    let mnt = dir.path().join("mnt");
    let fs = StallFs::mount(&back, &mnt);
    fs.stall(&["read"], Some("token"));
    let mut reader = Command::new("cat")
        .arg(fs.path().join("token"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = reader.id() as i32;
    fs.wait_stalled("read", "token");
    assert_eq!(task_state(pid, pid), Some('S'), "{}", task_wchan(pid, pid));

    // Once the request is with the server, even SIGKILL only moves the reader to D: it cannot
    // end before the request does.
    reader.kill().unwrap();
    eventually(
        "the killed reader in D",
        || task_state(pid, pid),
        |s| *s == Some('D'),
    );
    assert!(reader.try_wait().unwrap().is_none(), "the held reader died");
    assert!(
        fs.stalled()
            .iter()
            .any(|(o, p)| o == "read" && p.contains("token")),
        "the read is no longer held"
    );

    let mountpoint = fs.path().to_path_buf();
    drop(fs);
    eventually(
        "the reader to end after the drop",
        || reader.try_wait().unwrap().is_some(),
        |ended| *ended,
    );
    assert_eq!(fuse_mount_of(&mountpoint), None, "still mounted");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}

#[test]
fn a_killed_stallfs_fails_held_reads_instead_of_hanging() {
    let dir = tempdir();
    let back = dir.path().join("back");
    AtomicWriter::new(&back)
        .write(&[("token", credential("1"))])
        .unwrap();
    let mut fs = StallFs::mount(&back, &dir.path().join("mnt"));
    fs.stall(&["read"], Some("token"));
    let (_, rx) = read_in_thread(fs.path().join("token"));
    fs.wait_stalled("read", "token");

    fs.kill_server();
    let err = rx.recv_timeout(DEADLINE).unwrap().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
    // The mount stays, dead, until unmounted.
    let err = std::fs::metadata(fs.path()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let mountpoint = fs.path().to_path_buf();
    assert!(fuse_mount_of(&mountpoint).is_some());
    drop(fs);
    assert_eq!(fuse_mount_of(&mountpoint), None, "still mounted");
}

/// `seccomp_deny --try CALLS` under `cmd` (or alone), as the lines it prints.
fn tried(cmd: Option<Command>, calls: &str) -> String {
    let mut cmd = match cmd {
        Some(mut c) => {
            c.arg(seccomp_deny());
            c
        }
        None => Command::new(seccomp_deny()),
    };
    let out = cmd.args(["--try", calls]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn seccomp_deny_makes_the_named_calls_fail() {
    let calls = "pidfd_open,pidfd_send_signal,kill";
    // pidfd_send_signal on descriptor -1: EBADF when allowed.
    assert_eq!(
        tried(None, calls),
        "pidfd_open ok\npidfd_send_signal EBADF\nkill ok\n"
    );
    assert_eq!(
        tried(
            Some(deny_syscalls(&["pidfd_open", "pidfd_send_signal"])),
            calls
        ),
        "pidfd_open EPERM\npidfd_send_signal EPERM\nkill ok\n"
    );
    assert_eq!(
        tried(Some(deny_syscalls_with(&["pidfd_open"], "ENOSYS")), calls),
        "pidfd_open ENOSYS\npidfd_send_signal EBADF\nkill ok\n"
    );

    // Inherited by what the command starts.
    let mut sh = deny_syscalls(&["pidfd_open"]);
    let out = sh
        .args(["sh", "-c", "exec \"$0\" --try pidfd_open"])
        .arg(seccomp_deny())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pidfd_open EPERM\n");

    // A misspelt call is an error, not a filter that denies nothing.
    let out = deny_syscalls(&["pidfd_opn"]).arg("true").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown system call pidfd_opn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
