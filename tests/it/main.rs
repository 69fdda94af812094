//! Integration tests: the built binary and the library against real processes, real signals, real
//! HTTP servers on 127.0.0.1 and real directories laid out the way kubelet lays them out.
//!
//! Every test has its own directories, ports and process names, and kills what it started even
//! when it fails (guards in `support`).

mod access;
mod cli;
mod compat;
mod consistency;
mod doctor;
mod environ;
mod faults;
mod fleet;
mod haproxy;
mod hostile;
mod http;
mod https;
mod hygiene;
mod idle;
mod inject;
mod kubelet_write;
mod library;
mod lifecycle;
mod native_fixtures;
mod nginx;
mod packaging;
mod postgres;
mod prometheus;
mod props;
mod restart;
mod served;
mod served_workers;
mod signal;
mod splay;
mod support;
mod tokens;
mod verify;
mod volumes;
mod webhook;
mod workers;
