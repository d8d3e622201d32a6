//! Phase 3: ask the platform to roll back to the target ([`call`]), follow
//! the deployment that creates until it succeeds ([`follow`]), wait for the
//! service to answer `/health` ([`await_health`]), then read the
//! deployment's start-up logs for errors ([`startup_errors`],
//! `verify.startup_logs`). The platform call is made exactly once: a
//! refused or lost call is a failure, never a retry.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::super::journal::Step;
use super::super::outcome::{FailureKind, Phase, PhaseOutcome};
use super::super::plan::Plan;
use super::super::run::Run;
use crate::provider::Deployment;

/// What the platform call left: the deployments that were there before
/// it, and the one it created when the platform names it.
pub(crate) struct Called {
    pub known: BTreeSet<String>,
    pub created: Option<String>,
}

/// The rollback deployment, live: it succeeded and answers `/health`.
pub(crate) struct Live {
    pub deployment: Deployment,
    /// When it first answered `/health`: verification's initial wait counts
    /// from here.
    pub at: Instant,
    /// The phase's detail (what the logs said, what the provider holds).
    pub detail: String,
}

/// Rolls the application back to `plan`'s target and waits until it is
/// live. `resumed` is a call a restarted rollbackd finds already made:
/// it is followed, never made again.
pub(crate) async fn run(
    run: &mut Run<'_>,
    plan: &Plan,
    resumed: Option<Called>,
) -> Result<Live, PhaseOutcome> {
    let engine = run.engine;
    let called = match resumed {
        Some(called) => {
            run.note(
                "resuming: following the rollback the platform was asked for before the restart",
            );
            called
        }
        None => call(run, plan).await?,
    };
    // Stop a little before the phase budget, so the failure says what was
    // last seen instead of only "did not finish".
    let poll = engine.config.poll_interval;
    let deadline = Instant::now()
        + engine
            .config
            .budget(Phase::Application)
            .saturating_sub(poll + std::time::Duration::from_secs(1));
    let deployment = follow(run, &called, deadline).await?;
    let at = await_health(run, plan, &deployment, deadline).await?;
    let logs = startup_errors(run, &deployment, deadline).await?;
    let held = engine
        .provider
        .after_rollback()
        .map(|held| format!("; {held}"))
        .unwrap_or_default();
    let detail = format!(
        "deployment {} is live and answers /health{logs}{held}",
        deployment.id
    );
    Ok(Live {
        deployment,
        at,
        detail,
    })
}

/// Asks the platform, once, to roll back to the target, on a list asked
/// for after the rule fired (the one pre-validation asked for meanwhile,
/// or a new one) that still agrees with the plan.
async fn call(run: &mut Run<'_>, plan: &Plan) -> Result<Called, PhaseOutcome> {
    let engine = run.engine;
    let req = run.req.clone();
    let listed = run
        .wait(engine.deployments_for_call(&req))
        .await
        .map_err(|e| {
            PhaseOutcome::failed(
                FailureKind::ProviderError,
                format!("cannot list deployments: {e}"),
            )
        })?;
    if let Err(why) = crate::engine::listing::still_valid(plan, &listed.deployments) {
        return Err(PhaseOutcome::failed(
            FailureKind::PlanOutdated,
            format!("{why}; the platform was not asked to roll back"),
        ));
    }
    let known: BTreeSet<String> = listed.deployments.iter().map(|d| d.id.clone()).collect();
    // From this line on, the platform may have been asked.
    if let Err(e) = run.calling(&known, &plan.target.id) {
        return Err(PhaseOutcome::failed(
            FailureKind::JournalFailed,
            format!("{e}; the platform was not asked to roll back"),
        ));
    }
    let answer = run.wait(engine.provider.rollback(&plan.target)).await;
    // Whatever the answer, the list no longer says what runs.
    engine.listing.forget();
    let created = match answer {
        Ok(created) => created,
        Err(e) => {
            run.mark_done(Step::PlatformCallAnswered, format!("refused: {e}"));
            return Err(PhaseOutcome::failed(
                FailureKind::PlatformRefused,
                format!("the platform refused the rollback: {e}"),
            ));
        }
    };
    if let Some(id) = &created {
        run.created(id);
    }
    run.mark_done(
        Step::PlatformCallAnswered,
        created.clone().unwrap_or_else(|| "accepted".into()),
    );
    run.note(format!(
        "platform accepted the rollback to {}",
        plan.target.id
    ));
    Ok(Called { known, created })
}

/// Follows the deployment the call created (by its id, or as the one new
/// deployment in the platform's list) until it succeeds.
async fn follow(
    run: &mut Run<'_>,
    called: &Called,
    deadline: Instant,
) -> Result<Deployment, PhaseOutcome> {
    let engine = run.engine;
    let poll = engine.config.poll_interval;
    let mut last_seen = String::from("the new deployment has not appeared yet");
    // What the progress output last said about the deployment.
    let mut announced: Option<(String, String)> = None;
    loop {
        if Instant::now() >= deadline {
            return Err(PhaseOutcome::failed(
                FailureKind::DeploymentTimeout,
                format!(
                    "the rollback deployment did not reach SUCCESS within the application budget; last seen: {last_seen}"
                ),
            ));
        }
        run.wait(tokio::time::sleep(poll)).await;
        let found = match &called.created {
            Some(id) => run.wait(engine.provider.status(id)).await.map(Some),
            None => run
                .wait(engine.provider.list(10))
                .await
                .map(|list| list.into_iter().find(|d| !called.known.contains(&d.id))),
        };
        match found {
            Err(e) => {
                tracing::warn!(error = %e, "following the rollback deployment failed; trying again");
                last_seen = format!("the platform could not be asked: {e}");
            }
            Ok(None) => {}
            Ok(Some(d)) => {
                run.created(&d.id);
                if d.is_success() {
                    run.note(format!(
                        "rollback deployment {} is SUCCESS; waiting for /health",
                        d.id
                    ));
                    return Ok(d);
                }
                if d.has_failed() {
                    return Err(PhaseOutcome::failed(
                        FailureKind::DeploymentFailed,
                        format!("the rollback deployment {} ended {}", d.id, d.status),
                    ));
                }
                last_seen = format!("deployment {} was {}", d.id, d.status);
                let now = Some((d.id.clone(), d.status.to_string()));
                if announced != now {
                    run.note(format!("rollback deployment {} is {}", d.id, d.status));
                    announced = now;
                }
            }
        }
    }
}

/// Waits until the service answers `/health` as `verify.expect_status`
/// says: when it first did.
async fn await_health(
    run: &mut Run<'_>,
    plan: &Plan,
    deployment: &Deployment,
    deadline: Instant,
) -> Result<Instant, PhaseOutcome> {
    let engine = run.engine;
    let url = format!("{}/health", plan.base_url);
    let expect = crate::verify::Expect::status(engine.verify.expect_status.clone());
    loop {
        let check = run
            .wait(crate::verify::check(
                engine.health.as_ref(),
                &url,
                engine.verify.check_timeout,
                &expect,
            ))
            .await;
        if check.healthy {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            return Err(PhaseOutcome::failed(
                FailureKind::ServiceUnhealthy,
                format!(
                    "deployment {} is SUCCESS but {url} kept failing ({}) until the application budget ran out",
                    deployment.id, check.reason
                ),
            ));
        }
        run.wait(tokio::time::sleep(engine.config.poll_interval))
            .await;
    }
}

/// Reads the deployment's logs from its creation until the window after it
/// answered `/health` (waiting for that, within the phase's deadline) and
/// fails the phase on an error line. Logs that cannot be read are a note,
/// not a failure: the rollback has happened and the health phases still run.
async fn startup_errors(
    run: &mut Run<'_>,
    deployment: &crate::provider::Deployment,
    deadline: Instant,
) -> Result<String, PhaseOutcome> {
    let engine = run.engine;
    let config = &engine.verify.startup_logs;
    if !config.enabled_for(engine.provider.reads_logs()) {
        return Ok(String::new());
    }
    let scan = match config.compile() {
        Ok(scan) => scan,
        Err(problems) => {
            run.note(format!(
                "start-up logs not checked: {}",
                problems.join("; ")
            ));
            return Ok(String::new());
        }
    };
    // Reading the logs gets a quarter of what is left before the deadline
    // (at least 5 s), so a slow read is a note, never a blown budget.
    let left = deadline.saturating_duration_since(Instant::now());
    let read_for = (left / 4).max(std::time::Duration::from_secs(5)).min(left);
    let window = config
        .window(engine.verify.initial_wait)
        .min(left.saturating_sub(read_for));
    run.note(format!(
        "reading deployment {}'s logs for start-up errors until {} after it answered /health",
        deployment.id,
        crate::duration::format(window)
    ));
    run.wait(tokio::time::sleep(window)).await;
    let to = engine.clock.now();
    let from = deployment.created_at.min(to);
    let read = tokio::time::timeout(read_for, engine.provider.logs(&deployment.id, from, to));
    let unread = |run: &mut Run<'_>, why: String| {
        run.note(format!(
            "cannot read deployment {}'s logs ({why}); start-up errors were not checked",
            deployment.id
        ));
        Ok("; its logs could not be read".into())
    };
    match run.wait(read).await {
        Err(_) => unread(
            run,
            format!("no answer within {}", crate::duration::format(read_for)),
        ),
        Ok(Err(e)) => unread(run, e.to_string()),
        Ok(Ok(lines)) if lines.is_empty() => {
            run.note(format!(
                "deployment {}'s logs had no lines yet; start-up errors were not seen",
                deployment.id
            ));
            Ok("; its logs had no lines yet".into())
        }
        Ok(Ok(lines)) => match scan.first_error(&lines, from, to) {
            Some(found) => Err(PhaseOutcome::failed(
                FailureKind::StartupErrors,
                format!(
                    "deployment {} answers /health but logged {} error line(s) as it started (verify.startup_logs): {}",
                    deployment.id, found.errors, found.line
                ),
            )),
            None => Ok(format!(
                "; {} log line(s) without start-up errors",
                lines.len()
            )),
        },
    }
}
