//! Usage errors made of hostile values: durations past any clock, URLs carrying credentials,
//! headers that would make a request ambiguous. Exit 2, a message naming the flag, no panic, no
//! echo of what must stay secret.

use crate::support::process::{Exit, os, run_bin, run_to_end};
use crate::support::tempdir;

fn usage(args: &[&str]) -> Exit {
    let e = run_bin(&os(args));
    assert!(
        !e.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        e.stderr
    );
    e
}

#[test]
fn durations_over_365_days_exit_2_naming_the_flag_and_the_largest_value() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    for flag in [
        "--resync-interval",
        "--debounce-max",
        "--min-reload-interval",
        "--poll-interval",
        "--debounce",
        "--reload-timeout",
    ] {
        for value in ["300000000000years", "366days"] {
            let e = usage(&["--watch", w, "--exec", "true", flag, value]);
            assert_eq!(e.code, 2, "{flag} {value}: {e:?}");
            assert!(e.stderr.contains(flag), "{flag} {value}: {}", e.stderr);
            assert!(
                e.stderr.contains("largest accepted value") && e.stderr.contains("365days"),
                "{flag} {value}: the message must say the largest value (365days): {}",
                e.stderr
            );
        }
    }
    // The largest value itself is accepted (the daemon would start: doctor takes the same flags).
    let e = usage(&[
        "doctor",
        "--watch",
        w,
        "--exec",
        "true",
        "--resync-interval",
        "365days",
        "--standalone",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_ne!(e.code, 2, "365days must be accepted: {e:?}");
}

#[test]
fn startup_errors_never_echo_url_queries_or_userinfo() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["--reload-url", "https://127.0.0.1/x?token=SECRETQ"],
        &["--reload-url", "http://u:SECRETU@127.0.0.1/"],
        &[
            "--reload-url",
            "http://u:SECRETU@127.0.0.1/x?token=SECRETQ#SECRETQ",
        ],
        &["--reload-url", "ht tp://x/?token=SECRETQ"],
        &["--reload-url", "ftp://u:SECRETU@h/?token=SECRETQ"],
        &["--exec", "true", "--verify-url", "ftp://h/?token=SECRETQ"],
        &[
            "--exec",
            "true",
            "--verify-url",
            "http://u:SECRETU@127.0.0.1/",
        ],
        &["--exec", "true", "--verify-url", "ht tp://x/?token=SECRETQ"],
    ];
    for extra in cases {
        let mut args = vec!["--watch", w];
        args.extend_from_slice(extra);
        let e = usage(&args);
        assert_eq!(e.code, 2, "{args:?}: {e:?}");
        let flag = if extra.contains(&"--verify-url") {
            "--verify-url"
        } else {
            "--reload-url"
        };
        assert!(e.stderr.contains(flag), "{args:?}: {}", e.stderr);
        for secret in ["SECRETQ", "SECRETU"] {
            assert!(
                !e.stderr.contains(secret),
                "{args:?} echoed {secret}: {}",
                e.stderr
            );
        }
        // The environment variable is the same flag.
        let value = extra[extra.len() - 1];
        let var = if flag == "--verify-url" {
            "SECRET_RELOADER_VERIFY_URL"
        } else {
            "SECRET_RELOADER_RELOAD_URL"
        };
        let mut cmd = std::process::Command::new(crate::support::bin());
        cmd.args(["--watch", w, "--exec", "true"]).env(var, value);
        let e = run_to_end(cmd, std::time::Duration::from_secs(10));
        assert_eq!(e.code, 2, "{var}={value}: {e:?}");
        for secret in ["SECRETQ", "SECRETU"] {
            assert!(
                !e.stderr.contains(secret),
                "{var} echoed {secret}: {}",
                e.stderr
            );
        }
    }
}

#[test]
fn authorization_twice_and_framing_headers_are_refused() {
    let dir = tempdir();
    let w = dir.path().to_str().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").unwrap();
    let token = token.to_str().unwrap();
    let url = "http://127.0.0.1:1/-/reload";
    let e = usage(&[
        "--watch",
        w,
        "--reload-url",
        url,
        "--reload-header",
        "Authorization: Bearer x",
        "--reload-bearer-token-file",
        token,
    ]);
    assert_eq!(e.code, 2, "{e:?}");
    assert!(
        e.stderr.contains("--reload-header") && e.stderr.contains("--reload-bearer-token-file"),
        "both must be named: {}",
        e.stderr
    );
    let e = usage(&[
        "--watch",
        w,
        "--reload-url",
        url,
        "--reload-header-file",
        &format!("authorization: {token}"),
        "--reload-bearer-token-file",
        token,
    ]);
    assert_eq!(e.code, 2, "{e:?}");
    assert!(
        e.stderr.contains("--reload-header-file")
            && e.stderr.contains("--reload-bearer-token-file"),
        "{}",
        e.stderr
    );
    for header in [
        "Host: x",
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "host : evil.example",
        "TRANSFER-ENCODING: chunked",
    ] {
        for flag in ["--reload-header", "--reload-header-file"] {
            let value = if flag == "--reload-header" {
                header.to_string()
            } else {
                format!("{}: {token}", header.split(':').next().unwrap())
            };
            let e = usage(&["--watch", w, "--reload-url", url, flag, &value]);
            assert_eq!(e.code, 2, "{flag} {value}: {e:?}");
            assert!(
                e.stderr.contains(flag) && e.stderr.contains("cannot be configured"),
                "{flag} {value}: {}",
                e.stderr
            );
        }
    }
}
