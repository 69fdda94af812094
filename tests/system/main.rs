//! System tests: the tests that change machine-wide settings, which other tests running at the
//! same time would feel. `inotify` lowers the sysctl `fs.inotify.max_queued_events` (every
//! inotify instance created meanwhile gets the small queue); `mounts` mounts and unmounts a tmpfs
//! in the host's mount namespace. They need root, like `tests/it`.
//!
//! Run them after the parallel suite, one at a time, so that nothing else runs while the machine's
//! settings are changed:
//!
//! ```sh
//! cargo test --test it
//! cargo test --test system -- --test-threads=1
//! ```
//!
//! The support module is the one `tests/it` uses (`tests/it/support`), compiled into this binary
//! too: the same guards, the same `eventually`, the same helpers.

#[path = "../it/support/mod.rs"]
mod support;

mod inotify;
mod mounts;
