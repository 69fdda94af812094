//! Usage and configuration errors: exit code 2 and a message naming the flag or field.

use std::process::Command;
use std::time::Duration;

use crate::support::process::run_to_end;
use crate::support::{bin, tempdir};

/// Runs the binary with `args` and `env`; returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).envs(env.iter().copied());
    // A valid configuration would start the daemon: the limit catches that mistake (a daemon
    // still running after it was accepted as a valid configuration).
    let e = run_to_end(cmd, Duration::from_secs(10));
    (e.code, e.stderr)
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["nothing to watch", "--watch"]),
        (
            &["--watch", w],
            &["no action given", "--reload-url", "--exec"],
        ),
        (&["--reload-url", "http://127.0.0.1:1/"], &["--watch"]),
        (
            &["--watch", w, "--reload-url", "ftp://x/"],
            &["--reload-url", "http://"],
        ),
        (
            &["--watch", w, "--reload-url", "https://127.0.0.1/-/reload"],
            &["--reload-url", "an https:// URL needs --tls-ca-file"],
        ),
        (
            &["--watch", w, "--reload-url", "http://user:pw@127.0.0.1/"],
            &["--reload-url", "credentials"],
        ),
        (
            &[
                "--watch",
                w,
                "--process-name",
                "a",
                "--process-cmdline",
                "^a",
            ],
            &["--process-name", "--process-cmdline", "only one"],
        ),
        (
            &["--watch", w, "--signal", "HUPP", "--process-name", "a"],
            &["--signal", "HUPP"],
        ),
        (
            &["--watch", w, "--signal", "STOP", "--process-name", "a"],
            &["--signal", "stops the process"],
        ),
        (
            &["--watch", w, "--signal", "none", "--process-name", "a"],
            &[
                "--signal none",
                "sends nothing",
                "--signal HUP",
                "--consumed-as env",
            ],
        ),
        (
            &["--watch", w, "--signal", "HUP"],
            &["--signal needs a target process"],
        ),
        (&["--watch", w, "--signal-all"], &["--signal-all"]),
        (
            &[
                "--watch",
                w,
                "--process-name",
                "a",
                "--applied-when",
                "sometimes",
            ],
            &[
                "--applied-when",
                "'sometimes' is not signalled or workers-replaced",
            ],
        ),
        (
            &[
                "--watch",
                w,
                "--process-name",
                "a",
                "--worker-drain-timeout",
                "1m",
            ],
            &["--worker-drain-timeout", "--applied-when workers-replaced"],
        ),
        (
            &[
                "--watch",
                w,
                "--process-name",
                "a",
                "--applied-when",
                "workers-replaced",
                "--worker-drain-timeout",
                "0",
            ],
            &["--worker-drain-timeout: 0"],
        ),
        (
            &[
                "--watch",
                w,
                "--exec",
                "true",
                "--applied-when",
                "workers-replaced",
            ],
            &["--applied-when", "signal target"],
        ),
        (
            &["--watch", w, "--process-name", "a/b"],
            &["--process-name", "a/b"],
        ),
        (
            &["--watch", w, "--process-cmdline", "(", "--signal", "HUP"],
            &["--process-cmdline", "regular expression"],
        ),
        (
            &["--watch", w, "--exec", "sh -c 'unbalanced"],
            &["--exec", "unbalanced quotes"],
        ),
        (
            &["--watch", w, "--exec", "true", "--debounce", "fast"],
            &["--debounce", "fast"],
        ),
        (
            &[
                "--watch",
                w,
                "--exec",
                "true",
                "--debounce",
                "1s",
                "--debounce-max",
                "10ms",
            ],
            &["--debounce-max"],
        ),
        (
            &["--watch", w, "--exec", "true", "--poll-interval", "1ms"],
            &["--poll-interval"],
        ),
        (
            &["--watch", w, "--exec", "true", "--listen", "nowhere"],
            &["--listen", "nowhere"],
        ),
        (
            &["--watch", w, "--exec", "true", "--log-format", "xml"],
            &["--log-format", "xml"],
        ),
        (
            &[
                "--watch",
                w,
                "--exec",
                "true",
                "--reload-on-start",
                "sometimes",
            ],
            &["--reload-on-start"],
        ),
        (
            &[
                "--watch",
                w,
                "--reload-url",
                "http://127.0.0.1:1/",
                "--reload-method",
                "GE T",
            ],
            &["--reload-method"],
        ),
        (
            &[
                "--watch",
                w,
                "--reload-url",
                "http://127.0.0.1:1/",
                "--reload-expected-status",
                "42",
            ],
            &["--reload-expected-status"],
        ),
        (
            &[
                "--watch",
                w,
                "--reload-url",
                "http://127.0.0.1:1/",
                "--reload-header",
                "X-Token s3cr3tvalue123456",
            ],
            &["--reload-header"],
        ),
        (
            &["--watch", w, "--exec", "true", "--reload-header", "X: y"],
            &["--reload-header", "--reload-url"],
        ),
        (
            &[
                "--watch",
                w,
                "--exec",
                "true",
                "--fingerprint-key-file",
                "/nonexistent/key",
            ],
            &["--fingerprint-key-file", "/nonexistent/key"],
        ),
        (
            &["--watch", w, "--exec", "true", "--frobnicate"],
            &["--frobnicate"],
        ),
        (
            &["--watch", w, "--webhook-retries", "many", "--exec", "true"],
            &["--reload-retries", "many"],
        ),
        (
            &[
                "--watch",
                w,
                "--exec",
                "true",
                "--verify-json",
                "/data/ready == true",
            ],
            &["--verify-json needs --verify-url"],
        ),
        (
            &[
                "--watch",
                w,
                "--exec",
                "true",
                "--verify-url",
                "http://127.0.0.1:1/",
                "--verify-json",
                "/data/ready = true",
                "--verify-json",
                "data/ready == true",
                "--verify-json",
                "/data/ready == yes",
                "--verify-json",
                "/data/lastConfigTime >= \"soon\"",
            ],
            &[
                "--verify-json '/data/ready = true': '=' is not an operator: use ==, != or >=",
                "--verify-json 'data/ready == true': the pointer 'data/ready' does not start with / (RFC 6901: '/data/ready'",
                "--verify-json '/data/ready == yes': VALUE yes is not a JSON literal",
                ">= compares numbers or RFC 3339 times",
            ],
        ),
    ];
    for (args, wants) in cases {
        let (code, err) = run(args, &[]);
        assert_eq!(code, 2, "{args:?} should exit 2; stderr:\n{err}");
        for want in *wants {
            assert!(
                err.contains(want),
                "{args:?}: expected {want:?} in stderr, got:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    let (code, err) = run(
        &[
            "--watch",
            w,
            "--reload-url",
            "ftp://x/",
            "--listen",
            "nowhere",
            "--signal",
            "NOPE",
            "--process-name",
            "a",
        ],
        &[],
    );
    assert_eq!(code, 2);
    for want in ["--reload-url", "--listen", "--signal"] {
        assert!(err.contains(want), "expected {want} in:\n{err}");
    }
}

#[test]
fn bad_environment_values_name_the_flag() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    let (code, err) = run(
        &["--exec", "true"],
        &[
            ("SECRET_RELOADER_WATCH", w),
            ("SECRET_RELOADER_DEBOUNCE", "soon"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--debounce") && err.contains("soon"), "{err}");
    let (code, err) = run(
        &["--exec", "true"],
        &[
            ("SECRET_RELOADER_WATCH", w),
            ("SECRET_RELOADER_SIGNAL_ALL", "maybe"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--signal-all"), "{err}");
}

#[test]
fn config_file_errors_name_the_field() {
    let dir = tempdir();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            dir.path().join("missing.json").display().to_string(),
            vec!["--config", "missing.json"],
        ),
        (
            write("syntax.json", "{ \"groups\": [ }"),
            vec!["syntax.json", "line 1"],
        ),
        (
            write(
                "unknown.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"http","urll":"http://127.0.0.1/"}]}]}"#,
            ),
            vec!["unknown field `urll`"],
        ),
        (
            write(
                "badurl.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"exec","command":"true"},{"type":"http","url":"gopher://x"}]}]}"#,
            ),
            vec!["groups[0].targets[1].url"],
        ),
        (
            write(
                "dup.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"exec","command":"true"}]},{"name":"a","watch":["/y"],"targets":[{"type":"exec","command":["true"]}]}]}"#,
            ),
            vec!["'a' is used twice"],
        ),
        (
            write(
                "notargets.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[]}]}"#,
            ),
            vec!["groups[0].targets is empty"],
        ),
        (
            write(
                "badsig.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"signal","signal":"BOOM","process_name":"x"}]}]}"#,
            ),
            vec!["groups[0].targets[0].signal", "BOOM"],
        ),
        (
            write(
                "reportonly.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"signal","signal":"none","process_name":"x"}]}]}"#,
            ),
            vec![
                "watch group 'a'",
                "\"signal\": \"none\"",
                "consumed_as: env",
            ],
        ),
        (
            write(
                "nosel.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"signal"}]}]}"#,
            ),
            vec!["groups[0].targets[0]", "process_name"],
        ),
        (
            write(
                "baddur.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"debounce":"quick","targets":[{"type":"exec","command":"true"}]}]}"#,
            ),
            vec!["groups[0].debounce", "quick"],
        ),
        (
            write(
                "badtype.json",
                r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"carrier-pigeon"}]}]}"#,
            ),
            vec!["carrier-pigeon"],
        ),
    ];
    for (path, wants) in cases {
        let (code, err) = run(&["--config", &path], &[]);
        assert_eq!(code, 2, "{path}: {err}");
        for want in wants {
            assert!(err.contains(want), "{path}: expected {want:?} in:\n{err}");
        }
    }
}

#[test]
fn config_json_errors_exit_2_for_the_daemon_and_the_doctor() {
    let bad = r#"{"groups":[{"name":"a","watch":["/x"],"targets":[{"type":"http","url":"gopher://x"}]}]}"#;
    for pre in [&[][..], &["doctor", "--standalone"][..]] {
        let args = [pre, &["--config-json", bad]].concat();
        let (code, err) = run(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("--config-json: groups[0].targets[0].url"),
            "{args:?}: {err}"
        );
        let args = [pre, &["--config-json", bad, "--config", "/etc/c.json"]].concat();
        let (code, err) = run(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("--config and --config-json"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn help_and_version() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--watch",
        "--reload-url",
        "--webhook-url",
        "--process-name",
        "--exec",
        "SECRET_RELOADER_WATCH",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn unusable_listen_address_is_a_runtime_error_exit_1() {
    let dir = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run(
        &[
            "--watch",
            dir.path().to_str().unwrap(),
            "--exec",
            "true",
            "--listen",
            &addr,
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot listen on") && err.contains("--listen"),
        "{err}"
    );
}

#[test]
fn every_malformed_environment_value_exits_2_naming_its_flag() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("SECRET_RELOADER_DEBOUNCE", "soon", "--debounce"),
        ("SECRET_RELOADER_DEBOUNCE_MAX", "later", "--debounce-max"),
        (
            "SECRET_RELOADER_RESYNC_INTERVAL",
            "often",
            "--resync-interval",
        ),
        ("SECRET_RELOADER_POLL_INTERVAL", "1ms", "--poll-interval"),
        (
            "SECRET_RELOADER_RELOAD_ON_START",
            "sometimes",
            "--reload-on-start",
        ),
        (
            "SECRET_RELOADER_MIN_RELOAD_INTERVAL",
            "x",
            "--min-reload-interval",
        ),
        ("SECRET_RELOADER_RELOAD_URL", "ftp://x/", "--reload-url"),
        (
            "SECRET_RELOADER_RELOAD_TIMEOUT",
            "forever",
            "--reload-timeout",
        ),
        ("SECRET_RELOADER_RELOAD_RETRIES", "-1", "--reload-retries"),
        (
            "SECRET_RELOADER_RETRY_BACKOFF_MAX",
            "x",
            "--retry-backoff-max",
        ),
        ("SECRET_RELOADER_PROCESS_NAME", "a/b", "--process-name"),
        ("SECRET_RELOADER_PROCESS_CMDLINE", "(", "--process-cmdline"),
        ("SECRET_RELOADER_PID_FILE", "", "--pid-file"),
        ("SECRET_RELOADER_EXEC", "sh -c 'x", "--exec"),
        ("SECRET_RELOADER_LISTEN", "nowhere", "--listen"),
        ("SECRET_RELOADER_LOG_FORMAT", "xml", "--log-format"),
        ("SECRET_RELOADER_LOG_LEVEL", "loud", "--log-level"),
        (
            "SECRET_RELOADER_CONFIG",
            "/nonexistent/config.json",
            "--config",
        ),
        (
            "SECRET_RELOADER_CONFIG_JSON",
            "{\"groups\": [",
            "--config-json: ",
        ),
        (
            "SECRET_RELOADER_FINGERPRINT_KEY_FILE",
            "/nonexistent/key",
            "--fingerprint-key-file",
        ),
        ("SECRET_RELOADER_SHUTDOWN_GRACE", "x", "--shutdown-grace"),
        ("SECRET_RELOADER_VERIFY_URL", "ftp://x/", "--verify-url"),
        ("SECRET_RELOADER_VERIFY_CONTAINS", "ok", "--verify-url"),
        ("SECRET_RELOADER_VERIFY_JSON", "/a == true", "--verify-url"),
        (
            "SECRET_RELOADER_VERIFY_JSON",
            "/a == true,/b >= \"x\"",
            "--verify-json '/b >= \"x\"'",
        ),
        ("SECRET_RELOADER_APP_UID", "abc", "--app-uid"),
        ("SECRET_RELOADER_APP_GID", "-5", "--app-gid"),
        ("SECRET_RELOADER_APP_GROUPS", "a,b", "--app-groups"),
        ("SECRET_RELOADER_ACCESS_POLICY", "maybe", "--access-policy"),
        (
            "SECRET_RELOADER_CONSISTENCY_CHECK",
            "perhaps",
            "--consistency-check",
        ),
        (
            "SECRET_RELOADER_CONSISTENCY_TIMEOUT",
            "x",
            "--consistency-timeout",
        ),
    ];
    for (var, value, flag) in cases {
        let args: &[&str] = match *var {
            "SECRET_RELOADER_PROCESS_NAME"
            | "SECRET_RELOADER_PROCESS_CMDLINE"
            | "SECRET_RELOADER_PID_FILE"
            | "SECRET_RELOADER_EXEC"
            | "SECRET_RELOADER_RELOAD_URL" => &["--watch", w],
            _ => &["--watch", w, "--exec", "true"],
        };
        let (code, err) = run(args, &[(var, value)]);
        assert_eq!(code, 2, "{var}={value:?} should exit 2; stderr:\n{err}");
        assert!(
            err.contains(flag),
            "{var}={value:?}: expected {flag} in:\n{err}"
        );
    }
    let (code, err) = run(
        &["--watch", w, "--process-name", "x"],
        &[("SECRET_RELOADER_SIGNAL", "NOPE")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--signal") && err.contains("NOPE"), "{err}");
    let (code, err) = run(
        &["--watch", w, "--reload-url", "http://127.0.0.1:1/"],
        &[("SECRET_RELOADER_RELOAD_METHOD", "GE T")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--reload-method"), "{err}");
    let (code, err) = run(
        &["--watch", w, "--reload-url", "http://127.0.0.1:1/"],
        &[("SECRET_RELOADER_RELOAD_EXPECTED_STATUS", "abc")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--reload-expected-status"), "{err}");
    let (code, err) = run(
        &["--watch", w, "--reload-url", "http://127.0.0.1:1/"],
        &[("SECRET_RELOADER_RELOAD_HEADER", "novalue")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--reload-header"), "{err}");
}

#[test]
fn every_malformed_config_field_exits_2_naming_it() {
    let dir = tempdir();
    let group = |extra: &str, target: &str| {
        format!(r#"{{"groups":[{{"name":"g","watch":["/x"]{extra},"targets":[{target}]}}]}}"#)
    };
    let exec = r#"{"type":"exec","command":"true"}"#;
    let cases: Vec<(String, &str)> = vec![
        (group(r#","debounce_max":"soon""#, exec), "groups[0].debounce_max"),
        (group(r#","min_reload_interval":"x""#, exec), "groups[0].min_reload_interval"),
        (group(r#","consistency_timeout":"x""#, exec), "groups[0].consistency_timeout"),
        (group(r#","reload_on_start":"sometimes""#, exec), "sometimes"),
        (group(r#","reload_retries":-1"#, exec), "-1"),
        (group(r#","access_policy":"maybe""#, exec), "maybe"),
        (group(r#","consistency_check":"perhaps""#, exec), "perhaps"),
        (group(r#","app_uid":5"#, exec), "groups[0].app_uid and app_gid go together"),
        (group(r#","app_uid":"x""#, exec), "app_uid"),
        (group(r#","access_policy":"block""#, r#"{"type":"http","url":"http://127.0.0.1:1/"}"#), "access policy block"),
        (group("", r#"{"type":"http","url":"http://127.0.0.1:1/","method":"GE T"}"#), "groups[0].targets[0].method"),
        (group("", r#"{"type":"http","url":"http://127.0.0.1:1/","expected_status":42}"#), "groups[0].targets[0].expected_status"),
        (group("", r#"{"type":"http","url":"http://127.0.0.1:1/","headers":{"X":"a\nb"}}"#), "groups[0].targets[0].headers"),
        (group("", r#"{"type":"http","url":"http://127.0.0.1:1/","timeout":"x"}"#), "groups[0].targets[0].timeout"),
        (group("", r#"{"type":"exec","command":"true","verify_url":"ftp://x"}"#), "groups[0].targets[0].verify_url"),
        (group("", r#"{"type":"exec","command":"true","verify_contains":"ok"}"#), "groups[0].targets[0].verify_contains"),
        (group("", r#"{"type":"exec","command":"true","verify_json":["/a == true"]}"#), "groups[0].targets[0].verify_json needs verify_url"),
        (group("", r#"{"type":"exec","command":"true","verify_url":"http://127.0.0.1:1/","verify_json":["/a => true"]}"#), "groups[0].targets[0].verify_json '/a => true': '=>' is not an operator"),
        (group("", r#"{"type":"exec","command":"true","verify_url":"http://127.0.0.1:1/","verify_json":[]}"#), "groups[0].targets[0].verify_json is empty"),
        (group("", r#"{"type":"exec","command":"true","verify_url":"http://127.0.0.1:1/","verify_json":"/a == true"}"#), "groups[0].targets[0]: invalid type: string \"/a == true\", expected a sequence"),
        (group("", r#"{"type":"exec","command":[]}"#), "groups[0].targets[0].command"),
        (group("", r#"{"type":"signal","process_cmdline":"("}"#), "groups[0].targets[0].process_cmdline"),
        (group("", r#"{"type":"signal","process_name":"a","process_cmdline":"^a"}"#), "only one"),
        (group("", r#"{"type":"signal","process_name":"a","applied_when":"never"}"#), "groups[0].targets[0].applied_when: 'never'"),
        (group("", r#"{"type":"signal","process_name":"a","worker_drain_timeout":"1m"}"#), "groups[0].targets[0].worker_drain_timeout is the time old workers get with applied_when workers-replaced"),
        (group("", r#"{"type":"signal","process_name":"a","applied_when":"workers-replaced","worker_drain_timeout":"soon"}"#), "groups[0].targets[0].worker_drain_timeout: 'soon'"),
        (r#"{"groups":[{"name":"bad name!","watch":["/x"],"targets":[{"type":"exec","command":"true"}]}]}"#.to_string(), "bad name!"),
        (r#"{"groups":[{"name":"g","watch":[],"targets":[{"type":"exec","command":"true"}]}]}"#.to_string(), "groups[0].watch is empty"),
        (r#"{"groups":[]}"#.to_string(), "groups is empty"),
        (r#"{"groupz":[]}"#.to_string(), "groupz"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.json"));
        std::fs::write(&path, text).unwrap();
        let (code, err) = run(&["--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(want), "{text}: expected {want:?} in:\n{err}");
    }
}
