//! `secret-reloader-inject webhook`: the mutating admission webhook. `POST /mutate` answers an
//! AdmissionReview (`admission.k8s.io/v1`) with a JSONPatch that is exactly what
//! `secret-reloader-inject` ([`crate::inject::pod`]) does to that pod.
//!
//! - `review`: one review in, one answer out (pure): what is allowed, patched, warned about;
//! - `patch`: the RFC 6902 patch from the pod received to the injected one;
//! - `cert`: the serving certificate, read again when its files change (no restart);
//! - `server`: the HTTPS and admin listeners, their routes and bounds; `conn`: one connection,
//!   its handshake, head and idle timers, its graceful end.
//!
//! The webhook has no side effect (it reads the review and answers), so a dry run is answered
//! like any other. It never keeps a pod out because of its own trouble: a review it cannot
//! handle is allowed with a warning, and the few answers that are not 200 (a body that is not
//! a review, too large, too slow) leave the decision to the webhook's `failurePolicy`, which is
//! to be `Ignore`. Nothing of a pod but its kind, namespace and name is logged.
//!
//! Exit codes: 0 after SIGTERM or SIGINT, 1 when it cannot start (the certificate or key cannot
//! be used, an address cannot be bound), 2 for invalid usage.

mod cert;
mod conn;
mod patch;
mod review;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::inject::InjectFlags;
use crate::report::metrics::WebhookMetrics;

/// Time in-flight reviews have to end after SIGTERM or SIGINT.
pub const SHUTDOWN_GRACE: std::time::Duration = server::SHUTDOWN_GRACE;

/// `secret-reloader-inject webhook`'s flags.
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

/// Runs the webhook until `shutdown` completes (SIGTERM or SIGINT): the exit code. Call with
/// logging set up and the signals taken.
pub fn run(args: WebhookArgs, shutdown: impl Future<Output = ()>) -> i32 {
    let usage = |flag: &str, e: String| {
        eprintln!("error: {flag}: {e}\nsee secret-reloader-inject webhook --help");
        2
    };
    let listen = match crate::config::parse::listen(&args.listen) {
        Ok(a) => a,
        Err(e) => return usage("--listen", e),
    };
    let admin = match args.admin_listen.trim() {
        "none" => None,
        raw => match crate::config::parse::listen(raw) {
            Ok(a) => Some(a),
            Err(e) => return usage("--admin-listen", e),
        },
    };
    let metrics = Arc::new(WebhookMetrics::default());
    let started = cert::Rotating::load(&args.tls_cert_file, &args.tls_key_file, metrics.clone())
        .and_then(|certs| acceptor(Arc::new(certs)));
    let acceptor = match started {
        Ok(a) => a,
        Err(e) => return fatal(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    let shared = Arc::new(server::Shared::new(args.inject, metrics));
    let result = runtime.block_on(serve(listen, admin, acceptor, shared, shutdown));
    // A connection task that outlived the grace period must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => 0,
        Err(e) => fatal(&e),
    }
}

fn fatal(e: &str) -> i32 {
    tracing::error!("{e}");
    eprintln!("error: {e}");
    1
}

/// TLS with the rotating certificate: TLS 1.2 and 1.3, HTTP/1.1 offered (the API server's client
/// would take HTTP/2 if offered).
fn acceptor(certs: Arc<cert::Rotating>) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds both listeners, serves until `shutdown`, then stops accepting and gives in-flight
/// reviews `server::SHUTDOWN_GRACE`.
async fn serve(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    acceptor: TlsAcceptor,
    shared: Arc<server::Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({flag}): {e}"))
    };
    let https = bind(listen, "--listen").await?;
    let admin = match admin {
        Some(a) => Some(bind(a, "--admin-listen").await?),
        None => None,
    };
    let (stop_tx, stop) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    if let Ok(addr) = https.local_addr() {
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "webhook listening (HTTPS): /mutate /healthz /readyz /metrics");
    }
    servers.spawn(server::serve(
        https,
        Some(acceptor),
        shared.clone(),
        stop.clone(),
    ));
    if let Some(admin) = admin {
        if let Ok(addr) = admin.local_addr() {
            tracing::info!(admin = %addr, "admin listening (HTTP): /healthz /readyz /metrics");
        }
        servers.spawn(server::serve(admin, None, shared, stop));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections; in-flight reviews are finished");
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    Ok(())
}
