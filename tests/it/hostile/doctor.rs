//! The doctor against a large `/status` (it used to give up at 64 KiB and then call a reloaded
//! app "likely stale"), and without any daemon.

use crate::support::process::{doctor, os};
use crate::support::raw::RawEndpoint;
use crate::support::{App, Daemon, credential, eventually, http_get, let_content_age, tempdir};

#[test]
fn doctor_reads_a_large_status_and_reports_no_false_staleness() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    let app = App::start(dir.path(), &conf.join("token"), &[]);
    app.wait_up();
    let_content_age();
    // The content is newer than the app: only the daemon can tell that it reloaded it.
    for i in 0..300 {
        std::fs::write(
            conf.join(format!(
                "file-{i:03}-with-a-rather-long-name-as-configs-have.conf"
            )),
            format!("value {i}\n"),
        )
        .unwrap();
    }
    std::fs::write(conf.join("token"), credential("2")).unwrap();
    let d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--process-name",
        &app.name,
    ]);
    d.wait_ready();
    eventually(
        "the reload at start",
        || app.state(),
        |s| {
            s.as_ref()
                .is_some_and(|s| s.reloads == 1 && s.version == "2")
        },
    );
    eventually(
        "the daemon to report it",
        || d.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
    let (code, body) = http_get(d.addr, "/status").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.len() > 64 * 1024,
        "/status is only {} bytes: the test needs more than 64 KiB",
        body.len()
    );
    let listen = d.addr.to_string();
    let (code, text, json) = doctor(&os(&[
        "--watch",
        conf.to_str().unwrap(),
        "--process-name",
        &app.name,
        "--listen",
        &listen,
    ]));
    assert_eq!(json["daemon"]["reachable"], true, "{text}");
    assert!(!text.contains("likely stale"), "{text}");
    assert!(
        text.contains("the running daemon reports it reloaded it"),
        "{text}"
    );
    assert_eq!(code, 0, "{text}");
}

#[test]
fn doctor_without_a_daemon_says_so_unless_standalone() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen = closed.to_string();
    let (code, text, json) = doctor(&os(&[
        "--watch",
        conf.to_str().unwrap(),
        "--exec",
        "true",
        "--listen",
        &listen,
    ]));
    assert_eq!(code, 1, "{text}");
    assert_eq!(json["daemon"]["reachable"], false);
    let problems = json["problems"].to_string();
    assert!(
        problems.contains(&format!("no daemon answers at {listen}")),
        "{problems}"
    );
    let (code, text, json) = doctor(&os(&[
        "--watch",
        conf.to_str().unwrap(),
        "--exec",
        "true",
        "--listen",
        &listen,
        "--standalone",
    ]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No problem found."), "{text}");
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(0), "{json}");
}

#[test]
fn doctor_does_not_take_the_word_of_whatever_answers_on_the_port() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    // Squatting the port while the sidecar is down: a status that says all is well, with a
    // terminal escape and a forged line in its version, naming a pid that is not the daemon.
    let fake = serde_json::json!({
        "version": "0.1.0\u{1b}[2J\u{1b}]0;pwned\u{7}\nDaemon    running: FAKE",
        "ready": true,
        "sidecar": {"pid": std::process::id()},
        "targets": [{"name": "exec:true", "stale": false}],
    });
    let ep = RawEndpoint::start(&fake.to_string());
    let listen = ep.addr.to_string();
    let (code, text, json) = doctor(&os(&[
        "--watch",
        conf.to_str().unwrap(),
        "--exec",
        "true",
        "--listen",
        &listen,
    ]));
    assert!(ep.requests("GET").len() >= 2, "the doctor did not ask");
    assert_eq!(json["daemon"]["reachable"], false, "{text}");
    assert!(text.contains("something else answers there"), "{text}");
    assert!(!text.contains('\u{1b}'), "a raw escape reached the report");
    assert!(!text.contains("FAKE"), "{text}");
    assert_eq!(code, 1, "{text}");
}
