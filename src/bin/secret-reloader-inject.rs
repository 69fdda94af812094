//! The secret-reloader-inject binary: `secret-reloader-inject [FILE...]` adds the sidecar to the
//! annotated pod templates of manifests; `secret-reloader-inject webhook` is the admission webhook
//! that does the same to each pod the API server admits. A binary of its own, so that the sidecar,
//! which runs in every pod, carries neither a YAML reader nor an HTTPS server it never uses.
//! Exit codes: 0; 1 (an input or a pod that cannot be injected, a fatal webhook error); 2 usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secret_reloader::config::{LogFormat, LogLevel};
use secret_reloader::daemon::{self, signals};
use secret_reloader::inject::{self, InjectArgs};
use secret_reloader::report::logging;
use secret_reloader::webhook::{self, WebhookArgs};

/// The same allocator as the sidecar's (see `src/main.rs`): memory reused, not mapped and
/// unmapped per review.
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Add the secret-reloader sidecar to pods, derived from each pod's own spec.
#[derive(Debug, Parser)]
#[command(name = "secret-reloader-inject", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Without one, the manifests are injected.
    #[command(subcommand)]
    command: Option<Command>,
    /// Injecting manifests.
    #[command(flatten)]
    inject: InjectArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The mutating admission webhook: injects the sidecar into annotated pods as they are
    /// created (AdmissionReview v1 over HTTPS).
    Webhook(Box<WebhookArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // Usage errors exit 2 with clap's message.
    let code = match cli.command {
        Some(Command::Webhook(args)) => run_webhook(*args),
        None => inject::run(cli.inject),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run_webhook(args: WebhookArgs) -> i32 {
    logging::init(LogFormat::Text, LogLevel::Info);
    daemon::raise_fd_limit();
    // Before any other thread starts: every thread but one blocks the signals it handles.
    let signals = match signals::install(webhook::SHUTDOWN_GRACE) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return 1;
        }
    };
    webhook::run(args, signals.terminated())
}
