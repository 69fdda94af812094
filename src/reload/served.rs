//! The certificate an app serves, compared with the one on disk (`--verify-served-cert`).
//!
//! A reload signal or call that returns success says nothing about the certificate the app now
//! presents: a worker may keep the old one, or the app may have failed to read the new key and
//! gone on with the old pair. So the daemon connects where the app serves TLS (from the first
//! byte, or after PostgreSQL's SSLRequest), reads the end-entity certificate of the handshake
//! (no trust is needed to compare), and checks that it is the first certificate of one of the
//! watched files. Only then does the reload count. One connection reaches one worker: after a
//! reload the looks go on until each worker was seen ([`super::served_workers`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use der::Decode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_cert::Certificate;

use super::served_workers::Workers;
use crate::client::tls;
use crate::config::ServedCert;
use crate::process::ProcFs;
use crate::scan::CertOnDisk;
use crate::scan::fingerprint::{Fingerprint, FingerprintKey};
use crate::scan::pem::serial_hex;

/// What [`fetch`] gives: the certificate, the daemon's end, the server's, the connection.
type Fetched = (
    Vec<u8>,
    SocketAddr,
    SocketAddr,
    Option<TlsStream<TcpStream>>,
);

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

/// What the app served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    /// Keyed fingerprint of the certificate (DER).
    pub fingerprint: Fingerprint,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Whether it is the first certificate of one of the version's files.
    pub matches: bool,
}

/// The end-entity certificate served at `sc`, compared with the version's certificates.
pub(crate) async fn look(
    sc: &ServedCert,
    disk: &[CertOnDisk],
    key: &FingerprintKey,
) -> Result<Served, String> {
    look_open(sc, disk, key, sc.timeout).await.map(|o| o.served)
}

/// A look whose connection is still open: its server side is in the accepting process's
/// descriptors only while it is (see [`super::served_workers`]).
pub(crate) struct Open {
    /// What was served.
    pub served: Served,
    /// The daemon's end of the connection.
    pub local: SocketAddr,
    /// The server's end.
    pub server: SocketAddr,
    /// The connection, closed when this is dropped (`None` when the handshake failed after the
    /// certificate: the server closes it).
    _conn: Option<TlsStream<TcpStream>>,
}

/// As [`look`], within `limit`, the connection kept open.
pub(crate) async fn look_open(
    sc: &ServedCert,
    disk: &[CertOnDisk],
    key: &FingerprintKey,
    limit: Duration,
) -> Result<Open, String> {
    let (der, local, server, conn) =
        tokio::time::timeout(limit, fetch(sc)).await.map_err(|_| {
            format!(
                "{}: no TLS handshake within {} (the time limit)",
                sc.label(),
                humantime::format_duration(limit)
            )
        })??;
    let cert = Certificate::from_der(&der).map_err(|e| {
        format!(
            "{} serves a certificate that does not parse: {e}",
            sc.label()
        )
    })?;
    let fingerprint = key.digest(&der);
    let served = Served {
        fingerprint,
        serial: serial_hex(&cert),
        not_after: cert.tbs_certificate().validity().not_after.to_system_time(),
        matches: disk.iter().any(|c| c.fingerprint == fingerprint),
    };
    Ok(Open {
        served,
        local,
        server,
        _conn: conn,
    })
}

/// After a reload: looks until every worker of the app serves a certificate of `disk` (or,
/// when the workers cannot be told apart, until one look does), or the looks are used up
/// ([`super::served_workers`]). `seen` is told each look's certificate and the workers so far.
pub(crate) async fn confirm(
    sc: &ServedCert,
    disk: &[CertOnDisk],
    key: &FingerprintKey,
    procfs: &ProcFs,
    seen: impl FnMut(&Served, &Workers),
) -> Result<String, String> {
    super::served_workers::confirm(sc, disk, key, procfs, seen).await
}

/// What differs, for messages.
pub(crate) fn mismatch(sc: &ServedCert, disk: &[CertOnDisk], s: &Served) -> String {
    let disk: Vec<String> = disk
        .iter()
        .map(|c| format!("{} serial {}", crate::text::path(&c.path), c.serial))
        .collect();
    let disk = if disk.is_empty() {
        "no certificate is in the watched files".to_string()
    } else {
        format!("on disk: {}", disk.join(", "))
    };
    format!(
        "{} serves the certificate with serial {} (fingerprint {}), not the one on disk ({disk}): \
         the reload did not take (a worker kept the old one, or the app cannot read the new files)",
        sc.label(),
        s.serial,
        s.fingerprint.short()
    )
}

/// The DER of the end-entity certificate of a TLS handshake with `sc`, the connection's two
/// ends, and the connection.
async fn fetch(sc: &ServedCert) -> Result<Fetched, String> {
    let label = sc.label();
    let addrs = crate::client::addresses(&sc.host, sc.port).await?;
    let mut tcp = TcpStream::connect(addrs.as_slice())
        .await
        .map_err(|e| format!("cannot connect to {label}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (local, server) = match (tcp.local_addr(), tcp.peer_addr()) {
        (Ok(l), Ok(p)) => (l, p),
        (Err(e), _) | (_, Err(e)) => return Err(format!("{label}: connection lost at once: {e}")),
    };
    if sc.postgres {
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(|e| format!("{label}: cannot send the SSLRequest: {e}"))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| format!("{label}: no answer to the SSLRequest: {e}"))?;
        match answer[0] {
            b'S' => {}
            b'N' => {
                return Err(format!(
                    "{label}: PostgreSQL does not offer TLS (ssl = off)"
                ));
            }
            _ => {
                return Err(format!(
                    "{label}: not a PostgreSQL server (SSLRequest answered oddly)"
                ));
            }
        }
    }
    let slot = Arc::new(Mutex::new(None));
    let config = tls::capturing(slot.clone())?;
    let name = ServerName::try_from(sc.host.clone()).map_err(|_| {
        format!(
            "'{}' is not a host name or address",
            crate::text::value(&sc.host)
        )
    })?;
    let handshake = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    // The certificate arrives before the handshake ends: a server that then asks for a client
    // certificate has shown it all the same.
    let der = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (der, handshake) {
        (Some(der), Ok(conn)) => Ok((der, local, server, Some(conn))),
        (Some(der), Err(_)) => Ok((der, local, server, None)),
        (None, Err(e)) => Err(format!("TLS handshake with {label} failed: {e}")),
        (None, Ok(_)) => Err(format!(
            "{label} completed a TLS handshake without a certificate"
        )),
    }
}
