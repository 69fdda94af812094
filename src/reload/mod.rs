//! Making targets hold the content on disk: the reconciler that drives a target's action (see
//! [`crate::action`]), one per target, and the verification of what it did.
//!
//! - `reconciler`: the task of one target: when to act, what to record;
//! - `progress`: what the reconciler knows and decides, pure and tested with a test clock;
//! - `verify`: the probe after a reload (`json_check`: `--verify-json`'s conditions on its
//!   answer); `served`: the certificate the app serves;
//! - `state_file`: what each target applied, kept across sidecar restarts;
//! - `claims`: the claims of the tokens a target holds, against those on disk;
//! - `workers`: a signal target's workers counted against the version
//!   (`--applied-when workers-replaced`).

mod claims;
mod json_check;
pub(crate) mod progress;
pub(crate) mod reconciler;
pub(crate) mod served;
mod shown;
pub(crate) mod state_file;
pub(crate) mod verify;
pub(crate) mod workers;
