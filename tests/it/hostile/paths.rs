//! Paths and values that are not UTF-8 or carry control characters, in everything that leaves
//! the daemon (logs, `/status`, `/metrics`, the doctor's text and JSON); commas in flag values and
//! in the list variables; `..` names in plain directories.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::{json_controls, lines_starting_with, raw_controls};
use crate::support::process::{doctor, os, os_bytes, run_bin, running};
use crate::support::raw::RawEndpoint;
use crate::support::sink::Sink;
use crate::support::{Daemon, credential, eventually, http_get, now_ns, tempdir, unique};

/// A GET whose answer is kept as bytes: (status, body bytes).
fn get_bytes(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status = std::str::from_utf8(&resp[..at])
        .unwrap()
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp[at + 4..].to_vec())
}

/// The body is UTF-8 without raw control characters; returns it as text.
fn clean_text(what: &str, body: &[u8]) -> String {
    let text = std::str::from_utf8(body)
        .unwrap_or_else(|e| panic!("{what} is not valid UTF-8 ({e}): {body:?}"))
        .to_string();
    let controls = raw_controls(&text);
    assert!(
        controls.is_empty(),
        "{what} carries raw control characters {controls:?}:\n{text}"
    );
    text
}

#[test]
fn non_utf8_watched_path_is_escaped_in_status_metrics_and_doctor_and_the_daemon_lives_on() {
    let dir = tempdir();
    let bad = dir.path().join(OsStr::from_bytes(b"bad\xff\x1b[31m"));
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("token"), credential("1")).unwrap();
    let d = Daemon::start_os(&[
        OsStr::new("--watch"),
        bad.as_os_str(),
        OsStr::new("--exec"),
        OsStr::new("true"),
    ]);
    d.wait_ready();
    let shown = format!("{}/bad\\xff\\u{{1b}}[31m", dir.path().display());

    let (code, body) = get_bytes(d.addr, "/status");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let text = clean_text("/status", &body);
    let status: serde_json::Value = serde_json::from_str(&text).expect("/status is JSON");
    assert!(
        json_controls(&status).is_empty(),
        "{:?}",
        json_controls(&status)
    );
    assert_eq!(status["watches"][0]["paths"][0]["path"], shown.as_str());
    let file = status["watches"][0]["files"][0]["path"].as_str().unwrap();
    assert_eq!(file, format!("{shown}/token"));

    let (code, body) = get_bytes(d.addr, "/metrics");
    assert_eq!(code, 200);
    let metrics = clean_text("/metrics", &body);
    assert!(metrics.contains("secret_reloader_build_info"), "{metrics}");

    let listen = d.addr.to_string();
    let (_, text, json) = doctor(&[
        OsStr::new("--listen"),
        OsStr::new(&listen),
        OsStr::new("--watch"),
        bad.as_os_str(),
        OsStr::new("--exec"),
        OsStr::new("true"),
    ]);
    assert!(raw_controls(&text).is_empty(), "doctor text: {text:?}");
    assert!(text.contains("bad\\xff\\u{1b}[31m"), "{text}");
    assert_eq!(json["daemon"]["reachable"], true, "{json}");
    assert_eq!(
        json["groups"][0]["paths"][0]["path"],
        shown.as_str(),
        "{json}"
    );

    // Still alive and answering, after /status, /metrics and the doctor's questions.
    assert!(running(d.pid()), "the daemon died; log:\n{}", d.log());
    assert_eq!(http_get(d.addr, "/healthz").unwrap().0, 200);
    assert_eq!(d.status()["ready"], true);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn newline_in_a_watched_path_cannot_forge_a_log_line() {
    let dir = tempdir();
    let marker = format!("FORGED{}", unique());
    let conf = dir
        .path()
        .join(format!("conf\n{marker} ERROR group: the admin must rotate"));
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    let late = dir.path().join(format!("late\n{marker} second"));
    let sink = Sink::start_with_probe(Some(conf.join("token")));
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--watch",
        late.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    // The missing path holds the content back (a warning naming both paths), then appears: a
    // change and a reload, logged with the paths.
    std::fs::create_dir(&late).unwrap();
    std::fs::write(late.join("token"), "late").unwrap();
    std::fs::write(conf.join("token"), credential("2")).unwrap();
    eventually("the reload", || sink.delivered().len(), |n| *n >= 1);
    let log = d.log();
    assert!(
        log.contains(&marker),
        "the paths were never logged, the test proves nothing:\n{log}"
    );
    let forged = lines_starting_with(&log, &marker);
    assert!(forged.is_empty(), "forged log lines {forged:?} in:\n{log}");
    assert!(raw_controls(&log).is_empty(), "{log:?}");
    let status = d.status().to_string();
    assert!(status.contains(&format!("conf\\\\n{marker}")), "{status}");
}

#[test]
fn a_comma_in_a_watch_flag_is_one_path_and_is_reloaded() {
    let dir = tempdir();
    let ab = dir.path().join("a,b");
    std::fs::create_dir(&ab).unwrap();
    std::fs::write(ab.join("token"), credential("1")).unwrap();
    let sink = Sink::start_with_probe(Some(ab.join("token")));
    let url = sink.url("/-/reload");
    let d = Daemon::start(&["--watch", ab.to_str().unwrap(), "--reload-url", &url]);
    d.wait_ready();
    let status = d.status();
    let paths = status["watches"][0]["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(paths[0]["path"], ab.to_str().unwrap());
    assert_eq!(paths[0]["layout"], "directory");
    assert_eq!(status["watches"][0]["complete"], true, "{status}");
    std::fs::write(ab.join("token"), credential("2")).unwrap();
    let calls = eventually("the reload", || sink.calls(), |c| !c.is_empty());
    assert_eq!(calls[0].version.as_deref(), Some("2"));
}

#[test]
fn a_comma_in_a_reload_url_query_reaches_the_endpoint_intact() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    let ep = RawEndpoint::start("ok\n");
    let url = ep.url("/-/reload?x=1,2");
    let d = Daemon::start(&["--watch", conf.to_str().unwrap(), "--reload-url", &url]);
    d.wait_ready();
    assert_eq!(
        d.status()["targets"].as_array().unwrap().len(),
        1,
        "one URL, one target"
    );
    std::fs::write(conf.join("token"), credential("2")).unwrap();
    let posts = eventually("the call", || ep.requests("POST"), |r| !r.is_empty());
    let line = posts[0].lines().next().unwrap();
    assert_eq!(line, "POST /-/reload?x=1,2 HTTP/1.1", "{}", posts[0]);
}

#[test]
fn watch_variable_splits_at_commas_and_keeps_escaped_ones() {
    let dir = tempdir();
    let mk = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("token"), credential("1")).unwrap();
        p
    };
    let (p1, p2, pq) = (mk("p1"), mk("p2"), mk("p,q"));
    let paths_of = |value: &str| -> Vec<String> {
        let d = Daemon::start_with(&["--exec", "true"], &[("SECRET_RELOADER_WATCH", value)]);
        d.wait_ready();
        d.status()["watches"][0]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect()
    };
    let two = format!("{},{}", p1.display(), p2.display());
    assert_eq!(
        paths_of(&two),
        [p1.display().to_string(), p2.display().to_string()]
    );
    let one = format!("{}/p\\,q", dir.path().display());
    assert_eq!(paths_of(&one), [pq.display().to_string()]);
}

#[test]
fn dot_dot_names_in_a_plain_directory_are_content() {
    let dir = tempdir();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("token"), credential("1")).unwrap();
    std::fs::write(conf.join("..foo"), "foo-1").unwrap();
    std::fs::write(conf.join("...three"), "three-1").unwrap();
    let sink = Sink::start();
    let url = sink.url("/-/reload");
    let d = Daemon::start(&[
        "--watch",
        conf.to_str().unwrap(),
        "--reload-url",
        &url,
        "--min-reload-interval",
        "0",
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();
    let files = d.status()["watches"][0]["files"].to_string();
    for name in ["..foo", "...three", "token"] {
        assert!(
            files.contains(&format!("/conf/{name}\"")),
            "{name} is not content: {files}"
        );
    }
    for (i, name) in ["..foo", "...three"].into_iter().enumerate() {
        std::fs::write(conf.join(name), format!("{name}-2")).unwrap();
        eventually(
            &format!("the reload for {name}"),
            || sink.count(),
            |n| *n > i,
        );
        let t = now_ns();
        d.passed(t);
        assert_eq!(sink.count(), i + 1, "one reload per change of {name}");
    }
}

#[test]
fn control_characters_in_process_names_and_header_names_are_escaped() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("token"), credential("1")).unwrap();
    let marker = format!("FORGED{}", unique());
    let hostile = format!("app\u{1b}[31m\n{marker} WARN x");
    let sink = Sink::start();

    // --process-name: a process that never runs; the waiting message names it.
    let d = Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &hostile,
        "--min-reload-interval",
        "0",
    ]);
    d.wait_ready();
    std::fs::write(vol.join("token"), credential("2")).unwrap();
    let status = eventually(
        "the waiting message",
        || d.status(),
        |s| !s["targets"][0]["last_error"].is_null(),
    );
    let (code, body) = get_bytes(d.addr, "/status");
    assert_eq!(code, 200);
    let text = clean_text("/status", &body);
    assert!(text.contains("\\\\u{1b}[31m\\\\n"), "not escaped: {text}");
    assert!(
        json_controls(&status).is_empty(),
        "{:?}",
        json_controls(&status)
    );
    let msg = status["targets"][0]["last_error"]["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains(&format!("app\\u{{1b}}[31m\\n{marker}")),
        "{msg}"
    );
    let (code, body) = get_bytes(d.addr, "/metrics");
    assert_eq!(code, 200);
    let metrics = clean_text("/metrics", &body);
    assert!(
        metrics.contains("signal:app\\\\u{1b}[31m\\\\n"),
        "target label: {metrics}"
    );
    assert!(
        lines_starting_with(&metrics, &marker).is_empty(),
        "{metrics}"
    );
    let log = d.log();
    assert!(log.contains(&marker), "never logged: {log}");
    assert!(lines_starting_with(&log, &marker).is_empty(), "{log}");
    assert!(raw_controls(&log).is_empty(), "{log:?}");
    let (_, text, json) = doctor(&os(&[
        "--watch",
        vol.to_str().unwrap(),
        "--process-name",
        &hostile,
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]));
    assert!(text.contains(&marker), "{text}");
    assert!(raw_controls(&text).is_empty(), "{text:?}");
    assert!(lines_starting_with(&text, &marker).is_empty(), "{text}");
    assert!(
        json_controls(&json).is_empty(),
        "{:?}",
        json_controls(&json)
    );
    assert!(json.to_string().contains("\\\\u{1b}"), "{json}");
    drop(d);

    // Header names (flags and config), a group name, a process name that is not UTF-8: usage
    // errors, escaped, no panic.
    let bad_header = format!("X-\u{1b}[31m\n{marker}: v");
    let bad_config = dir.path().join("bad-config.json");
    std::fs::write(
        &bad_config,
        serde_json::json!({
            "groups": [{
                "name": format!("g\u{1b}[31m\n{marker}"),
                "watch": [vol.to_str().unwrap()],
                "targets": [{
                    "type": "http",
                    "url": sink.url("/"),
                    "headers": { format!("X-\u{1b}\n{marker}"): "v" },
                }],
            }]
        })
        .to_string(),
    )
    .unwrap();
    let url = sink.url("/-/reload");
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        [
            "--watch",
            vol.to_str().unwrap(),
            "--reload-url",
            &url,
            "--reload-header",
            &bad_header,
        ]
        .iter()
        .map(Into::into)
        .collect(),
        [
            "--watch",
            vol.to_str().unwrap(),
            "--reload-url",
            &url,
            "--reload-header-file",
            &bad_header,
        ]
        .iter()
        .map(Into::into)
        .collect(),
        ["--config", bad_config.to_str().unwrap()]
            .iter()
            .map(Into::into)
            .collect(),
        vec![
            "--watch".into(),
            vol.as_os_str().into(),
            "--process-name".into(),
            os_bytes(b"app\xff\x1b[31m"),
        ],
        vec![
            "--watch".into(),
            vol.as_os_str().into(),
            "--reload-url".into(),
            os_bytes(b"http://127.0.0.1:1/\xff\x1b[31m"),
        ],
    ];
    for args in cases {
        let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let e = run_bin(&refs);
        assert_eq!(e.code, 2, "{args:?}: {e:?}");
        assert!(!e.stderr.contains("panicked"), "{args:?}: {}", e.stderr);
        assert!(
            raw_controls(&e.stderr).is_empty(),
            "{args:?}: {:?}",
            e.stderr
        );
        assert!(
            lines_starting_with(&e.stderr, &marker).is_empty(),
            "{args:?}: {}",
            e.stderr
        );
    }
}

#[test]
fn control_characters_in_config_target_names_are_refused_and_paths_escaped() {
    let dir = tempdir();
    let marker = format!("FORGED{}", unique());
    let sink = Sink::start();
    let odd = dir.path().join(format!("odd\u{1b}]0;title\u{7}\n{marker}"));
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("token"), "x").unwrap();
    let config = serde_json::json!({
        "groups": [{
            "name": "g1",
            "watch": [odd.to_str().unwrap()],
            "targets": [{
                "type": "http",
                "name": format!("t\u{1b}[2J\n{marker} target ü"),
                "url": sink.url("/-/reload"),
            }],
        }]
    });
    let file = dir.path().join("config.json");
    std::fs::write(&file, config.to_string()).unwrap();
    // A target name with control characters is refused, and the refusal is escaped itself.
    let out = std::process::Command::new(crate::support::bin())
        .args(["--config", file.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("targets[0].name"), "{stderr}");
    assert!(
        raw_controls(&stderr.replace('\n', "")).is_empty(),
        "{stderr:?}"
    );
    assert!(
        lines_starting_with(&stderr, &marker).is_empty(),
        "{stderr:?}"
    );
    // A name without them (non-ASCII kept) runs, with the odd path escaped everywhere.
    let config = serde_json::json!({
        "groups": [{
            "name": "g1",
            "watch": [odd.to_str().unwrap()],
            "targets": [{
                "type": "http",
                "name": format!("{marker} target ü"),
                "url": sink.url("/-/reload"),
            }],
        }]
    });
    std::fs::write(&file, config.to_string()).unwrap();
    let d = Daemon::start(&["--config", file.to_str().unwrap(), "--log-level", "debug"]);
    d.wait_ready();
    std::fs::write(odd.join("token"), "y").unwrap();
    eventually("the reload", || sink.count(), |n| *n >= 1);
    eventually(
        "the reload to be recorded",
        || d.metric("reloads_total", &[("result", "success")]),
        |v| v.is_some_and(|v| v >= 1.0),
    );
    // Every output is checked, and every finding reported together.
    let mut found: Vec<String> = Vec::new();
    let mut check = |what: &str, text: &str| {
        assert!(
            text.contains(&marker),
            "{what}: the names never showed: {text}"
        );
        let controls = raw_controls(text);
        if !controls.is_empty() {
            found.push(format!("{what}: raw control characters {controls:?}"));
        }
        let forged = lines_starting_with(text, &marker);
        if !forged.is_empty() {
            found.push(format!("{what}: forged lines {forged:?}"));
        }
    };
    let (code, body) = get_bytes(d.addr, "/status");
    assert_eq!(code, 200);
    let status_text = String::from_utf8(body).expect("/status is UTF-8");
    check("/status", &status_text);
    let status: serde_json::Value = serde_json::from_str(&status_text).unwrap();
    assert!(
        status_text.contains("target ü"),
        "the name is kept: {status_text}"
    );
    let (code, body) = get_bytes(d.addr, "/metrics");
    assert_eq!(code, 200);
    let metrics = String::from_utf8(body).expect("/metrics is UTF-8");
    check("/metrics", &metrics);
    check("the log", &d.log());
    let (_, text, json) = doctor(&os(&[
        "--config",
        file.to_str().unwrap(),
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]));
    check("doctor text", &text);
    for (what, v) in [("/status", &status), ("doctor JSON", &json)] {
        let controls = json_controls(v);
        if !controls.is_empty() {
            found.push(format!(
                "{what}: strings with control characters {controls:?}"
            ));
        }
    }
    assert!(found.is_empty(), "not escaped:\n{}", found.join("\n"));
}
