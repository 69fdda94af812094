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
use std::time::{Duration, Instant, SystemTime};

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
use crate::process::holders::{self, Holders};
use crate::process::{ProcFs, sockets};
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

/// Pause after a look that learned nothing; doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between looks.
const LONGEST_PAUSE: Duration = Duration::from_millis(1600);
/// Time for all the looks (one started before it may take its own limit).
const ALL_LOOKS: Duration = Duration::from_secs(10);
/// The least limit of a look once a worker has answered (a look that lands in a stopped
/// worker's queue never gets a handshake).
const SHORT_LIMIT: Duration = Duration::from_millis(300);
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
    mut seen: impl FnMut(&Served, &Workers),
) -> Result<String, String> {
    let start = Instant::now();
    let mut tally = super::served_workers::Tally::default();
    let mut pause = FIRST_PAUSE;
    let mut limit = sc.timeout;
    let mut slowest = Duration::ZERO;
    let mut last_error = String::new();
    let mut tries = 0;
    loop {
        // Several connections at once once there are workers to reach: a worker busy with one
        // handshake leaves the next connection to another (nginx without `reuseport` wakes its
        // workers unevenly: one by one, a worker met 1 connection in 32).
        let n = tally.at_once();
        tries += n;
        let timed = |_| async {
            let t0 = Instant::now();
            let look = look_open(sc, disk, key, limit).await;
            (t0.elapsed(), look)
        };
        let looks = all((0..n).map(timed).collect()).await;
        let mut learned = false;
        for (took, look) in looks {
            let open = match look {
                Ok(open) => open,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            slowest = slowest.max(took);
            let holders = survey(procfs, &open);
            // Closed only now: its server side had to be there to be found.
            let served = open.served.clone();
            drop(open);
            learned |= tally.record(&served, holders);
            if tally.confirmed() {
                // What a current worker serves: the look that completed the tally may have met
                // an old worker on its way out (it no longer holds the port), with the old
                // certificate.
                let current = tally.current_served().unwrap_or(&served).clone();
                seen(&current, &tally.workers());
                return Ok(super::served_workers::confirmed(sc, &current, &tally));
            }
            seen(&served, &tally.workers());
            if !served.matches {
                last_error = mismatch(sc, disk, &served);
            }
        }
        if !slowest.is_zero() {
            limit = sc.timeout.min(SHORT_LIMIT.max(slowest * 4));
        }
        let left = ALL_LOOKS.saturating_sub(start.elapsed());
        if tries >= tally.budget() || left.is_zero() {
            break;
        }
        // At once after a look that reached a new worker or found the disk's certificate (the
        // app has reloaded: more workers are to be reached); a growing pause while it has not.
        if !learned && !tally.last_matched {
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        } else if learned {
            pause = FIRST_PAUSE;
        }
    }
    Err(super::served_workers::failure(
        sc,
        disk,
        &tally,
        tries,
        &last_error,
    ))
}

/// The outputs of `futures`, run together on this task.
async fn all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Who holds the endpoint's listening sockets and who accepted `open`, or why that cannot be
/// told.
fn survey(procfs: &ProcFs, open: &Open) -> Result<Holders, String> {
    let found = sockets::find(procfs, open.server, Some(open.local))
        .map_err(|e| format!("cannot read the sockets of procfs (net/tcp): {e}"))?;
    if found.listening.is_empty() {
        return Err(format!(
            "no socket listens on {} in the daemon's network namespace (the app is in another, \
             or the port is forwarded)",
            open.server
        ));
    }
    let h =
        holders::holders(procfs, &found).map_err(|e| format!("cannot list the processes: {e}"))?;
    if !h.workers.is_empty() {
        return Ok(h);
    }
    let skipped = match h.skipped {
        0 => String::new(),
        n => format!(
            " ({n} processes past the first {} not looked at)",
            holders::PROCESSES
        ),
    };
    if h.unreadable.is_empty() {
        return Err(format!(
            "no process of the daemon's PID namespace holds the socket listening on {}{skipped} \
             (the app is in another)",
            open.server
        ));
    }
    let named: Vec<String> = h
        .unreadable
        .iter()
        .take(4)
        .map(|u| match u.uid {
            Some(uid) => format!("{} (uid {uid})", u.info.shown()),
            None => u.info.shown(),
        })
        .collect();
    let more = h.unreadable.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Err(format!(
        "cannot read the fds of {}{more}: the daemon runs as uid {}{skipped}",
        named.join(", "),
        nix::unistd::geteuid()
    ))
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
