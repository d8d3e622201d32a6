//! The command line: `watch`, `check`, `rules`, `rollback`, `history`,
//! `backup`, `drill`, `state`, `init` and the rest (see [`Command`]). Each
//! command returns an [`Exit`]; a [`CliError`] says why it did not succeed,
//! and `main` prints it and turns it into the process's exit code. Output meant for people goes to stdout; logs go to stderr.

pub(crate) mod backtest_cmd;
mod backup_cmd;
mod drill_cmd;
mod engine_cmd;
mod history_cmd;
mod init_cmd;
mod probe;
mod remote_cmd;
mod rules_cmd;
mod state_cmd;
mod watch_cmd;
pub mod wiring;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// The version and the commit it was built from (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "rollbackd",
    version = VERSION,
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
    /// Validate the config and every rule file, then probe the database,
    /// the migration tool and pg_dump (starts nothing, changes nothing).
    Check {
        /// Skip the probes: only the config and the rules are checked.
        #[arg(long)]
        offline: bool,
    },
    /// Write rules for a service's own metrics: discover its series in
    /// Prometheus, recognise their conventions, back-test the thresholds.
    Init(init_cmd::InitArgs),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print a shell completion script: `rollbackd completions bash >
    /// /etc/bash_completion.d/rollbackd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `rollbackd man > rollbackd.1`.
    Man,
    /// Roll the service back now (asks before acting unless --yes or --dry-run).
    Rollback(RollbackArgs),
    /// List deployments, show the previous good one, or one deployment's status.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// The schema revision recorded for each deployment (what a rollback
    /// to it would downgrade to), newest first.
    Revisions {
        #[arg(long)]
        json: bool,
    },
    /// Run the health verification phases against a service and print a table.
    Validate(ValidateArgs),
    /// Show the rollback history (the audit trail).
    History {
        /// Show at most this many events, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
        /// Show one entry in full, by its id: what was decided and the
        /// evidence (the blame judgement's figures).
        #[arg(long, value_name = "ID")]
        show: Option<String>,
    },
    /// Show or reset the deploy breaker.
    #[command(subcommand)]
    Breaker(BreakerCommand),
    /// Emergency database backups: take one, list them, verify one.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Rollback drills: run one now, or list them with their last result and next run.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Move the state between backends.
    #[command(subcommand)]
    State(StateCommand),
    /// List rollbacks waiting for confirmation (asks the running `rollbackd watch`).
    Pending {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending rollback: rollbackd re-checks the rules, then rolls back.
    Approve {
        /// The pending rollback's id (from `rollbackd pending`).
        id: String,
        /// Roll back even if the rules no longer fire.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Reject a pending rollback; nothing is changed.
    Reject {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// A revision as `--db-target` takes it: an id, a prefix of one, or
/// `base`; never a range or a relative step (that is `--db-steps`).
fn revision(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() || v.contains([':', ' ']) || v.starts_with(['-', '+']) || v.contains("@") {
        return Err(format!(
            "{value:?} is not a revision: give an id like ae1027a6acf (or base); for steps below the current one use --db-steps N"
        ));
    }
    Ok(v.to_string())
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Roll back to this deployment (default: the newest earlier one that ran successfully).
    #[arg(long, value_name = "ID")]
    pub deployment_id: Option<String>,
    /// Leave the database alone (application-only rollback).
    #[arg(long, conflicts_with_all = ["db_target", "db_steps"])]
    pub skip_db: bool,
    /// Downgrade the schema to this revision (instead of the one recorded for the target deployment).
    #[arg(long, value_name = "REVISION", conflicts_with = "db_steps", value_parser = revision)]
    pub db_target: Option<String>,
    /// Downgrade the schema this many revisions below the current one (the seed's -1 is --db-steps 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub db_steps: Option<u32>,
    /// Why, for the history and the notifications.
    #[arg(long, default_value = "manual rollback")]
    pub reason: String,
    /// The service's base URL for health verification (default: [service] base_url).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Recent deployments, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The deployment a rollback would go back to.
    Previous {
        #[arg(long)]
        json: bool,
    },
    /// One deployment's status.
    Status {
        #[arg(long, value_name = "ID")]
        deployment_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The service's base URL (default: [service] base_url).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Seconds to wait before the first check.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub wait: u64,
    /// Keep retrying failing phases this long (like "30s").
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = parse_duration)]
    pub retry_for: std::time::Duration,
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Run a drill now: each check with its time and result; exit 1 when one fails.
    Run {
        /// The drill's name, from `[[drills]]`.
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The drills: schedule, time zone, next run, last result.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a verified backup now (pg_dump, SHA-256, pg_restore --list).
    Create {
        #[arg(long, default_value = "manual backup")]
        reason: String,
    },
    /// The backups kept, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Check a backup against its checksum and that pg_restore can read it.
    Verify {
        /// The .dump file, or its copy's URL in the backup store
        /// (s3://bucket/prefix/rollbackd-….dump, file://…), downloaded first.
        path: std::path::PathBuf,
    },
    /// Restore a backup (verified first) into a new database, leaving the
    /// live one untouched; --replace then swaps it in for the live one,
    /// which is kept under another name.
    Restore {
        /// The .dump file, or its copy's URL in the backup store, downloaded
        /// and verified first.
        path: std::path::PathBuf,
        /// The new database's name (default `<live>_restored_<time>`).
        #[arg(long)]
        dbname: Option<String>,
        /// Swap the restored database in for the live one (its sessions
        /// are ended); the live one is kept as `<live>_replaced_<time>`.
        #[arg(long)]
        replace: bool,
        /// Do not ask first (needed when not on a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy a state directory (history, breaker, revisions, run journals)
    /// into the configured `[state]` backend (PostgreSQL). Refuses when the
    /// backend already holds a history, unless --force.
    Import {
        /// The state directory to copy, like `state/`.
        #[arg(long, value_name = "DIR")]
        from: std::path::PathBuf,
        /// Replace what the backend already holds.
        #[arg(long)]
        force: bool,
    },
    /// List the journals of unfinished rollbacks (`runs/`), in either
    /// backend: each one's id, its last step, or why it cannot be read.
    Journals {
        #[arg(long)]
        json: bool,
    },
    /// Move one journal out of the way (to `quarantine/`, kept whole), so a
    /// journal that cannot be read stops blocking rollbacks. What that run
    /// did is then for you to check: rollbackd will never settle it.
    Quarantine {
        /// The journal's id (`rb-…`), as `state journals` shows it.
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum BreakerCommand {
    /// Print the state; exits 0 when deploys may go ahead (CLOSED or HALF_OPEN), 1 when OPEN.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Close the breaker (after a failed rollback has been dealt with).
    Reset {
        #[arg(long, default_value = "reset by an operator")]
        reason: String,
        /// Also turn back on what a rollback turned off on the platform:
        /// Argo CD's automated sync, restored exactly as it was recorded.
        #[arg(long)]
        resume_sync: bool,
    },
}

/// Where the running `rollbackd watch` listens.
#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// rollbackd's API (default: http://<server.listen>).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files: every problem at once, each with file and rule.
    Check {
        /// Rule files or directories (default: watch.rule_paths from the config).
        paths: Vec<PathBuf>,
    },
    /// Replay rules over Prometheus's history: their pending and firing
    /// intervals, and the rollbacks they would have made.
    Backtest(backtest_cmd::BacktestArgs),
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

/// How a command ended: `Ok`, or the [`CliError`] `main` prints once and
/// turns into the exit code.
pub type Exit = Result<(), CliError>;

/// Why a command did not succeed. Commands return it with `?`; `main` is
/// the one place that prints it (`rollbackd: …` on stderr) and picks the
/// exit code: 1 the command found problems or could not do its work, 2 the
/// configuration or the invocation is wrong, 70 a task of `watch` failed.
#[derive(Debug)]
pub enum CliError {
    /// The command ran, found problems and has said what they are (invalid
    /// rules, a failed rollback's report): nothing more to print.
    Reported,
    /// The command could not do its work, and this says why.
    Failed(String),
    /// The configuration or the invocation is wrong; the message says how
    /// to fix it.
    Usage(String),
    /// A task of `watch` failed (see `supervise`), and this says which:
    /// restart rollbackd.
    TaskFailed(String),
}

impl CliError {
    /// The configuration or the invocation is wrong.
    pub fn usage(why: impl std::fmt::Display) -> CliError {
        CliError::Usage(why.to_string())
    }

    pub fn code(&self) -> i32 {
        match self {
            CliError::Reported | CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            // EX_SOFTWARE: an internal error, for the orchestrator to restart.
            CliError::TaskFailed(_) => 70,
        }
    }

    /// What `main` prints after `rollbackd: `, if anything.
    pub fn message(&self) -> Option<&str> {
        match self {
            CliError::Failed(why) | CliError::Usage(why) | CliError::TaskFailed(why) => Some(why),
            CliError::Reported => None,
        }
    }
}

/// Any error a command cannot get past: it could not do its work, and the
/// error says why (`?` on it prints `rollbackd: {error}`, exit 1).
impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl Command {
    /// Commands that only read and print: a reader that goes away ends
    /// them quietly. Not one that changes something (`rollback`): its run
    /// must not be cut by a closed pipe and reported as a success.
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::Check { .. }
                | Command::Rules(_)
                | Command::Completions { .. }
                | Command::Man
                | Command::Deployments(_)
                | Command::Revisions { .. }
                | Command::History { .. }
                | Command::Pending { .. }
                | Command::Validate(_)
        )
    }
}

/// Writes `bytes` to stdout; a reader that went away ends it quietly.
fn print_bytes(bytes: &[u8]) -> Exit {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Exit {
    // These read no configuration: they work beside a broken one.
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "rollbackd", &mut script);
            return print_bytes(&script);
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
                return Err(CliError::Failed(format!("man: {e}")));
            }
            return print_bytes(&page);
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return Err(CliError::Usage(format!("config: {e}"))),
    };
    match cli.command {
        Command::Completions { .. } | Command::Man => {
            unreachable!("answered before the configuration is read")
        }
        Command::Watch => watch_cmd::watch(config).await,
        Command::Check { offline } => match rules_cmd::check(&config, &[], true) {
            Ok(()) if !offline => {
                // Every probe runs and says its part; the first failure is
                // the exit.
                let probes = [
                    probe::prometheus(&config).await,
                    probe::database(&config).await,
                    probe::state(&config).await,
                    probe::provider(&config).await,
                    probe::gitops(&config).await,
                ];
                probes.into_iter().find(|e| !e.is_ok()).unwrap_or(Ok(()))
            }
            other => other,
        },
        Command::Init(args) => init_cmd::init(&config, args).await,
        Command::Rules(RulesCommand::Check { paths }) => rules_cmd::check(&config, &paths, false),
        Command::Rules(RulesCommand::Backtest(args)) => backtest_cmd::backtest(&config, args).await,
        Command::Rules(RulesCommand::Eval { rule, json }) => {
            rules_cmd::eval(&config, rule.as_deref(), json).await
        }
        Command::Rollback(args) => engine_cmd::rollback(&config, args).await,
        Command::Deployments(cmd) => engine_cmd::deployments(&config, cmd).await,
        Command::Revisions { json } => engine_cmd::revisions(&config, json),
        Command::Validate(args) => engine_cmd::validate(&config, args).await,
        Command::History { limit, json, show } => match show {
            Some(id) => history_cmd::history_entry(&config, &id, json),
            None => history_cmd::history(&config, limit, json),
        },
        Command::Breaker(cmd) => engine_cmd::breaker(&config, cmd).await,
        Command::State(cmd) => state_cmd::state(&config, cmd),
        Command::Backup(cmd) => backup_cmd::backup(&config, cmd).await,
        Command::Drill(cmd) => drill_cmd::drill(&config, cmd).await,
        Command::Pending { remote, json } => remote_cmd::pending(&config, &remote, json).await,
        Command::Approve { id, force, remote } => {
            remote_cmd::decide(&config, &remote, &id, Some(force)).await
        }
        Command::Reject { id, remote } => remote_cmd::decide(&config, &remote, &id, None).await,
    }
}

/// What evaluating rules needs: the loaded rules, Prometheus, and the HTTP
/// client for probes. Shared by `watch` and `rules eval`.
struct Evaluation {
    source: crate::watch::RuleSource,
    rules: crate::rules::RuleSet,
    /// The rule files as `rules` were read from them.
    seen: crate::watch::Fingerprint,
    prometheus: std::sync::Arc<crate::source::prometheus::Prometheus>,
    http: reqwest::Client,
}

fn evaluation_parts(config: &Config) -> Result<Evaluation, CliError> {
    let source = crate::watch::RuleSource::from_config(&config.watch, config.template_variables());
    let (rules, seen) = source.load_seen().map_err(|e| {
        eprintln!("{e}");
        CliError::Reported
    })?;
    let prometheus = crate::source::prometheus::Prometheus::new(&config.prometheus)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let http = crate::verify::client()
        .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))?;
    Ok(Evaluation {
        source,
        rules,
        seen,
        prometheus: std::sync::Arc::new(prometheus),
        http,
    })
}
