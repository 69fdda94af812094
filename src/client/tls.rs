//! TLS of the daemon's own HTTPS calls (reload and verify): rustls with the ring provider, which
//! builds into the static musl binary.
//!
//! The CA bundle, the client certificate and its key are read when a connection is made, and a
//! kept connection is used again only while those files are unchanged (same inode, size and
//! times): they rotate too, and the sidecar's own client certificate may live in a watched
//! volume. A refused certificate is explained: the issuer the CA file lacks, or the names the
//! certificate carries when they do not include the one asked for.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use der::Decode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::config::TlsClient;
use crate::{files, text};

/// Largest CA bundle, certificate chain or key file read.
const PEM_LIMIT: u64 = 1024 * 1024;

/// What a file is, without reading it (symbolic links followed): device, inode, size,
/// modification and change times. A file replaced, rewritten or swapped in through a kubelet
/// `..data` link has another one.
pub type FileIdentity = Option<(u64, u64, u64, i64, i64, i64, i64)>;

/// What the TLS files were when read: a kept connection is used again only while it is the same.
pub type Identity = Vec<FileIdentity>;

/// The identity of the file at `path` now (`None`: it cannot be looked at).
pub(crate) fn file_identity(path: &Path) -> FileIdentity {
    std::fs::metadata(path).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

/// The files' identity now (no content read).
pub(crate) fn identity(tls: &TlsClient) -> Identity {
    [&tls.ca_file, &tls.client_cert_file, &tls.client_key_file]
        .into_iter()
        .flatten()
        .map(|p| file_identity(p))
        .collect()
}

/// Where the verifier leaves its explanation of a refused certificate.
type Slot = Arc<Mutex<Option<String>>>;

/// A TLS session over `tcp` to `host` (or `--tls-server-name`), with the files read now.
pub(crate) async fn connect(
    tls: &TlsClient,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let slot: Slot = Arc::default();
    let config = client_config(tls, &slot)?;
    let name = tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
        format!(
            "'{}' is not a name a certificate can carry (--tls-server-name)",
            text::value(name)
        )
    })?;
    TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            let explained = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            format!(
                "TLS handshake failed: {}",
                explained.unwrap_or(e.to_string())
            )
        })
}

/// The PEM file `path`, given as `flag`, read within the size limit (wiped when dropped).
pub(crate) fn read_pem(path: &Path, flag: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    files::read_limited(path, PEM_LIMIT)
        .map_err(|e| format!("cannot read {flag} {}: {e}", text::path(path)))
}

/// The certificates (PEM) of `path`, given as `flag`: at least one.
pub(crate) fn certificates(
    path: &Path,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = text::path(path);
    let certs = CertificateDer::pem_slice_iter(&read_pem(path, flag)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {shown} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {shown} holds no certificate (PEM 'BEGIN CERTIFICATE')"
        ));
    }
    Ok(certs)
}

fn client_config(tls: &TlsClient, slot: &Slot) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(NoVerification(provider.clone(), None))
    } else {
        let ca = tls.ca_file.as_ref().ok_or(
            "an https:// URL needs --tls-ca-file (the image has no system CA roots) or \
             --tls-insecure-skip-verify",
        )?;
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca, "--tls-ca-file")? {
            roots.add(cert).map_err(|e| {
                format!(
                    "--tls-ca-file {} holds an unusable certificate: {e}",
                    text::path(ca)
                )
            })?;
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("--tls-ca-file {}: {e}", text::path(ca)))?;
        Arc::new(Explaining {
            inner,
            ca_file: ca.clone(),
            slot: slot.clone(),
        })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = certificates(cert, "--tls-client-cert-file")?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&read_pem(key, "--tls-client-key-file")?).map_err(|_| {
            format!(
                "--tls-client-key-file {} holds no private key (PEM PKCS#8, PKCS#1 or SEC1)",
                text::path(key)
            )
        })?;
    builder.with_client_auth_cert(chain, key_der).map_err(|e| {
        format!(
            "--tls-client-cert-file {} with --tls-client-key-file {}: {e} (the key must be the \
             certificate's)",
            text::path(cert),
            text::path(key)
        )
    })
}

/// The certificate's facts that explain a refusal.
struct Facts {
    subject: String,
    issuer: String,
    names: Vec<String>,
}

fn facts(cert: &CertificateDer<'_>) -> Option<Facts> {
    let cert = Certificate::from_der(cert.as_ref()).ok()?;
    let tbs = cert.tbs_certificate();
    let mut names = Vec::new();
    if let Ok(Some((_, SubjectAltName(alt)))) = tbs.get_extension::<SubjectAltName>() {
        for n in alt {
            match n {
                GeneralName::DnsName(d) => names.push(d.to_string()),
                GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                    4 => {
                        let b: [u8; 4] = ip.as_bytes().try_into().ok()?;
                        names.push(std::net::Ipv4Addr::from(b).to_string());
                    }
                    16 => {
                        let b: [u8; 16] = ip.as_bytes().try_into().ok()?;
                        names.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(Facts {
        subject: text::value(&tbs.subject().to_string()),
        issuer: text::value(&tbs.issuer().to_string()),
        names: names.iter().map(|n| text::value(n)).collect(),
    })
}

/// Why the endpoint's certificate `cert` was refused, and what to do.
fn explain(e: &Error, cert: &CertificateDer<'_>, ca: &Path, asked: &ServerName<'_>) -> String {
    let Some(f) = facts(cert) else {
        return format!("the endpoint's certificate is refused: {e}");
    };
    let asked = text::value(&asked.to_str());
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the endpoint's certificate ({}) is issued by '{}', which --tls-ca-file {} does not \
             hold: point --tls-ca-file at the CA that issued it",
            f.subject,
            f.issuer,
            text::path(ca)
        ),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            let names = if f.names.is_empty() {
                "no DNS or IP name (subjectAltName)".to_string()
            } else {
                f.names.join(", ")
            };
            format!(
                "the endpoint's certificate ({}) names {names}, not '{asked}': set \
                 --tls-server-name to one of them, or give the endpoint a certificate for '{asked}'",
                f.subject
            )
        }
        other => format!(
            "the endpoint's certificate ({}, issued by '{}') is refused: {other}",
            f.subject, f.issuer
        ),
    }
}

/// The WebPKI verifier, explaining what it refuses.
#[derive(Debug)]
struct Explaining {
    inner: Arc<WebPkiServerVerifier>,
    ca_file: PathBuf,
    slot: Slot,
}

impl ServerCertVerifier for Explaining {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                let why = explain(e, end_entity, &self.ca_file, server_name);
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client that accepts any certificate and leaves the end-entity one in `slot`: for reading
/// what an app serves (compared, not trusted).
pub(crate) fn capturing(slot: Arc<Mutex<Option<Vec<u8>>>>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(NoVerification(provider.clone(), Some(slot)));
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `--tls-insecure-skip-verify`: any certificate is accepted (the handshake's signatures are
/// still checked, so the session is with the holder of the certificate's key). With a slot, the
/// end-entity certificate is left there.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>, Option<Arc<Mutex<Option<Vec<u8>>>>>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(slot) = &self.1 {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
