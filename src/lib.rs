//! secret-reloader: a Kubernetes sidecar that makes long-lived processes apply rotated secrets.
//!
//! Kubernetes updates a mounted Secret in place, but the process that read it at start keeps the
//! old credential until something tells it to reload. secret-reloader watches the mounted files,
//! tells the app to reload (a signal through the shared PID namespace, an HTTP call, a command)
//! exactly once per real change, retries until it lands, and reports all of it.
//!
//! # Layout
//!
//! - [`cli`], [`config`]: flags, environment and the JSON file → a validated [`config::Config`].
//! - [`watch`], [`debounce`]: inotify events → per-group wakeups; kubelet's `..data` swap is a
//!   commit point, other writers get a quiet period.
//! - [`snapshot`], [`fingerprint`]: scanning a group's files (kubelet volume layout included) into
//!   a keyed fingerprint.
//! - [`scanner`]: one task per watch group: when to scan, publishing versions.
//! - [`reload`]: the actions (signal, HTTP, exec) and the reconciler, one task per target.
//! - [`process`]: the target process in `/proc`.
//! - [`state`], [`metrics`], [`server`]: `/status`, `/metrics`, `/healthz`, `/readyz`.
//! - [`daemon`]: wiring and shutdown: [`daemon::run`] / [`daemon::serve`].
//! - [`demo`], [`demo_app`], [`atomic_writer`]: the local demonstration, its app, and kubelet's
//!   atomic writer (also used by the tests and the benchmark).

#![warn(missing_docs)]

pub mod access;
pub mod assess;
pub mod atomic_writer;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod debounce;
pub mod demo;
pub mod demo_app;
pub mod doctor;
pub mod fingerprint;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod mounts;
pub mod pem;
pub mod persist;
pub mod process;
pub mod reload;
pub mod scanner;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod state;
pub mod watch;

pub use config::Config;
pub use daemon::{run, serve};
