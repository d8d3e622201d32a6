//! rollbackd's entry point: parse, start logging, run, map the outcome to an
//! exit code (0 success, 1 the command found problems, 2 bad config or usage).

use clap::Parser;
use rollbackd::cli::{self, Cli, Exit};

fn main() {
    let cli = Cli::parse();
    rollbackd::telemetry::init_logging(cli.log_format, cli.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rollbackd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let exit = runtime.block_on(cli::run(cli));
    if let Exit::Usage(message) = &exit {
        eprintln!("rollbackd: {message}");
    }
    std::process::exit(exit.code());
}
