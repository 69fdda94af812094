//! The library entry point: `serve(config, listener, shutdown)` in the test's own runtime, with a
//! shutdown future of the test's choosing, against a real exec target and a real HTTP endpoint.

use secret_reloader::Config;

use crate::support::sink::Sink;
use crate::support::{AtomicWriter, credential, eventually, http_get, tempdir};

#[test]
fn serve_reloads_and_returns_when_the_shutdown_future_completes() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let marker = dir.path().join("exec-ran");
    let exec = format!(
        "sh -c 'echo \"$SECRET_RELOADER_WATCH $SECRET_RELOADER_FINGERPRINT\" >> {}'",
        marker.display()
    );
    let config = Config::from_argv([
        "secret-reloader",
        "--watch",
        vol.to_str().unwrap(),
        "--reload-url",
        &sink.url("/-/reload"),
        "--exec",
        &exec,
        "--min-reload-interval",
        "0",
    ])
    .expect("valid configuration");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            secret_reloader::serve(config, listener, async {
                let _ = stop_rx.await;
            })
            .await
        })
    });
    eventually(
        "ready",
        || http_get(addr, "/readyz").map(|r| r.0).unwrap_or(0),
        |c| *c == 200,
    );

    writer.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually("the HTTP call", || sink.calls(), |c| c.len() == 1);
    assert_eq!(calls[0].version.as_deref(), Some("2"));
    let ran = eventually(
        "the command",
        || std::fs::read_to_string(&marker).unwrap_or_default(),
        |t| !t.is_empty(),
    );
    let (group, fp) = ran.trim().split_once(' ').expect("two words");
    assert_eq!(group, "default");
    assert_eq!(fp.len(), 16, "the keyed fingerprint, shortened: {fp}");

    stop_tx.send(()).unwrap();
    eventually(
        "serve to return after shutdown",
        || daemon.is_finished(),
        |finished| *finished,
    );
    daemon.join().unwrap().expect("clean shutdown");
    assert!(
        http_get(addr, "/healthz").is_err(),
        "the admin server stopped"
    );
}

#[test]
fn failing_command_is_retried_and_reported() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", credential("1"))]).unwrap();
    let flag = dir.path().join("succeed-now");
    let cmd = format!("sh -c 'test -e {}'", flag.display());
    let d = crate::support::Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--exec",
        &cmd,
        "--min-reload-interval",
        "0",
        "--retry-backoff-max",
        "200ms",
    ]);
    d.wait_ready();
    writer.write(&[("token", credential("2"))]).unwrap();
    let status = eventually(
        "a failure",
        || d.status(),
        |s| s["targets"][0]["state"] == "retrying",
    );
    assert!(
        status["targets"][0]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 1"),
        "{status}"
    );
    std::fs::write(&flag, "").unwrap();
    eventually(
        "the retry to succeed",
        || d.metric("stale", &[]),
        |v| *v == Some(0.0),
    );
    let exec_hang = crate::support::Daemon::start(&[
        "--watch",
        vol.to_str().unwrap(),
        "--exec",
        "sleep 3",
        "--reload-timeout",
        "200ms",
        "--reload-on-start",
        "always",
    ]);
    let status = eventually(
        "the time limit",
        || exec_hang.status(),
        |s| !s["targets"][0]["last_error"].is_null(),
    );
    assert!(
        status["targets"][0]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within")
    );
    let mut exec_hang = exec_hang;
    assert!(exec_hang.terminate().success());
}
