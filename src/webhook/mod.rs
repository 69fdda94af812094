//! `secret-reloader webhook`: the mutating admission webhook. `POST /mutate` answers an
//! AdmissionReview (`admission.k8s.io/v1`) with a JSONPatch that is exactly what
//! `secret-reloader inject` ([`crate::inject::pod`]) does to that pod.

use std::path::PathBuf;

use crate::inject::InjectFlags;

/// `secret-reloader webhook`'s flags.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS listener (`/mutate`, and `/healthz`, `/readyz`, `/metrics`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    pub listen: String,

    /// Address of a plain HTTP listener for `/healthz`, `/readyz` and `/metrics` (probes and
    /// Prometheus); `none` for none.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9534")]
    pub admin_listen: String,

    /// The serving certificate chain (PEM), read again when it changes.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: PathBuf,

    /// The serving key (PEM), read again when it changes.
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: PathBuf,

    /// What gets injected.
    #[command(flatten)]
    pub inject: InjectFlags,
}

/// Runs the webhook until SIGTERM: the exit code.
pub fn run(args: WebhookArgs) -> i32 {
    let _ = args;
    eprintln!("secret-reloader webhook: not built yet");
    1
}
