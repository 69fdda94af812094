//! The TLS options of the daemon's own https:// calls (reload and verify): from the `--tls-*`
//! flags, or from a config file target's `tls` object.

use std::path::PathBuf;
use std::sync::Arc;

use super::findings::Findings;

/// TLS options of a target's HTTPS calls (reload and verify). The files are read again whenever
/// they change: they rotate too, and the sidecar's own client certificate may live in a watched
/// volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClient {
    /// CA bundle the endpoint's certificate must chain to (a scratch image has no system roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain for mTLS.
    pub client_cert_file: Option<std::path::PathBuf>,
    /// Its private key.
    pub client_key_file: Option<std::path::PathBuf>,
    /// Name the certificate must carry, when not the URL's host (an endpoint on 127.0.0.1 whose
    /// certificate names the service).
    pub server_name: Option<String>,
    /// No verification of the endpoint's certificate: an explicit choice, warned and shown.
    pub insecure_skip_verify: bool,
}

/// A config file target's TLS options for its https:// URLs (the `--tls-*` flags' fields).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

impl FileTls {
    /// The client these options describe (`at`: where they are, for messages).
    pub(crate) fn client(&self, at: &str, f: &mut Findings) -> Arc<TlsClient> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            f.error(format!(
                "{at}tls: client_cert_file and client_key_file go together (mTLS needs both)"
            ));
        }
        Arc::new(TlsClient {
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
            server_name: self.server_name.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        })
    }
}
