//! Wiring: one scanner per watch group, one reconciler per target, the admin server, and an
//! orderly shutdown.
//!
//! The shutdown trigger is a parameter, so tests pass their own future; the binary passes
//! SIGTERM/SIGINT (see [`crate::shutdown`]). On shutdown the watches stop first, then actions in
//! flight get `shutdown_grace` to finish, then everything ends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::debounce::Debounce;
use crate::identity::IdentityResolver;
use crate::metrics::Metrics;
use crate::persist::Persist;
use crate::process::ProcFs;
use crate::reload::Actor;
use crate::reload::reconciler::Reconciler;
use crate::scanner::{FALLBACK_POLL_INTERVAL, GroupScanner};
use crate::state::State;
use crate::watch::{Router, Wake, WatchHub};

/// A fatal runtime error (exit code 1).
#[derive(Debug)]
pub enum Error {
    /// The admin address cannot be bound.
    Listen(SocketAddr, io::Error),
    /// A component that must run ended.
    Crashed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Listen(addr, e) => write!(
                f,
                "cannot listen on {addr}: {e} (another process may use the port; choose one with --listen)"
            ),
            Error::Crashed(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Binds `config.listen` and runs until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Listen(config.listen, e))?;
    serve(config, listener, shutdown).await
}

/// Runs with an already bound admin listener until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let group_names: Vec<String> = config.groups.iter().map(|g| g.name.clone()).collect();
    let targets: Vec<(String, String, &'static str)> = config
        .groups
        .iter()
        .flat_map(|g| {
            g.targets.iter().map(move |t| {
                let kind = match t.action {
                    crate::config::Action::Http(_) => "http",
                    crate::config::Action::Signal(_) => "signal",
                    crate::config::Action::Exec(_) => "exec",
                };
                (t.name.clone(), g.name.clone(), kind)
            })
        })
        .collect();
    let procfs = ProcFs::new(&config.proc_root);
    let sidecar = crate::identity::Sidecar::current(&procfs);
    let config = Arc::new(config);
    let state = Arc::new(State::new(config.clone(), &sidecar, &group_names, &targets));
    let verifying: Vec<(String, bool)> = config
        .groups
        .iter()
        .flat_map(|g| &g.targets)
        .map(|t| (t.name.clone(), t.verify.is_some()))
        .collect();
    let metrics = Arc::new(Metrics::new(&group_names, &verifying));

    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = listener.local_addr().ok();
    let mut server = tokio::spawn(crate::server::serve(
        listener,
        state.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    if let Some(addr) = addr {
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "listening: /metrics /status /healthz /readyz");
    }

    let wakes: Vec<Arc<Wake>> = config
        .groups
        .iter()
        .map(|g| {
            Arc::new(Wake {
                debounce: Mutex::new(Debounce::new(g.debounce, g.debounce_max)),
                notify: Default::default(),
            })
        })
        .collect();
    let router = Router::new(config.groups.iter().map(|g| g.paths.clone()).collect());
    let hub = Arc::new(WatchHub::new(
        router,
        wakes.clone(),
        metrics.clone(),
        config.poll_interval.is_some(),
    ));

    // With a state file, fingerprints must compare across restarts: the key is kept there unless
    // --fingerprint-key-file gives one.
    let persist = config
        .state_file
        .as_deref()
        .map(|p| Arc::new(Persist::load(p)));
    let key = match &persist {
        Some(p) if !config.fingerprint_key_shared => p.key_or(&config.fingerprint_key),
        _ => config.fingerprint_key.clone(),
    };
    let mut scanners = JoinSet::new();
    let mut reconcilers = JoinSet::new();
    let mut readies = Vec::new();
    let mut target_index = 0;
    for (index, group) in config.groups.iter().enumerate() {
        let (tx, rx) = watch::channel(None);
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let scanner = GroupScanner {
            index,
            group: group.clone(),
            key: key.clone(),
            wake: wakes[index].clone(),
            hub: hub.clone(),
            tx,
            state: state.clone(),
            metrics: metrics.clone(),
            resync: config.resync_interval,
            poll_interval: config.poll_interval.unwrap_or(FALLBACK_POLL_INTERVAL),
            forced_poll: config.poll_interval.is_some(),
            ready: Some(ready_tx),
            identity: IdentityResolver::new(
                group.app.clone(),
                group.targets.iter().find_map(|t| match &t.action {
                    crate::config::Action::Signal(s) => Some(s.selector.clone()),
                    _ => None,
                }),
                procfs.clone(),
            ),
        };
        scanners.spawn(scanner.run(stop_rx.clone()));
        for target in &group.targets {
            let reconciler = Reconciler {
                index: target_index,
                group: group.name.clone(),
                cfg: target.clone(),
                actor: Actor::new(&target.action, &procfs, &group.name),
                rx: rx.clone(),
                state: state.clone(),
                metrics: metrics.clone(),
                persist: persist.clone(),
            };
            target_index += 1;
            reconcilers.spawn(reconciler.run(stop_rx.clone()));
        }
    }
    let mounts = tokio::spawn(crate::mounts::watch_mount_table(
        config.proc_root.join("self/mountinfo"),
        wakes.clone(),
        stop_rx.clone(),
    ));
    let ready_state = state.clone();
    let readiness = tokio::spawn(async move {
        for r in readies {
            if r.await.is_err() {
                return;
            }
        }
        ready_state.set_ready();
        tracing::info!("ready: every watch group scanned and watched");
    });

    tokio::pin!(shutdown);
    let crashed = tokio::select! {
        _ = &mut shutdown => None,
        Some(r) = scanners.join_next() => Some(format!("a watch group scanner ended: {r:?}")),
        r = &mut server => Some(format!("the admin server ended: {r:?}")),
    };
    if let Some(what) = &crashed {
        tracing::error!("{what}; shutting down");
    } else {
        tracing::info!("shutting down");
    }
    let _ = stop_tx.send(true);
    drop(hub);
    readiness.abort();
    mounts.abort();
    let grace = config.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while reconcilers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(grace = ?grace, "an action was still running after the shutdown grace period: abandoned");
        reconcilers.abort_all();
    }
    scanners.abort_all();
    server.abort();
    match crashed {
        Some(what) => Err(Error::Crashed(what)),
        None => Ok(()),
    }
}
