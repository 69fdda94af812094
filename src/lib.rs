//! secret-reloader: a Kubernetes sidecar that makes long-lived processes apply rotated secrets.
//!
//! Kubernetes updates a mounted Secret in place, but the process that read it at start keeps the
//! old credential until something tells it to reload. secret-reloader watches the mounted files,
//! tells the app to reload (a signal through the shared PID namespace, an HTTP call, a command)
//! exactly once per real change, retries until it lands, and reports all of it.
//!
//! # Layout
//!
//! The pipeline, stage by stage (`ARCHITECTURE.md` has the whole design):
//!
//! ```text
//! config ──► watch ──► group ──(scan, assess)──► reload ──► the app
//!   flags,     inotify    one task per   files,      one reconciler   signal, HTTP,
//!   env, file  events,    watch group:   access,     per target       exec, verify
//!              debounce   when to scan,  PEM
//!                         what to publish
//!                    report: status board, metrics, admin server, logs (every stage writes)
//! ```
//!
//! - [`config`]: flags ([`config::cli`]), environment and the JSON file → a validated
//!   [`Config`]; the input layer, imported by the stages, importing none of them. The flags of
//!   configmap-reload and prometheus-config-reloader (`config::compat_flags`).
//! - [`watch`]: inotify events and the mount table → per-group wakeups
//!   (`watch::inotify`, `watch::debounce`, [`watch::mounts`]).
//! - [`group`]: one task per watch group: when to scan, scanning, publishing what the targets
//!   must hold (`group::publish`).
//! - [`scan`]: reading a version: files, kubelet's layout, keyed fingerprints
//!   ([`scan::fingerprint`]), PEM consistency (`scan::pem`), a JWT's expiry (`scan::token`).
//! - [`assess`]: is a version fit to be reloaded: completeness, consistency, whether the app can
//!   read it (`assess::access`).
//! - [`reload`]: one reconciler per target (`reload::reconciler`, decisions in
//!   `reload::progress`), the verification of what its action did (`reload::verify`,
//!   `reload::served`), what each target applied across restarts (`reload::state_file`).
//! - [`action`]: the action kinds, one folder each, owning configuration, run time and doctor
//!   checks: `action::http`, `action::signal`, `action::exec`, and the environment
//!   restart (`action::restart`); [`client`]: the daemon's HTTP(S) client (`client::tls`).
//! - [`process`]: the app's process in `/proc` (`process::select`), a handle that cannot be
//!   confused with another (`process::handle`), identities ([`process::identity`]), its
//!   environment as keyed fingerprints (`process::environ`, for `--consumed-as env`).
//! - [`report`]: the status board ([`report::status`]), metrics ([`report::metrics`]), the admin
//!   server on its own thread ([`report::server`]), logs ([`report::logging`]); other tools'
//!   series for `--compat-metrics` are computed at scrape time from the same atomics.
//! - [`daemon`]: wiring, named tasks, signals and the shutdown: [`daemon::run`] /
//!   [`daemon::serve`]; nothing imports it (`stop`: the stop flag every task holds).
//! - [`inject`]: the sidecar derived from a pod's own spec, added to the pod templates of
//!   manifests; [`webhook`]: the admission webhook that applies it to each pod created (both
//!   run by the second binary, `secret-reloader-inject`, never by the sidecar).
//! - [`doctor`]: the one-shot report. [`demo`]: the local demonstration, its app, and kubelet's
//!   atomic writer (also used by the tests and the benchmark).
//! - `files`: opening files that may be hostile (never blocking, size-limited); [`lane`]:
//!   filesystem calls that may never return, run where they hold no one else; `text`: text
//!   that leaves the process, escaped.

#![warn(missing_docs)]

pub mod action;
pub mod assess;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod doctor;
pub(crate) mod files;
pub mod group;
pub mod inject;
pub mod lane;
pub mod process;
pub mod reload;
pub mod report;
pub mod scan;
pub(crate) mod stop;
pub(crate) mod text;
pub mod watch;
pub mod webhook;

pub use config::Config;
pub use daemon::{run, serve};

/// Locks a mutex; a panic elsewhere must not take `/status` down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Nanoseconds of CLOCK_MONOTONIC, comparable between processes on one machine.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
