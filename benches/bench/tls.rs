//! What TLS costs and what the served-certificate check takes:
//!
//! - kubelet swap → reload call over HTTPS against the same over plain HTTP, one daemon each,
//!   rotations alternating, both endpoints this process's own (Rust, rustls for HTTPS), each
//!   stamped when this process's thread reads the first byte of the request (after decryption for
//!   HTTPS; the endpoint's wakeup in both);
//! - with nginx installed: kubelet swap → the daemon has confirmed that nginx serves the new
//!   certificate (`--verify-served-cert`; SIGHUP, nginx's new workers, the daemon's look), read
//!   from `served_certificate.checked_at` in /status.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::daemon::{Daemon, get_text};
use crate::probe::HttpProbe;
use crate::util::{Stats, rotate, row, stats, volume};
use crate::{Figures, Opts};

const DEADLINE: Duration = Duration::from_secs(3);
const PAUSE: Duration = Duration::from_millis(20);

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`: ca.crt, srv.crt, srv.key.
pub(crate) fn certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-days",
        "30",
        "-subj",
        "/CN=bench-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(dir, &a)?;
    let mut a = vec!["req", "-new"];
    a.extend(ec);
    a.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    a.extend(["-keyout", "srv.key", "-out", "srv.csr"]);
    openssl(dir, &a)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "30",
            "-copy_extensions",
            "copyall",
            "-out",
            "srv.crt",
        ],
    )
}

pub fn run(out: &mut String, o: &Opts, f: &mut Figures) {
    let _ = writeln!(out, "## TLS\n");
    let dir = tempfile::Builder::new()
        .prefix("sr-bench-tls-")
        .tempdir()
        .unwrap();
    certificates(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    let plain = HttpProbe::start();
    let secure = HttpProbe::start_tls(&read("srv.crt"), &read("srv.key"));
    let common = ["--min-reload-interval", "0", "--reload-on-start", "never"];
    let (d1, w_plain) = volume("tls-plain");
    let (d2, w_tls) = volume("tls-https");
    let (plain_url, tls_url) = (plain.url_for("/plain"), secure.url_for("/tls"));
    let vol_plain = w_plain.dir().to_str().unwrap().to_string();
    let vol_tls = w_tls.dir().to_str().unwrap().to_string();
    let mut a = vec!["--watch", vol_plain.as_str(), "--reload-url", &plain_url];
    a.extend(common);
    let ours_plain = Daemon::start(&o.bin, &a);
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();
    let mut a = vec!["--watch", vol_tls.as_str(), "--reload-url", &tls_url];
    a.extend(["--tls-ca-file", ca]);
    a.extend(common);
    let ours_tls = Daemon::start(&o.bin, &a);

    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut reused = [0usize; 2];
    let mut missed = [0usize; 2];
    for i in 0..3 + o.iterations {
        for (k, (probe, path, w)) in [(&plain, "/plain", &w_plain), (&secure, "/tls", &w_tls)]
            .into_iter()
            .enumerate()
        {
            probe.drain_path(path);
            let swapped = rotate(w, i);
            match probe.next_on(path, DEADLINE) {
                Some(h) if i >= 3 => {
                    samples[k].push(h.read_at.saturating_duration_since(swapped));
                    reused[k] += usize::from(h.reused);
                }
                Some(_) => {}
                None => missed[k] += 1,
            }
            std::thread::sleep(PAUSE);
        }
    }
    drop((ours_plain, ours_tls, d1, d2));
    let _ = writeln!(
        out,
        "{} iterations; each rotates both daemons' volumes in turn (plain HTTP, then HTTPS), waits \
         for the call and pauses {} ms. Both endpoints are this process's (Rust; rustls for \
         HTTPS), stamped when the endpoint's thread reads the first byte of the request, after \
         decryption for HTTPS (its own wakeup in both).\n",
        o.iterations,
        PAUSE.as_millis()
    );
    let _ = writeln!(
        out,
        "| path | median | p99 | max | n |\n|---|---|---|---|---|"
    );
    let (sp, st) = (stats(samples[0].clone()), stats(samples[1].clone()));
    row(out, "kubelet swap → HTTP call: secret-reloader", &sp);
    row(
        out,
        "kubelet swap → HTTPS call: secret-reloader (--tls-ca-file)",
        &st,
    );
    let _ = writeln!(
        out,
        "\nRatio of medians: HTTPS/HTTP {:.2}× ({:+.3} ms). Kept-alive connections: HTTP {} of {}, \
         HTTPS {} of {}.{}\n",
        st.median / sp.median,
        st.median - sp.median,
        reused[0],
        sp.n,
        reused[1],
        st.n,
        if missed.iter().sum::<usize>() > 0 {
            format!(
                " Rotations without a call: HTTP {}, HTTPS {}.",
                missed[0], missed[1]
            )
        } else {
            String::new()
        }
    );
    f.tls = Some((sp, st));
    f.served = served_nginx(out, o);
}

/// nginx serving TLS from a kubelet-style volume, the daemon reloading it with SIGHUP and
/// confirming the served certificate; swap → confirmed.
fn served_nginx(out: &mut String, o: &Opts) -> Option<Stats> {
    let nginx = "/usr/sbin/nginx";
    if !Path::new(nginx).exists() {
        let _ = writeln!(
            out,
            "nginx served-certificate confirmation: not measured (no {nginx})\n"
        );
        return None;
    }
    let rounds = if o.quick { 5 } else { 30 };
    let dir = tempfile::Builder::new()
        .prefix("sr-bench-served-")
        .tempdir()
        .unwrap();
    let p = dir.path();
    let pairs: Vec<(String, String)> = (0..=rounds)
        .map(|i| {
            let (c, k) = (format!("c{i}.pem"), format!("k{i}.pem"));
            let subj = format!("/CN=v{i}");
            openssl(
                p,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "30",
                    "-subj",
                    &subj,
                    "-keyout",
                    &k,
                    "-out",
                    &c,
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            (
                std::fs::read_to_string(p.join(c)).unwrap(),
                std::fs::read_to_string(p.join(k)).unwrap(),
            )
        })
        .collect();
    let vol = p.join("tls");
    let w = secret_reloader::demo::atomic_writer::AtomicWriter::new(&vol);
    w.write(&[("tls.crt", &pairs[0].0), ("tls.key", &pairs[0].1)])
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(p.join("tmp")).unwrap();
    let (d, v) = (p.display(), vol.display());
    std::fs::write(
        p.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log notice;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
             fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {v}/tls.crt;\n\
             ssl_certificate_key {v}/tls.key;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    // nginx and the daemon in their own PID namespace, as in a pod.
    let script = format!("{nginx} -e {d}/error.log -c {d}/nginx.conf & exec \"$0\" \"$@\"");
    let served = format!("127.0.0.1:{port}");
    let vol_s = vol.to_str().unwrap();
    let args = [
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "sh",
        "-c",
        &script,
        &o.bin,
        "--watch",
        vol_s,
        "--process-name",
        "nginx",
        "--verify-served-cert",
        &served,
        "--min-reload-interval",
        "0",
    ];
    let daemon = Daemon::start("unshare", &args);
    // When the last look found the certificate on disk served (and the target not stale).
    let confirmed = || -> Option<SystemTime> {
        let text = get_text(daemon.addr, "/status")?;
        let body = text.split_once("\r\n\r\n")?.1;
        let s: serde_json::Value = serde_json::from_str(body).ok()?;
        let t = &s["targets"][0];
        let sc = &t["served_certificate"];
        let ok = sc["matches_disk"] == true && t["stale"] == false;
        ok.then(|| humantime::parse_rfc3339(sc["checked_at"].as_str()?).ok())
            .flatten()
    };
    // Wait for the first look (at start).
    let deadline = Instant::now() + Duration::from_secs(10);
    while confirmed().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut samples = Vec::new();
    let mut missed = 0;
    for (c, k) in pairs.iter().skip(1) {
        let swap_wall = SystemTime::now();
        w.write(&[("tls.crt", c), ("tls.key", k)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = None;
        while Instant::now() < deadline {
            if let Some(t) = confirmed()
                && t > swap_wall
            {
                got = Some(t);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match got.and_then(|t| t.duration_since(swap_wall).ok()) {
            Some(d) => samples.push(d),
            None => {
                missed += 1;
                if missed == 1 {
                    eprintln!(
                        "  served: not confirmed within 10 s; log:\n{}",
                        daemon.log_text()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(daemon);
    let s = stats(samples);
    let _ = writeln!(
        out,
        "{rounds} rotations of nginx's certificate (kubelet swap; SIGHUP to the master; the daemon \
         looks at once, then after 50, 100, 200 ms ...), each timed from the swap to the \
         `checked_at` of the look that found the new certificate served (millisecond precision).\n"
    );
    let _ = writeln!(
        out,
        "| path | median | p99 | max | n |\n|---|---|---|---|---|"
    );
    row(
        out,
        "kubelet swap → nginx serves the new certificate, confirmed (--verify-served-cert)",
        &s,
    );
    if missed > 0 {
        let _ = writeln!(out, "\nRotations not confirmed within 10 s: {missed}.");
    }
    let _ = writeln!(out);
    Some(s)
}
