//! Wiring: the event reader, one task per watch group, one reconciler per target, the admin
//! server on its own thread, and an orderly shutdown.
//!
//! The shutdown trigger is a parameter, so tests pass their own future; the binary passes
//! SIGTERM/SIGINT (see [`signals`]). On shutdown the watches stop first, then actions in flight
//! get `shutdown_grace` to finish, then everything ends.
//!
//! - [`signals`]: SIGTERM/SIGINT (the shutdown, its watchdog), SIGHUP (rescan), every other
//!   signal logged and ignored;
//! - `tasks`: named, watched tasks;
//!
//! Nothing imports the daemon: the tasks hold the stop flag (`crate::stop`), the reconcilers
//! the state file (`crate::reload::state_file`).

pub mod signals;
pub(crate) mod tasks;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::action::Action;
use crate::config::Config;
use crate::group::{FALLBACK_POLL_INTERVAL, GroupTask, Timing};
use crate::process::ProcFs;
use crate::process::identity::{IdentityResolver, Sidecar};
use crate::reload::reconciler::Reconciler;
use crate::reload::state_file::StateFile;
use crate::report::metrics::Metrics;
use crate::report::server::{self, Admin, Liveness};
use crate::report::status::Board;
use crate::watch::Wake;
use crate::watch::inotify::WatchHub;
use tasks::Tasks;

/// A fatal runtime error (exit code 1).
#[derive(Debug)]
pub enum Error {
    /// The admin address cannot be bound.
    Listen(SocketAddr, io::Error),
    /// The admin server cannot start.
    Admin(io::Error),
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
            Error::Admin(e) => write!(f, "cannot start the admin server: {e}"),
            Error::Crashed(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Raises the soft limit of open files to the hard limit (a thousand watched volumes, the
/// admin server's connections): what the container allows, without asking for more.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(error = %e, soft, hard, "cannot raise the open-files limit");
    }
}

/// The scheduler slice the reload thread asks for (EEVDF's custom slice, Linux 6.12 and later;
/// 100 µs is the shortest the kernel grants).
const RELOAD_THREAD_SLICE_NS: u64 = 100_000;

/// Asks the scheduler to treat the calling thread (the reload runtime's) as latency-sensitive: a
/// short slice lets it preempt whatever runs on its CPU when an event wakes it (on a busy node,
/// often the very writer that rotated the Secret) instead of queueing behind it. It gets no more
/// CPU than before, only sooner; the thread runs in bursts of tens of microseconds. Older
/// kernels ignore the request, and a refusal (a seccomp profile) changes nothing else.
pub fn prefer_short_slice() {
    // SAFETY: sched_attr is plain data, fully initialised; the call only reads it.
    let r = unsafe {
        let mut attr: libc::sched_attr = std::mem::zeroed();
        attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
        attr.sched_policy = libc::SCHED_OTHER as u32;
        attr.sched_runtime = RELOAD_THREAD_SLICE_NS;
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot ask for a short scheduler slice");
    }
}

/// Backlog of the admin port (the kernel caps it at `net.core.somaxconn`): a burst of
/// connections waits for the accept loop instead of being dropped, probes among them.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `config.listen` and runs until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let addr = config.listen;
    let bind = || -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    let listener = bind().map_err(|e| Error::Listen(addr, e))?;
    serve(config, listener, shutdown).await
}

/// Runs with an already bound admin listener until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let procfs = ProcFs::new(&config.proc_root);
    let sidecar = Sidecar::current(&procfs);
    if let crate::process::handle::Delivery::Kill { why } = &sidecar.signal_delivery {
        tracing::warn!("no pidfds: {why}");
    }
    let config = Arc::new(config);
    let board = Arc::new(Board::new(config.clone(), &sidecar));
    let metrics = Arc::new(Metrics::with_compat(config.compat_metrics));
    if config.fingerprint_key_shared {
        metrics.share_versions();
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Tasks::default();
    let (admin, admin_ended) = start_admin(listener, &config, &board, &metrics, &mut tasks)?;

    let mounts = crate::files::read_proc(&config.proc_root.join("self/mountinfo"), 4 << 20)
        .map(|raw| crate::watch::mounts::parse_mountinfo(&String::from_utf8_lossy(&raw)))
        .unwrap_or_default();
    let hub = WatchHub::new(metrics.clone(), config.poll_interval.is_some(), mounts);
    tasks.vital(
        "the inotify reader".into(),
        tracing::info_span!("inotify"),
        hub.clone().run(stop_rx.clone()),
    );
    // With a state file, fingerprints must compare across restarts: the key is kept there unless
    // --fingerprint-key-file gives one.
    let state_file = config
        .state_file
        .as_deref()
        .map(|p| Arc::new(StateFile::load(p)));
    let key = match &state_file {
        Some(sf) if !config.fingerprint_key_shared => sf.key_or(&config.fingerprint_key),
        _ => config.fingerprint_key.clone(),
    };
    let wiring = Wiring {
        procfs,
        board: board.clone(),
        metrics,
        hub: hub.clone(),
        key,
        state_file,
        timing: Timing {
            resync: config.resync_interval,
            poll_interval: config.poll_interval.unwrap_or(FALLBACK_POLL_INTERVAL),
            forced_poll: config.poll_interval.is_some(),
        },
        lane: crate::lane::Lane {
            deadline: config.fs_stall_timeout,
        },
        stop: stop_rx.clone(),
    };
    let mut reconcilers = Tasks::default();
    let readies = config
        .groups
        .iter()
        .map(|cfg| wiring.group(cfg, &mut tasks, &mut reconcilers))
        .collect();
    drop(wiring);
    spawn_helpers(&mut tasks, &config, &hub, &board, readies, &stop_rx);

    tokio::pin!(shutdown);
    let crashed = tokio::select! {
        _ = &mut shutdown => None,
        what = tasks.failure() => Some(what),
        what = reconcilers.failure() => Some(what),
        Ok(what) = admin_ended => Some(what),
    };
    match &crashed {
        Some(what) => tracing::error!("{what}; shutting down"),
        None => tracing::info!("shutting down"),
    }
    let _ = stop_tx.send(true);
    drop(hub);
    let grace = config.shutdown_grace;
    if tokio::time::timeout(grace, reconcilers.join_all())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "an action was still running after the shutdown grace period: abandoned");
        reconcilers.abort_all();
    }
    tasks.abort_all();
    admin.stop();
    match crashed {
        Some(what) => Err(Error::Crashed(what)),
        None => Ok(()),
    }
}

/// The admin server on its own thread, and the liveness responder it asks (a vital task of
/// `tasks`); the server's handle, and what says that it ended.
fn start_admin(
    listener: TcpListener,
    config: &Config,
    board: &Arc<Board>,
    metrics: &Arc<Metrics>,
    tasks: &mut Tasks,
) -> Result<(server::AdminHandle, oneshot::Receiver<String>), Error> {
    let (liveness, responder) = Liveness::new();
    tasks.vital(
        "the liveness responder".into(),
        tracing::Span::none(),
        responder,
    );
    let addr = listener.local_addr().ok();
    let listener = listener.into_std().map_err(Error::Admin)?;
    let (admin_ended_tx, admin_ended) = oneshot::channel();
    let admin = server::spawn(
        listener,
        Admin {
            board: board.clone(),
            metrics: metrics.clone(),
            liveness,
            status_token_file: config.status_token_file.clone(),
        },
        admin_ended_tx,
    )
    .map_err(Error::Admin)?;
    if let Some(addr) = addr {
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "listening: /metrics /status /healthz /readyz");
    }
    Ok((admin, admin_ended))
}

/// What every group's task and every target's reconciler are wired to.
struct Wiring {
    procfs: ProcFs,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    hub: Arc<WatchHub>,
    /// The key versions are fingerprinted with.
    key: crate::scan::fingerprint::FingerprintKey,
    state_file: Option<Arc<StateFile>>,
    timing: Timing,
    lane: crate::lane::Lane,
    /// The daemon's stop flag.
    stop: watch::Receiver<bool>,
}

impl Wiring {
    /// Starts the task of the group `cfg` (in `tasks`) and its targets' reconcilers (in
    /// `reconcilers`); what says that the group was scanned and watched once.
    fn group(
        &self,
        cfg: &Arc<crate::config::GroupConfig>,
        tasks: &mut Tasks,
        reconcilers: &mut Tasks,
    ) -> oneshot::Receiver<()> {
        let wake = Arc::new(Wake::new(cfg.debounce, cfg.debounce_max));
        let id = self.hub.register(wake.clone());
        let (tx, rx) = watch::channel(None);
        let (ready_tx, ready_rx) = oneshot::channel();
        let selector = cfg
            .targets
            .iter()
            .find_map(|t| t.action.selector().cloned());
        let metrics = self.metrics.register_group(&cfg.name, cfg.paths.len());
        let task = GroupTask {
            cfg: cfg.clone(),
            key: self.key.clone(),
            hub: self.hub.clone(),
            id,
            wake,
            tx,
            status: self.board.register_group(&cfg.name),
            metrics: metrics.clone(),
            daemon_metrics: self.metrics.clone(),
            timing: self.timing,
            ready: Some(ready_tx),
            identity: Some(IdentityResolver::new(
                cfg.app.clone(),
                selector,
                self.procfs.clone(),
            )),
            lane: self.lane,
        };
        tasks.vital(
            format!("the task of watch group '{}'", cfg.name),
            tracing::info_span!("group", watch = %cfg.name),
            task.run(self.stop.clone()),
        );
        for index in 0..cfg.targets.len() {
            self.target(cfg, index, &rx, &metrics, reconcilers);
        }
        ready_rx
    }

    /// Starts the reconciler of the target `index` of the group `cfg`, following `rx`, writing
    /// into its group's series `group_metrics` what its target holds of the group's tokens.
    fn target(
        &self,
        cfg: &Arc<crate::config::GroupConfig>,
        index: usize,
        rx: &crate::group::DesiredRx,
        group_metrics: &Arc<crate::report::metrics::GroupMetrics>,
        reconcilers: &mut Tasks,
    ) {
        let t = &cfg.targets[index];
        let status = self.board.register_target(&t.name, &cfg.name, t.kind());
        let action = Action::new(
            &t.action,
            &self.procfs,
            cfg.app.as_ref(),
            &t.name,
            &cfg.name,
            (cfg.consumed_as == crate::config::ConsumedAs::Env)
                .then(|| (self.key.clone(), t.retry_backoff_max)),
            &self.hub,
        )
        .on_lane(self.lane, self.stop.clone(), status.clone());
        let reconciler = Reconciler {
            group_cfg: cfg.clone(),
            index,
            action,
            rx: rx.clone(),
            status,
            metrics: self.metrics.register_target(t),
            state_file: self.state_file.clone(),
            key: self.key.clone(),
            group_metrics: group_metrics.clone(),
            claims: Default::default(),
            procfs: self.procfs.clone(),
        };
        reconcilers.vital(
            format!("the reconciler of target '{}'", crate::text::value(&t.name)),
            tracing::info_span!("target", target = %crate::text::value(&t.name), watch = %cfg.name),
            reconciler.run(self.stop.clone()),
        );
    }
}

/// The tasks the daemon could run without, in `tasks`: the mount-table watcher, the end of
/// resource episodes, rescans on SIGHUP, and readiness once every group of `readies` is ready.
fn spawn_helpers(
    tasks: &mut Tasks,
    config: &Config,
    hub: &Arc<WatchHub>,
    board: &Arc<Board>,
    readies: Vec<oneshot::Receiver<()>>,
    stop: &watch::Receiver<bool>,
) {
    tasks.helper(
        "the mount-table watcher".into(),
        crate::watch::remount::watch_mount_table(
            config.proc_root.join("self/mountinfo"),
            hub.clone(),
            stop.clone(),
        ),
    );
    tasks.helper(
        "the end of resource episodes".into(),
        crate::report::resources::end_episodes(),
    );
    let rescan_hub = hub.clone();
    tasks.helper("rescans on SIGHUP".into(), async move {
        loop {
            signals::rescan_requested().await;
            rescan_hub.poke_all(std::time::Instant::now());
        }
    });
    let ready_board = board.clone();
    tasks.helper("readiness".into(), async move {
        for r in readies {
            if r.await.is_err() {
                return;
            }
        }
        ready_board.set_ready();
        tracing::info!("ready: every watch group scanned and watched");
    });
}
