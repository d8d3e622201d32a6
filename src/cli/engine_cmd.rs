//! `rollback`, `deployments`, `revisions`, `validate` and `breaker`: the
//! on-call engineer's commands. They run in this process (no daemon needed)
//! and share the state directory, lock and history with `rollbackd watch`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{BreakerCommand, CliError, DeploymentsCommand, Exit, RollbackArgs, ValidateArgs};
use crate::config::Config;
use crate::engine::{self, DbTarget, Engine, PhaseStep, Progress, RollbackRequest, Trigger};
use crate::provider::Deployment;
use crate::rules::Policy;
use crate::state::{Doc, StateDir};
use crate::verify;

fn engine(config: &Config) -> Result<Engine, CliError> {
    super::wiring::engine(config).map_err(|e| CliError::Usage(e.to_string()))
}

pub(super) async fn rollback(config: &Config, args: RollbackArgs) -> Exit {
    let engine = engine(config)?;
    if !args.dry_run {
        settle_unfinished(&engine).await?;
    }
    let req = request(&args);
    if args.dry_run {
        for left in engine.unfinished().unwrap_or_default() {
            println!(
                "NOTE: rollback {} was left unfinished by a stopped rollbackd; a real run settles it first, and the plan may change",
                left.id
            );
        }
    }
    let plan = match engine.plan(&req).await {
        Ok(plan) => plan,
        Err(e) => {
            return Err(CliError::Failed(format!("cannot plan the rollback: {e}")));
        }
    };
    println!("rollback plan:\n{plan}");
    if let (Some(asked), Some(why)) = (&req.db_target, plan.database_stops()) {
        return Err(CliError::Usage(format!(
            "{why}\nnothing was done (no backup, breaker untouched): fix {asked}, or leave it out"
        )));
    }
    if args.dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    if !args.yes {
        confirm(&plan)?;
    }
    let started = Instant::now();
    let report = engine.run(req, &move |p| print_progress(started, p)).await;
    print_timeline(&report.phases);
    if let Some(notifiers) = engine.notifiers() {
        notifiers.flush(Duration::from_secs(15)).await;
    }
    if report.success {
        println!(
            "rollback {} succeeded in {:.1}s; the service is verified healthy",
            report.id,
            report.duration.as_secs_f64()
        );
        Ok(())
    } else {
        eprintln!(
            "rollback {} FAILED after {:.1}s: {}",
            report.id,
            report.duration.as_secs_f64(),
            report.error.as_deref().unwrap_or("unknown error")
        );
        Err(CliError::Reported)
    }
}

/// Settles a rollback a killed rollbackd left unfinished, first: the
/// target of this one depends on what that one did. A resumed one ends the
/// command, for the operator to look before asking again.
async fn settle_unfinished(engine: &engine::Engine) -> Exit {
    let settled = engine.recover().await?;
    for s in &settled {
        println!("{}", s.summary());
    }
    if settled
        .iter()
        .any(|s| matches!(s, engine::Settled::Resumed { .. }))
    {
        if let Some(notifiers) = engine.notifiers() {
            notifiers.flush(Duration::from_secs(15)).await;
        }
        return Err(CliError::Failed("a rollback left unfinished was finished first (see above); nothing else was done. Check the service, then run the command again if it is still needed".into()));
    }
    Ok(())
}

/// The operator's rollback, as the command line asks for it.
fn request(args: &RollbackArgs) -> RollbackRequest {
    RollbackRequest {
        trigger: Trigger::Manual,
        policy: if args.dry_run {
            Policy::DryRun
        } else {
            Policy::Auto
        },
        reason: args.reason.clone(),
        deployment_id: args.deployment_id.clone(),
        skip_db: args.skip_db,
        db_target: match (&args.db_target, args.db_steps) {
            (Some(rev), _) => Some(DbTarget::Revision(rev.clone())),
            (None, Some(n)) => Some(DbTarget::Steps(n)),
            (None, None) => None,
        },
        base_url: args.base_url.clone(),
        pending_id: None,
        joined: Default::default(),
        at: tokio::time::Instant::now(),
        detected: None,
        blame: None,
    }
}

/// Asks on the terminal before rolling back; off a terminal, `--yes` is
/// needed.
fn confirm(plan: &engine::plan::Plan) -> Exit {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage("refusing to roll back without confirmation: pass --yes (or --dry-run to only see the plan)".into()));
    }
    print!(
        "roll back {} -> {}? [y/N] ",
        plan.current.id, plan.target.id
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        println!("not rolled back");
        return Err(CliError::Reported);
    }
    Ok(())
}

/// One line of the run's live output, `started` seconds in.
fn print_progress(started: Instant, p: Progress) {
    match p {
        Progress::Started { id } => println!(
            "[{:>6.1}s] rollback {id} started",
            started.elapsed().as_secs_f64()
        ),
        Progress::PhaseStarted(phase) => {
            println!(
                "[{:>6.1}s] {} ...",
                started.elapsed().as_secs_f64(),
                phase.as_str()
            )
        }
        Progress::PhaseFinished {
            phase,
            outcome,
            elapsed,
        } => println!(
            "[{:>6.1}s] {} {} in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            phase.as_str(),
            outcome.result_label(),
            elapsed.as_secs_f64(),
            outcome.detail()
        ),
        Progress::Note(text) => {
            for line in text.lines() {
                println!("           {line}");
            }
        }
    }
}

fn print_timeline(steps: &[PhaseStep]) {
    println!(
        "\n{:<16} {:<10} {:>8}  DETAIL",
        "PHASE", "RESULT", "SECONDS"
    );
    for step in steps {
        println!(
            "{:<16} {:<10} {:>8.1}  {}",
            step.phase.as_str(),
            step.outcome.result_label(),
            step.elapsed.as_secs_f64(),
            step.outcome.detail()
        );
    }
}

/// The schema revisions recorded per deployment (empty when there are
/// none, or they cannot be read: the table then shows `-`).
fn recorded_revisions(config: &Config) -> crate::db::revisions::Revisions {
    super::wiring::state(config)
        .ok()
        .and_then(|(state, _)| {
            crate::db::revisions::RevisionStore::new(Doc::new(state, StateDir::REVISIONS))
                .load()
                .ok()
        })
        .unwrap_or_default()
}

fn deployment_table(list: &[Deployment], revisions: &crate::db::revisions::Revisions) {
    println!(
        "{:<28} {:<12} {:<22} {:<12} {:<14} BRANCH",
        "ID", "STATUS", "CREATED", "GIT SHA", "SCHEMA"
    );
    for d in list {
        println!(
            "{:<28} {:<12} {:<22} {:<12} {:<14} {}",
            d.id,
            d.status,
            humantime::format_rfc3339_seconds(d.created_at).to_string(),
            d.git_sha
                .as_deref()
                .map(|s| &s[..s.len().min(10)])
                .unwrap_or("-"),
            revisions
                .deployments
                .get(&d.id)
                .map_or("-", |r| r.revision.as_str()),
            d.git_branch.as_deref().unwrap_or("-")
        );
    }
}

/// `rollbackd revisions`: the schema revision recorded for each deployment.
pub(super) fn revisions(config: &Config, json: bool) -> Exit {
    let (state, _) = super::wiring::state(config).map_err(CliError::usage)?;
    let store = crate::db::revisions::RevisionStore::new(Doc::new(state, StateDir::REVISIONS));
    let revisions = store.load()?;
    if json {
        return print_json(&revisions);
    }
    if revisions.deployments.is_empty() {
        println!("no revisions recorded yet (`rollbackd watch` records the live deployment's, with a [database] and [migrations])");
        return Ok(());
    }
    println!("{:<28} {:<14} SEEN", "DEPLOYMENT", "SCHEMA");
    let mut rows: Vec<_> = revisions.deployments.iter().collect();
    rows.sort_by(|a, b| b.1.seen_at.cmp(&a.1.seen_at));
    for (deployment, seen) in rows {
        println!("{deployment:<28} {:<14} {}", seen.revision, seen.seen_at);
    }
    Ok(())
}

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> Exit {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            Ok(())
        }
        Err(e) => Err(CliError::Failed(format!("cannot encode JSON: {e}"))),
    }
}

pub(super) async fn deployments(config: &Config, cmd: DeploymentsCommand) -> Exit {
    let provider = super::wiring::provider(config).map_err(CliError::usage)?;
    match cmd {
        DeploymentsCommand::List { limit, json } => {
            if limit == 0 {
                return Err(CliError::Usage("--limit must be at least 1".into()));
            }
            match provider.list(limit).await {
                Ok(list) if json => print_json(&list),
                Ok(list) => {
                    deployment_table(&list, &recorded_revisions(config));
                    Ok(())
                }
                Err(e) => Err(CliError::Failed(format!("cannot list deployments: {e}"))),
            }
        }
        DeploymentsCommand::Previous { json } => {
            let engine = match super::wiring::engine_with(config, provider, None) {
                Ok(e) => Arc::new(e),
                Err(e) => return Err(CliError::Usage(e.to_string())),
            };
            let req = RollbackRequest {
                trigger: Trigger::Manual,
                policy: Policy::DryRun,
                reason: String::new(),
                deployment_id: None,
                skip_db: true,
                db_target: None,
                base_url: Some("http://unused".into()),
                pending_id: None,
                joined: Default::default(),
                at: tokio::time::Instant::now(),
                detected: None,
                blame: None,
            };
            match engine.plan(&req).await {
                Ok(plan) if json => print_json(&plan.target),
                Ok(plan) => {
                    println!(
                        "previous good deployment (the one `rollbackd rollback` would go back to):"
                    );
                    deployment_table(&[plan.target], &recorded_revisions(config));
                    Ok(())
                }
                Err(e) => Err(CliError::Failed(e.to_string())),
            }
        }
        DeploymentsCommand::Status {
            deployment_id,
            json,
        } => match provider.status(&deployment_id).await {
            Ok(d) if json => print_json(&d),
            Ok(d) => {
                deployment_table(&[d], &recorded_revisions(config));
                Ok(())
            }
            Err(e) => Err(CliError::Failed(e.to_string())),
        },
    }
}

pub(super) async fn validate(config: &Config, args: ValidateArgs) -> Exit {
    let Some(base_url) = args
        .base_url
        .clone()
        .or_else(|| config.service.base_url.clone())
    else {
        return Err(CliError::Usage(
            "validate needs --base-url URL (or [service] base_url in the config)".into(),
        ));
    };
    match reqwest::Url::parse(&base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(CliError::Usage(format!(
                "--base-url {base_url:?} is not an http(s) URL"
            )))
        }
    }
    let client = match verify::client() {
        Ok(c) => c,
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot build the HTTP client: {e}"
            )))
        }
    };
    let wait = Duration::from_secs(args.wait);
    let per_attempt =
        (config.verify.check_timeout + Duration::from_secs(1)) * config.verify.phases.len() as u32;
    let budget = wait + args.retry_for + per_attempt;
    let started = Instant::now();
    // Without --retry-for each phase is tried once: a failing one is the
    // answer, not a reason to keep asking until the budget runs out.
    let mut verify_config = config.verify.clone();
    if args.retry_for.is_zero() {
        verify_config.retry_interval = budget;
    }
    let report = verify::verify(&client, &base_url, &verify_config, wait, budget, &|_| {}).await;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", verify::phases::table(&report));
        println!(
            "{} in {:.1}s",
            if report.passed { "PASSED" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if let Some(why) = &report.stopped {
            println!("{why}");
        }
    }
    if report.passed {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

pub(super) async fn breaker(config: &Config, cmd: BreakerCommand) -> Exit {
    let state = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let store = engine::BreakerStore::new(Doc::new(state.clone(), StateDir::BREAKER));
    let now = SystemTime::now();
    match cmd {
        BreakerCommand::Status { json } => {
            let record = store.load();
            let state = store.state(now, config.engine.half_open_after);
            if json {
                let record = record.unwrap_or_default();
                print_json(&serde_json::json!({
                    "state": state.as_str(),
                    "since": record.since,
                    "reason": record.reason,
                    "rollback_id": record.rollback_id,
                }))?;
            } else {
                match record {
                    Ok(r) if r.since.is_empty() => println!("{} (never opened)", state.as_str()),
                    Ok(r) => println!("{} since {}: {}", state.as_str(), r.since, r.reason),
                    Err(e) => println!("{}: {e}", state.as_str()),
                }
            }
            if state == engine::BreakerState::Open {
                Err(CliError::Reported)
            } else {
                Ok(())
            }
        }
        BreakerCommand::Reset {
            reason,
            resume_sync,
        } => {
            // A rollback a killed rollbackd left unfinished is settled first:
            // resetting its breaker would let deploys go ahead over it.
            let journals = engine::journal::JournalStore::new(state.clone());
            match journals.unfinished() {
                Ok(left) if left.is_empty() => {}
                Ok(left) => {
                    let engine = match engine(config) {
                        Ok(e) => e,
                        Err(_) => {
                            return Err(CliError::Failed(format!("rollback {} was left unfinished by a stopped rollbackd; start `rollbackd watch` to settle it, then reset the breaker", left[0].id)));
                        }
                    };
                    let settled = engine.recover().await;
                    // What settling sent (a page for an unknown outcome) goes out first.
                    if let Some(notifiers) = engine.notifiers() {
                        notifiers.flush(Duration::from_secs(15)).await;
                    }
                    match settled {
                        Ok(settled) => {
                            for s in &settled {
                                println!("{}", s.summary());
                            }
                            if settled
                                .iter()
                                .any(|s| matches!(s, engine::Settled::Resumed { .. }))
                            {
                                return Err(CliError::Failed("a rollback left unfinished was finished first (see above) and the breaker was not reset: check the service, then reset it again".into()));
                            }
                        }
                        Err(e) => {
                            return Err(CliError::Failed(e.to_string()));
                        }
                    }
                }
                Err(e) => {
                    return Err(CliError::Failed(e.to_string()));
                }
            }
            let _lock = rollback_lock(&state, "the breaker cannot be reset until it ends")?;
            if let Err(e) = store.close(now, &reason) {
                return Err(CliError::Failed(e.to_string()));
            }
            println!("breaker CLOSED ({reason}); deploys may go ahead");
            held_on_the_platform(config, resume_sync).await
        }
    }
}

/// After a reset: gives back what a rollback holds on the platform (with
/// `--resume-sync`), or says that it still holds it.
async fn held_on_the_platform(config: &Config, resume: bool) -> Exit {
    let provider = match (super::wiring::provider(config), resume) {
        (Ok(p), _) => p,
        (Err(e), true) => {
            return Err(CliError::Failed(format!("--resume-sync: {e}")));
        }
        (Err(_), false) => return Ok(()),
    };
    if resume {
        return match provider.resume_sync().await {
            Ok(Some(done)) => {
                println!("{done}");
                Ok(())
            }
            Ok(None) => {
                println!("nothing to resume: rollbackd holds nothing off on the platform");
                Ok(())
            }
            Err(e) => Err(CliError::Failed(format!(
                "automated sync could not be turned back on: {e}"
            ))),
        };
    }
    match tokio::time::timeout(Duration::from_secs(15), provider.held()).await {
        Ok(Ok(Some(held))) => println!("NOTE: {held}"),
        Ok(Err(e)) => {
            eprintln!("rollbackd: cannot tell whether rollbackd holds automated sync off: {e}")
        }
        _ => {}
    }
    Ok(())
}

/// The rollback lock for an operator's command that must not run beside a
/// rollback; `Err` has said why (`busy`: what the operator is told to do).
pub(super) fn rollback_lock(
    state: &std::sync::Arc<dyn crate::state::StateStore>,
    busy: &str,
) -> Result<crate::state::StateLock, CliError> {
    match state.try_lock() {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(CliError::Failed(format!("a rollback is running; {busy}"))),
        Err(e) => Err(CliError::Failed(format!(
            "cannot take the rollback lock {}: {e}",
            state.location(StateDir::LOCK).display()
        ))),
    }
}
