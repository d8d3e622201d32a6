//! rollbackd's entry point: parse, start logging, run, map the outcome to an
//! exit code (0 success, 1 the command found problems, 2 bad config or usage,
//! 70 a task of `watch` failed).

use clap::Parser;
use rollbackd::cli::{self, Cli};

/// A reader that went away (`rollbackd check | head -1`) ends a command
/// that only reads quietly with 0, as it would for any Unix tool, instead
/// of a panic (101). Installed only for those commands.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() {
    let cli = Cli::parse();
    if cli.command.reads_only() {
        quiet_on_broken_pipe();
    }
    rollbackd::telemetry::init_logging(cli.log_format, cli.log_level);
    // Several threads: a task blocked on the state store (a PostgreSQL that
    // hangs) hands the others (/healthz, the API, the rule groups) to
    // another thread instead of holding them up.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rollbackd")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rollbackd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            if let Some(message) = e.message() {
                eprintln!("rollbackd: {message}");
            }
            std::process::exit(e.code());
        }
    }
}
