//! The serving certificate, rotated by the files themselves: no restart, no watch.
//!
//! The certificate and key usually live in a Secret volume, which kubelet updates by swapping
//! its `..data` link. At each TLS handshake [`Rotating`] (rustls's certificate resolver) looks
//! at both paths (`stat`, symbolic links followed: device, inode, size, modification and change
//! times, `client::tls::file_identity`) and reads them again when either changed. A new pair that
//! does not parse, or whose key is not the certificate's, is refused: the previous pair is still
//! served, a WARN says why, `webhook_certificate_reloads_total{result="failure"}` counts it, and
//! it is not read again until the files change again (a writer that replaces the certificate and
//! then the key passes through one such refusal). Two `stat`s per handshake are the whole cost
//! while nothing changes; the files are on a memory filesystem (a Secret volume), where neither
//! can stall.
//!
//! At start the pair must load ([`Rotating::load`] fails otherwise: the process exits 1).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use der::Decode;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{Error, InconsistentKeys};
use x509_cert::Certificate;

use crate::client::tls::{FileIdentity, certificates, file_identity, read_pem};
use crate::report::metrics::{ReloadResult, WebhookMetrics};
use crate::{lock, text};

/// The certificate served, read again when its files change.
#[derive(Debug)]
pub(crate) struct Rotating {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The pair served, and what the files were when last looked at (loaded or not).
    current: Mutex<Current>,
    metrics: Arc<WebhookMetrics>,
}

#[derive(Debug)]
struct Current {
    pair: Arc<CertifiedKey>,
    seen: (FileIdentity, FileIdentity),
}

/// A pair that loaded, and what its log line says of it.
struct Loaded {
    pair: Arc<CertifiedKey>,
    serial: String,
    /// `notAfter`, Unix seconds.
    not_after: u64,
}

impl Rotating {
    /// The pair in `cert_file` and `key_file`, loaded now: why not, naming the file and the flag.
    pub(crate) fn load(
        cert_file: &Path,
        key_file: &Path,
        metrics: Arc<WebhookMetrics>,
    ) -> Result<Rotating, String> {
        let seen = (file_identity(cert_file), file_identity(key_file));
        let loaded = pair(cert_file, key_file)?;
        tracing::info!(
            cert = %text::path(cert_file),
            serial = %loaded.serial,
            not_after = loaded.not_after,
            "serving certificate loaded"
        );
        metrics.serving(loaded.not_after as f64);
        Ok(Rotating {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: Mutex::new(Current {
                pair: loaded.pair,
                seen,
            }),
            metrics,
        })
    }

    /// The pair to serve now: the files read again first when they changed.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        let now = (
            file_identity(&self.cert_file),
            file_identity(&self.key_file),
        );
        let mut current = lock(&self.current);
        if current.seen == now {
            return current.pair.clone();
        }
        current.seen = now;
        match pair(&self.cert_file, &self.key_file) {
            Ok(loaded) => {
                tracing::info!(
                    cert = %text::path(&self.cert_file),
                    serial = %loaded.serial,
                    not_after = loaded.not_after,
                    "serving certificate reloaded"
                );
                self.metrics.reload(ReloadResult::Success);
                self.metrics.serving(loaded.not_after as f64);
                current.pair = loaded.pair;
            }
            Err(why) => {
                tracing::warn!(
                    error = %why,
                    "the serving certificate or key changed and cannot be used: the previous pair is still served"
                );
                self.metrics.reload(ReloadResult::Failure);
            }
        }
        current.pair.clone()
    }
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The pair in `cert_file` and `key_file`, checked: the chain parses, the key parses and is the
/// first certificate's.
fn pair(cert_file: &Path, key_file: &Path) -> Result<Loaded, String> {
    let chain = certificates(cert_file, "--tls-cert-file")?;
    let (cert, key) = (text::path(cert_file), text::path(key_file));
    let der =
        PrivateKeyDer::from_pem_slice(&read_pem(key_file, "--tls-key-file")?).map_err(|_| {
            format!("--tls-key-file {key} holds no private key (PEM PKCS#8, PKCS#1 or SEC1)")
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("--tls-key-file {key}: {e}"))?;
    let leaf = Certificate::from_der(chain[0].as_ref()).map_err(|e| {
        format!("--tls-cert-file {cert}: its first certificate does not parse: {e}")
    })?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        // A key that does not tell its public part cannot be compared (not an error).
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(format!(
                "--tls-key-file {key} is not the key of --tls-cert-file {cert}'s first \
                 certificate ({e})"
            ));
        }
    }
    let not_after = leaf
        .tbs_certificate()
        .validity()
        .not_after
        .to_system_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Loaded {
        pair: Arc::new(pair),
        serial: crate::scan::pem::serial_hex(&leaf),
        not_after,
    })
}
