//! The command line: `watch`, `check`, `rules check`, `rules eval`.
//! Each command returns an [`Exit`]; `main` turns it into the process's exit
//! code. Output meant for people goes to stdout; logs go to stderr.

mod rules_cmd;
mod watch_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "rollbackd",
    version,
    about = "Autonomous rollback controller: watches Prometheus, decides from rules kept in git whether the latest deploy broke production.",
    propagate_version = true
)]
pub struct Cli {
    /// Config file (TOML, or YAML by extension). Without it, ./rollbackd.toml
    /// is read when present; ROLLBACKD_<SECTION>__<KEY> variables override both.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "ROLLBACKD_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ROLLBACKD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace.
    #[arg(
        long,
        global = true,
        env = "ROLLBACKD_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: tracing::Level,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: evaluate rules on their intervals, serve /metrics,
    /// reload rule files on change or SIGHUP.
    Watch,
    /// Validate the config and every rule file, then exit (starts nothing).
    Check,
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files: every problem at once, each with file and rule.
    Check {
        /// Rule files or directories (default: watch.rule_paths from the config).
        paths: Vec<PathBuf>,
    },
    /// Evaluate each rule once against Prometheus and print value, threshold,
    /// state and whether it would fire.
    Eval {
        /// Only the rule with this name.
        #[arg(long)]
        rule: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// How a command ended.
#[derive(Debug)]
pub enum Exit {
    /// Success.
    Ok,
    /// The command ran and found problems (invalid rules, a failed run).
    Failed,
    /// The config or the invocation is wrong; the message says how to fix it.
    Usage(String),
}

impl Exit {
    pub fn code(&self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage(_) => 2,
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Exit {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return Exit::Usage(format!("config: {e}")),
    };
    match cli.command {
        Command::Watch => watch_cmd::watch(config).await,
        Command::Check => rules_cmd::check(&config, &[], true),
        Command::Rules(RulesCommand::Check { paths }) => rules_cmd::check(&config, &paths, false),
        Command::Rules(RulesCommand::Eval { rule, json }) => {
            rules_cmd::eval(&config, rule.as_deref(), json).await
        }
    }
}
