//! `secret-reloader inject`: adds the sidecar to the pods and pod templates of a YAML or JSON
//! stream, derived from the pod's own spec (which Secrets and ConfigMaps the app mounts or takes as
//! environment variables, the app's uid and groups), so the two can never disagree. The admission
//! webhook ([`crate::webhook`]) applies the same [`pod`] to each pod the API server admits.

use std::path::PathBuf;

use serde_json::Value;

/// The flags that decide what gets injected, shared by `inject` and `webhook` (the webhook's
/// patch is exactly what `inject` does with the same flags).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectFlags {
    /// The sidecar's image.
    #[arg(long, value_name = "IMAGE", default_value = concat!("secret-reloader:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// `native`: an init container with `restartPolicy: Always` (Kubernetes 1.29 and later);
    /// `classic`: a second entry of `containers`, for older clusters.
    #[arg(long, value_enum, default_value = "native")]
    pub layout: Layout,

    /// Inject every pod and pod template, not only those annotated
    /// `secret-reloader.io/inject: "true"`.
    #[arg(long)]
    pub all: bool,
}

/// Where the sidecar goes in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `initContainers` with `restartPolicy: Always`.
    Native,
    /// A second entry of `containers`.
    Classic,
}

/// `secret-reloader inject`'s flags.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// YAML or JSON files (`-` for stdin, the default): multi-document streams and `kind: List`.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// What gets injected.
    #[command(flatten)]
    pub flags: InjectFlags,

    /// Take the sidecar out and restore what injecting changed.
    #[arg(long)]
    pub remove: bool,

    /// Inject what can be injected, report the rest on stderr (exit 1 when anything failed).
    #[arg(long)]
    pub keep_going: bool,
}

/// Why a pod cannot be injected: the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Pod object (`kind: Pod`, as the webhook receives it) with the sidecar injected: `Ok(None)`
/// when it is not to be injected (no annotation and not `--all`).
pub fn pod(pod: &Value, flags: &InjectFlags) -> Result<Option<Value>, Problem> {
    let _ = (pod, flags);
    Ok(None)
}

/// `secret-reloader inject`: the exit code (0, 1 when an object could not be injected, 2 usage).
pub fn run(args: InjectArgs) -> i32 {
    let _ = args;
    eprintln!("secret-reloader inject: not built yet");
    1
}
