//! What the actions carry and to whom: exactly one `Host` header, header values read from files at
//! every call, a warning for inline credentials, a clean environment for commands, and an action in
//! flight shown as such.

use std::collections::BTreeSet;

use crate::support::raw::{RawEndpoint, RawMode, header_lines};
use crate::support::sink::{Mode, Sink};
use crate::support::{Daemon, Fixture, credential, eventually, tempdir};

#[test]
fn a_reload_call_carries_exactly_one_host_header() {
    let f = Fixture::new();
    let ep = RawEndpoint::start("ok\n");
    let url = ep.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &url,
        "--reload-header",
        "X-Reason: rotation",
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    for (i, v) in ["2", "3"].into_iter().enumerate() {
        f.rotate(v);
        let posts = eventually("the call", || ep.requests("POST"), |r| r.len() > i);
        let head = &posts[i];
        let hosts = header_lines(head, "host");
        assert_eq!(hosts, [ep.addr.to_string()], "one Host header: {head}");
        assert_eq!(header_lines(head, "x-reason"), ["rotation"], "{head}");
        assert_eq!(
            header_lines(head, "x-secret-reloader-fingerprint").len(),
            1,
            "{head}"
        );
        assert!(header_lines(head, "content-length").len() <= 1, "{head}");
        assert!(header_lines(head, "transfer-encoding").is_empty(), "{head}");
    }
}

#[test]
fn header_file_value_is_read_at_every_call_and_inline_authorization_is_warned_about() {
    let f = Fixture::new();
    let key_file = f.dir.path().join("api-key");
    std::fs::write(&key_file, "key-one\n").unwrap();
    let url = f.url();
    let header_file = format!("X-Api-Key: {}", key_file.display());
    let d = Daemon::start(&[
        "--watch",
        f.vol(),
        "--reload-url",
        &url,
        "--reload-header-file",
        &header_file,
        "--reload-header",
        "Authorization: Bearer x",
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    let log = d.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("visible to every process of the pod"))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "one warning for the inline Authorization:\n{log}"
    );
    assert!(warned[0].contains("--reload-header"), "{}", warned[0]);
    let header = |c: &crate::support::sink::Call, name: &str| -> Vec<String> {
        c.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    f.rotate("2");
    let calls = eventually("the first call", || f.sink.calls(), |c| !c.is_empty());
    assert_eq!(header(&calls[0], "x-api-key"), ["key-one"]);
    assert_eq!(header(&calls[0], "authorization"), ["Bearer x"]);
    // The key rotates between two reloads: the next call carries the new one.
    let tmp = f.dir.path().join("api-key.new");
    std::fs::write(&tmp, "key-two\n").unwrap();
    std::fs::rename(&tmp, &key_file).unwrap();
    f.rotate("3");
    let calls = eventually("the second call", || f.sink.calls(), |c| c.len() >= 2);
    assert_eq!(header(&calls[1], "x-api-key"), ["key-two"]);
    assert_eq!(calls[1].version.as_deref(), Some("3"));
    let log = d.log();
    assert!(
        !log.contains("key-one") && !log.contains("key-two"),
        "{log}"
    );
}

#[test]
fn exec_targets_get_a_clean_environment() {
    let f = Fixture::new();
    let out = f.dir.path().join("env.out");
    // The verification passes on purpose: the daemon's own variables are all in use.
    let verify = RawEndpoint::start("sekrit-env ok\n");
    let cmd = format!("sh -c \"env > {}\"", out.display());
    let verify_url = verify.url("/ready");
    let d = Daemon::start_with(
        &[
            "--watch",
            f.vol(),
            "--exec",
            &cmd,
            "--min-reload-interval",
            "0",
        ],
        &[
            ("SECRET_RELOADER_VERIFY_URL", verify_url.as_str()),
            ("SECRET_RELOADER_VERIFY_CONTAINS", "sekrit-env"),
            ("SECRET_RELOADER_LOG_LEVEL", "debug"),
            ("MY_TOKEN", "abc-my-token-value"),
            ("AWS_SECRET_ACCESS_KEY", "sekrit-aws"),
        ],
    );
    d.wait_ready();
    f.rotate("2");
    eventually(
        "the command to have run and been verified",
        || d.metric("reloads_total", &[("result", "success")]),
        |v| v.is_some_and(|v| v >= 1.0),
    );
    let env = std::fs::read_to_string(&out).unwrap();
    let names: BTreeSet<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for needed in [
        "PATH",
        "SECRET_RELOADER_TARGET",
        "SECRET_RELOADER_WATCH",
        "SECRET_RELOADER_FINGERPRINT",
    ] {
        assert!(names.contains(needed), "{needed} missing:\n{env}");
    }
    let allowed = [
        "PATH",
        "SECRET_RELOADER_TARGET",
        "SECRET_RELOADER_WATCH",
        "SECRET_RELOADER_FINGERPRINT",
        // Set by sh itself.
        "PWD",
        "SHLVL",
        "_",
    ];
    let extra: Vec<&&str> = names.iter().filter(|n| !allowed.contains(n)).collect();
    assert!(
        extra.is_empty(),
        "the sidecar's variables leaked: {extra:?}\n{env}"
    );
    for value in ["sekrit", "my-token-value"] {
        assert!(
            !env.lines()
                .any(|l| l.split_once('=').is_some_and(|(_, v)| v.contains(value))),
            "{value} leaked:\n{env}"
        );
    }
    assert!(env.contains("SECRET_RELOADER_WATCH=default"), "{env}");
    let fp = d.status()["watches"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        env.contains(&format!("SECRET_RELOADER_FINGERPRINT={fp}")),
        "{fp}:\n{env}"
    );
}

#[test]
fn an_action_in_flight_is_shown_as_acting_with_its_start() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    for hanging in ["sink", "raw"] {
        let sink = Sink::start();
        sink.set(Mode::Hang);
        let raw = RawEndpoint::start("ok\n");
        raw.set(RawMode::Hang);
        let url = match hanging {
            "sink" => sink.url("/-/reload"),
            _ => raw.url("/-/reload"),
        };
        let d = Daemon::start(&[
            "--watch",
            conf.to_str().unwrap(),
            "--reload-url",
            &url,
            "--reload-timeout",
            "30s",
            "--min-reload-interval",
            "0",
        ]);
        d.wait_ready();
        std::fs::write(conf.join("token"), credential(&format!("2{hanging}"))).unwrap();
        let status = eventually(
            &format!("the call to the {hanging} endpoint to be in flight"),
            || d.status(),
            |s| s["targets"][0]["state"] == "acting",
        );
        let target = &status["targets"][0];
        let since = target["state_since"].as_str().unwrap_or("");
        assert!(since.len() >= 20 && since.ends_with('Z'), "{target}");
        assert_eq!(
            d.metric("target_state", &[("state", "acting")]),
            Some(1.0),
            "{}",
            d.metrics()
        );
        assert_eq!(d.metric("target_state", &[("state", "idle")]), Some(0.0));
        assert_eq!(crate::support::http_get(d.addr, "/healthz").unwrap().0, 200);
    }
}
