//! Certificates and keys made with the openssl command for the tests: self-signed pairs in the
//! formats writers produce (PKCS#8, PKCS#1, SEC1), and CA-signed ones with any validity period
//! (`openssl ca` takes explicit start and end dates, so expired certificates can be made).

use std::path::Path;
use std::process::Command;

/// Key algorithm and file format of a generated pair.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// P-256 key in PKCS#8 (`BEGIN PRIVATE KEY`).
    EcPkcs8,
    /// P-256 key in SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
    /// RSA 2048 key in PKCS#8.
    RsaPkcs8,
    /// RSA 2048 key in PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `cn`, valid for `days`, and its key as `kind`: (cert, key) PEM.
pub fn pair(dir: &Path, cn: &str, kind: KeyKind) -> (String, String) {
    let (crt, key) = (format!("{cn}.crt"), format!("{cn}.key"));
    let newkey: &[&str] = match kind {
        KeyKind::EcPkcs8 | KeyKind::EcSec1 => {
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        }
        KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => &["-newkey", "rsa:2048"],
    };
    let subj = format!("/CN={cn}");
    let mut args = vec!["req", "-x509"];
    args.extend(newkey);
    args.extend([
        "-nodes", "-days", "30", "-subj", &subj, "-keyout", &key, "-out", &crt,
    ]);
    openssl(&args, dir);
    match kind {
        KeyKind::EcSec1 => openssl(&["ec", "-in", &key, "-out", &key], dir),
        KeyKind::RsaPkcs1 => openssl(&["rsa", "-traditional", "-in", &key, "-out", &key], dir),
        _ => {}
    }
    (
        std::fs::read_to_string(dir.join(crt)).unwrap(),
        std::fs::read_to_string(dir.join(key)).unwrap(),
    )
}

/// An EC pair whose certificate, signed by a throwaway CA, is valid from `start` to `end`
/// (`YYYYMMDDHHMMSSZ`).
pub fn dated(dir: &Path, cn: &str, start: &str, end: &str) -> (String, String) {
    let ca = dir.join(format!("ca-{cn}"));
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(ca.join("serial"), "01\n").unwrap();
    std::fs::write(
        ca.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndir = .\ndatabase = ./index.txt\nnew_certs_dir = .\nserial = ./serial\n\
         default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
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
        "3650",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&a, &ca);
    let subj = format!("/CN={cn}");
    let mut a = vec!["req", "-new"];
    a.extend(ec);
    a.extend(["-subj", &subj, "-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(&a, &ca);
    openssl(
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.crt",
            "-keyfile",
            "ca.key",
            "-startdate",
            start,
            "-enddate",
            end,
            "-in",
            "leaf.csr",
            "-out",
            "leaf.crt",
        ],
        &ca,
    );
    (
        std::fs::read_to_string(ca.join("leaf.crt")).unwrap(),
        std::fs::read_to_string(ca.join("leaf.key")).unwrap(),
    )
}

/// The subject of the certificate served on 127.0.0.1:`port`, as `openssl s_client` sees it.
pub fn served_subject(port: u16) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or("")
            .replace(' ', ""),
        Err(_) => String::new(),
    }
}
