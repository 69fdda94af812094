//! Certificates and keys made with the openssl command for the tests: self-signed pairs in the
//! formats writers produce (PKCS#8, PKCS#1, SEC1), and CA-signed ones with any validity period
//! (`openssl ca` takes explicit start and end dates, so expired certificates can be made).

use std::path::{Path, PathBuf};
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

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `cn` in `dir`: `cn.crt`, `cn.key`.
pub fn ca(dir: &Path, cn: &str) -> PathBuf {
    let (crt, key, subj) = (
        format!("{cn}.crt"),
        format!("{cn}.key"),
        format!("/CN={cn}"),
    );
    openssl(
        dir,
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
            &key,
            "-out",
            &crt,
        ],
    );
    dir.join(crt)
}

/// A (version 3) certificate for `cn` with the extension `ext`, signed by the CA `ca`, with
/// `serial`: (cert, key) PEM.
pub fn leaf(dir: &Path, ca: &str, cn: &str, ext: &str, serial: u32) -> (String, String) {
    let name = format!("{cn}-{serial}");
    let (csr, crt, key) = (
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.key"),
    );
    let subj = format!("/CN={cn}");
    let mut req = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &subj,
        "-keyout",
        &key,
        "-out",
        &csr,
    ];
    req.extend(["-addext", ext]);
    openssl(dir, &req);
    let (ca_crt, ca_key, serial) = (format!("{ca}.crt"), format!("{ca}.key"), serial.to_string());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-copy_extensions",
            "copyall",
            "-out",
            &crt,
        ],
    );
    (
        std::fs::read_to_string(dir.join(crt)).unwrap(),
        std::fs::read_to_string(dir.join(key)).unwrap(),
    )
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
    openssl(dir, &args);
    match kind {
        KeyKind::EcSec1 => openssl(dir, &["ec", "-in", &key, "-out", &key]),
        KeyKind::RsaPkcs1 => openssl(dir, &["rsa", "-traditional", "-in", &key, "-out", &key]),
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
    openssl(&ca, &a);
    let subj = format!("/CN={cn}");
    let mut a = vec!["req", "-new"];
    a.extend(ec);
    a.extend(["-subj", &subj, "-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(&ca, &a);
    openssl(
        &ca,
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
    );
    (
        std::fs::read_to_string(ca.join("leaf.crt")).unwrap(),
        std::fs::read_to_string(ca.join("leaf.key")).unwrap(),
    )
}

/// The subject of the certificate served on 127.0.0.1:`port`, as `openssl s_client` sees it.
pub fn served_subject(port: u16) -> String {
    subject_seen(port, &["-servername", "localhost"])
}

/// The subject of the certificate PostgreSQL serves on 127.0.0.1:`port`, as `openssl s_client
/// -starttls postgres` sees it.
pub fn served_subject_postgres(port: u16) -> String {
    subject_seen(port, &["-starttls", "postgres"])
}

fn subject_seen(port: u16, extra: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(extra)
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

/// The serial of a PEM certificate, as openssl prints it (`openssl x509 -serial`).
pub fn serial(dir: &Path, pem: &str) -> String {
    let f = dir.join(format!("serial-{}.pem", super::unique()));
    std::fs::write(&f, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&f)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}
