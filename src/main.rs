//! The secret-reloader binary: parse, set up logging, run, map the outcome to an exit code
//! (0 clean shutdown, 1 fatal runtime error, 2 invalid usage or configuration).

use std::process::ExitCode;

use secret_reloader::config::cli::{Cli, Command, DemoAppArgs, DemoArgs, DoctorArgs, Output};
use secret_reloader::daemon::{self, signals};
use secret_reloader::report::logging;
use secret_reloader::{Config, demo, doctor};

/// dlmalloc rather than musl's allocator: musl's returns a size class's memory to the kernel as
/// soon as its last object is freed, so a daemon whose every scan allocates and frees the same
/// few objects could map and unmap pages at each reload (a `mmap`, a page fault and a `munmap`
/// on the reload path, depending on how the heap happened to be laid out at start). dlmalloc
/// keeps freed memory for reuse and gives back only large free tops.
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    let cli = Cli::from_env(); // Usage errors exit 2 with clap's message.
    match cli.command {
        Some(Command::Demo(args)) => return code(demo::run(demo_of(args))),
        Some(Command::DemoApp(args)) => return code(demo::app::run(app_of(args))),
        Some(Command::Doctor(args)) => return code(run_doctor(*args)),
        Some(Command::KubeletWrite(a)) => {
            let write = demo::kubelet_write::Write {
                dir: a.dir,
                gid: a.gid,
                mode: a.mode,
                keys: a.keys,
            };
            return code(demo::kubelet_write::run(write));
        }
        None => {}
    }
    let loaded = match Config::load(&cli.run) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("see secret-reloader --help");
            return ExitCode::from(2);
        }
    };
    let config = loaded.config;
    logging::init(config.log_format, config.log_level);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    daemon::raise_fd_limit();
    // This thread becomes the reload runtime's; the threads it starts inherit the slice.
    daemon::prefer_short_slice();
    // Before any other thread starts: every thread but one blocks the signals it handles.
    let signals = match signals::install(config.shutdown_grace) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    // One thread runs the whole reload path (nothing on it blocks); the admin server has its
    // own; large scans and state-file writes go to a small blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_name("blocking")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        secret_reloader::run(config, signals.terminated())
            .await
            .map_err(|e| e.to_string())
    });
    // Blocking work still running (a scan on a hung filesystem) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
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

/// `secret-reloader doctor`: the configuration its flags describe (exit 2 when invalid),
/// reported in the format asked for.
fn run_doctor(args: DoctorArgs) -> i32 {
    let config = match Config::for_doctor(&args.run) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let format = match args.output {
        Output::Text => doctor::Format::Text,
        Output::Json => doctor::Format::Json,
    };
    doctor::run(&config, args.standalone, format)
}

/// What `secret-reloader demo`'s flags ask of the demonstration.
fn demo_of(a: DemoArgs) -> demo::Demo {
    demo::Demo {
        interval: a.interval,
        rotations: a.rotations,
        listen: a.listen,
    }
}

/// What the demonstration app's flags ask of it.
fn app_of(a: DemoAppArgs) -> demo::app::App {
    demo::app::App {
        credential: a.credential,
        state_file: a.state_file,
        pid_file: a.pid_file,
        handler_delay: a.handler_delay,
        workers: a.workers,
        ignore_hup: a.ignore_hup,
    }
}
