//! The secret-reloader binary: parse, set up logging, run, map the outcome to an exit code
//! (0 clean shutdown, 1 fatal runtime error, 2 invalid usage or configuration).

use std::process::ExitCode;

use clap::Parser;
use secret_reloader::cli::{Cli, Command};
use secret_reloader::{Config, demo, demo_app, doctor, logging, shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse(); // Usage errors exit 2 with clap's message.
    match cli.command {
        Some(Command::Demo(args)) => return code(demo::run(args)),
        Some(Command::DemoApp(args)) => return code(demo_app::run(args)),
        Some(Command::Doctor(args)) => return code(doctor::run(*args)),
        None => {}
    }
    let config = match Config::from_args(&cli.run) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("see secret-reloader --help");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format, config.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Only large scans and command waits block; a few threads are plenty.
        .max_blocking_threads(4)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let terminated = shutdown::termination()
            .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
        secret_reloader::run(config, terminated)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
