//! The engine's decisions on fakes and tokio's paused clock: every phase's
//! outcome, the budgets, the lock, progress and notifications, and what the
//! history keeps. Planning and the database side are in `plan.rs`.

mod plan;
mod recovery;
mod recovery_journals;
mod startup;

use std::sync::Arc;
use std::time::Duration;

use super::testing::{migrations, with_database, FakeMigrations, FakeService};
use super::testing::{Rig, RollbackBehaviour};
use super::{FailureKind, Phase, PhaseOutcome, RollbackRequest, RunReport, SkipReason, Trigger};
use crate::engine::BreakerState;
use crate::history::{EventKind, TriggerKind};
use crate::notify::NotifyEvent;
use crate::rules::Policy;

pub(crate) fn automatic() -> RollbackRequest {
    RollbackRequest::new(
        Trigger::Rules(vec![crate::history::RuleTrigger {
            group: "service".into(),
            rule: "HighErrorRate".into(),
            value: Some(0.05),
            condition: "> 0.00025".into(),
        }]),
        Policy::Auto,
        "rule fired".into(),
    )
}

/// A rig whose platform does `behaviour` with a rollback call.
fn rig_where_rollbacks(behaviour: RollbackBehaviour) -> Rig {
    let rig = Rig::new(|_| {});
    rig.platform.set_behaviour(behaviour);
    rig
}

/// A rig whose platform takes `latency` over every call.
fn rig_with_latency(latency: Duration) -> Rig {
    let rig = Rig::new(|_| {});
    rig.platform.set_latency(latency);
    rig
}

/// A rig whose database is at `current`, whose downgrade SQL is `sql`, and
/// which recorded revision b2 for d1 (the target); with its migration tool,
/// to move the database or give it to a restarted engine.
fn rig_with_database(
    current: &str,
    sql: Option<&str>,
    tweak: impl FnOnce(&mut crate::db::config::DatabaseConfig),
) -> (Rig, Arc<FakeMigrations>) {
    let tool = migrations(current, sql);
    let rig = Rig::new(|s| {
        with_database(tool.clone(), tweak)(s);
        let db = s.db.as_ref().expect("the rig's database");
        db.revisions.record("d1", "b2").unwrap();
    });
    (rig, tool)
}

/// Runs `automatic()` in a task of its own.
fn spawn_run(rig: &Rig) -> tokio::task::JoinHandle<RunReport> {
    let engine = rig.engine.clone();
    tokio::spawn(async move { engine.run(automatic(), &|_| {}).await })
}

/// Runs `automatic()`, doing `change` to the service as verification
/// starts.
async fn run_changing_the_service_at_verification(
    rig: &Rig,
    change: impl Fn(&FakeService) + Send + Sync,
) -> RunReport {
    let service = rig.service.clone();
    rig.engine
        .run(automatic(), &move |p| {
            if let super::Progress::PhaseStarted(Phase::Verification) = p {
                change(&service);
            }
        })
        .await
}

fn outcomes(report: &RunReport) -> Vec<(Phase, &'static str, Option<&'static str>)> {
    report
        .phases
        .iter()
        .map(|s| (s.phase, s.outcome.result_label(), s.outcome.reason()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_rollback_runs_every_phase_and_records_the_deployment_it_created() {
    let rig = Rig::new(|_| {});
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(
        outcomes(&report),
        vec![
            (Phase::PreValidation, "succeeded", None),
            (Phase::Database, "skipped", Some("no_database")),
            (Phase::Application, "succeeded", None),
            (Phase::Verification, "succeeded", None),
            (Phase::PostRollback, "succeeded", None),
        ]
    );
    assert_eq!(rig.platform.rollbacks(), vec!["d1".to_string()]);
    let created = rig.platform.live().expect("the redeploy is live");
    let history = rig.history();
    let event = &history.events[0];
    assert_eq!(history.events.len(), 1);
    assert_eq!(event.kind, EventKind::Rollback);
    assert_eq!(event.trigger, TriggerKind::Rule);
    assert_eq!(event.from_deployment_id.as_deref(), Some("d2"));
    assert_eq!(event.target_deployment_id.as_deref(), Some("d1"));
    assert_eq!(
        event.created_deployment_id.as_deref(),
        Some(created.as_str())
    );
    assert!(event.touched_production());
    assert_eq!(history.last_known_good.unwrap().deployment_id, "d1");
    let now = rig.engine.clock.now();
    assert_eq!(rig.engine.breaker_state(now), BreakerState::Open);
    assert_eq!(
        rig.engine
            .breaker_state(now + rig.engine.config.half_open_after),
        BreakerState::HalfOpen
    );
    // The service was asked for /health and then for every verification endpoint.
    let checks = rig.service.checks();
    assert_eq!(checks[0], "http://service.test/health");
    let asked: std::collections::BTreeSet<&str> = checks
        .iter()
        .map(|u| u.trim_start_matches("http://service.test"))
        .collect();
    let expected: std::collections::BTreeSet<&str> = [
        "/",
        "/health",
        "/health/production",
        "/health/critical-services",
        "/health/performance",
        "/health/comprehensive",
        "/health/external-services",
        "/health/circuit-breakers",
    ]
    .into();
    assert_eq!(asked, expected);
}

#[tokio::test(start_paused = true)]
async fn the_deployment_a_rollback_created_is_never_rolled_back_automatically() {
    let rig = Rig::new(|_| {});
    assert!(rig.engine.run(automatic(), &|_| {}).await.success);
    // Long after the breaker and the cooldown: only the loop guard is left.
    let later = rig.engine.clock.now() + Duration::from_secs(3600);
    rig.engine.breaker().close(later, "test").unwrap();
    let blocked = rig.engine.check_automatic(later).await.unwrap_err();
    assert_eq!(
        blocked.guard,
        crate::engine::guard::Guard::Loop,
        "{}",
        blocked.reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_platform_call_fails_and_keeps_the_breaker_open() {
    let rig = rig_where_rollbacks(RollbackBehaviour::Refuse);
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(!report.success);
    assert_eq!(
        outcomes(&report)[2..],
        [
            (Phase::Application, "failed", Some("platform_refused")),
            (Phase::Verification, "skipped", Some("application_failed")),
            (Phase::PostRollback, "succeeded", None),
        ]
    );
    assert!(report
        .error
        .unwrap()
        .starts_with("application: the platform refused"));
    let history = rig.history();
    assert!(history.events[0].touched_production());
    assert!(history.last_known_good.is_none());
    let much_later = rig.engine.clock.now() + Duration::from_secs(86_400);
    assert_eq!(rig.engine.breaker_state(much_later), BreakerState::Open);
}

/// A rollback whose deployment ends FAILED (`behaviour`) fails the
/// application phase, and the deployment it made is recorded although it
/// failed.
async fn a_failed_deployment_fails_the_application_phase(behaviour: RollbackBehaviour) {
    let rig = rig_where_rollbacks(behaviour);
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "failed", Some("deployment_failed"))
    );
    let created = rig.history().events[0].created_deployment_id.clone();
    assert!(
        created
            .as_deref()
            .is_some_and(|id| id.starts_with("d1-redeploy-")),
        "{behaviour:?}: {created:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_the_platform_named_that_ends_failed_fails_the_application_phase() {
    a_failed_deployment_fails_the_application_phase(RollbackBehaviour::Fail).await;
}

#[tokio::test(start_paused = true)]
async fn a_deployment_found_by_listing_that_ends_failed_fails_the_application_phase() {
    a_failed_deployment_fails_the_application_phase(RollbackBehaviour::FailSilently).await;
}

#[tokio::test(start_paused = true)]
async fn a_deployment_that_never_succeeds_fails_before_the_budget_with_what_was_seen() {
    let rig = rig_where_rollbacks(RollbackBehaviour::Hang);
    let started = tokio::time::Instant::now();
    let report = rig.engine.run(automatic(), &|_| {}).await;
    let step = &report.phases[2];
    assert_eq!(
        step.outcome.reason(),
        Some(FailureKind::DeploymentTimeout.as_str())
    );
    assert!(
        step.outcome.detail().contains("was DEPLOYING"),
        "{:?}",
        step.outcome
    );
    assert!(started.elapsed() < rig.engine.config.budgets.application + Duration::from_secs(90));
    // It gives up before the budget would cut it off, to say what it saw.
    assert!(
        step.elapsed < rig.engine.config.budgets.application,
        "{:?}",
        step.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_platform_exceeds_the_pre_validation_budget_and_nothing_changes() {
    let rig = rig_with_latency(Duration::from_secs(120));
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert_eq!(
        outcomes(&report),
        vec![
            (Phase::PreValidation, "failed", Some("budget_exceeded")),
            (Phase::Database, "skipped", Some("pre_validation_failed")),
            (Phase::Application, "skipped", Some("pre_validation_failed")),
            (
                Phase::Verification,
                "skipped",
                Some("pre_validation_failed")
            ),
            (Phase::PostRollback, "skipped", Some("nothing_ran")),
        ]
    );
    assert!(rig.platform.rollbacks().is_empty());
    assert!(rig.history().events.is_empty());
    let now = rig.engine.clock.now();
    assert_eq!(rig.engine.breaker_state(now), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_platform_slower_than_the_application_budget_is_cut_off_and_recorded() {
    let rig = Rig::new(|c| c.config.budgets.application = Duration::from_secs(30));
    let report = {
        let platform = rig.platform.clone();
        // Planning is quick; every call after the plan takes a minute.
        let engine = rig.engine.clone();
        let slow_after_plan = async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            platform.set_latency(Duration::from_secs(60));
        };
        let (report, ()) = tokio::join!(engine.run(automatic(), &|_| {}), slow_after_plan);
        report
    };
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "failed", Some("budget_exceeded"))
    );
    assert_eq!(
        rig.history().events.len(),
        1,
        "a cut-off run is still recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_service_fails_verification_within_its_budget() {
    let rig = Rig::new(|_| {});
    // Healthy for the application phase's /health, then failing.
    let report = run_changing_the_service_at_verification(&rig, |s| s.set_unhealthy(true)).await;
    assert_eq!(
        outcomes(&report)[3],
        (Phase::Verification, "failed", Some("verification_failed"))
    );
    assert!(report.verification.is_some_and(|v| !v.passed));
    assert!(report.phases[3].elapsed < rig.engine.config.budgets.verification);
}

#[tokio::test(start_paused = true)]
async fn a_service_slower_than_the_verification_budget_is_cut_off() {
    let rig = Rig::new(|c| {
        c.config.budgets.verification = Duration::from_secs(3);
        c.verify.initial_wait = Duration::ZERO;
    });
    let report =
        run_changing_the_service_at_verification(&rig, |s| s.set_latency(Duration::from_secs(4)))
            .await;
    assert!(
        matches!(
            report.phases[3].outcome,
            PhaseOutcome::Failed(FailureKind::BudgetExceeded, _)
        ),
        "{:?}",
        report.phases[3].outcome
    );
    assert_eq!(report.phases[3].elapsed, Duration::from_secs(3));
    assert!(!report.success);
}

#[tokio::test(start_paused = true)]
async fn a_second_run_while_the_lock_is_held_changes_nothing() {
    let rig = Rig::new(|_| {});
    let held = rig.engine.try_lock().expect("the lock is free");
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert_eq!(
        outcomes(&report)[0],
        (Phase::PreValidation, "failed", Some("rollback_locked"))
    );
    assert_eq!(
        report.phases[4].outcome.reason(),
        Some(SkipReason::NothingRan.as_str())
    );
    assert!(rig.platform.rollbacks().is_empty());
    assert!(rig.history().events.is_empty());
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_recorded_as_blocked_not_as_a_rollback() {
    let rig = Rig::new(|_| {});
    let blocked = super::Blocked {
        guard: crate::engine::guard::Guard::Cooldown,
        reason: "too soon".into(),
    };
    rig.engine.record_blocked(&automatic(), &blocked);
    let history = rig.history();
    let event = &history.events[0];
    assert_eq!(event.kind, EventKind::Blocked);
    assert!(!event.touched_production());
    assert!(event.id.as_deref().is_some_and(|id| id.starts_with("rb-")));
    assert!(event.time().is_some(), "{}", event.timestamp);
    assert_eq!(event.trigger, TriggerKind::Rule);
    assert_eq!(event.reason, "rule fired");
    assert_eq!(event.policy.as_deref(), Some("auto"));
    assert_eq!(event.rules[0].rule, "HighErrorRate");
    assert_eq!(event.error.as_deref(), Some("cooldown: too soon"));
    assert!(rig
        .engine
        .check_automatic(rig.engine.clock.now())
        .await
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn progress_shows_the_plan_and_each_step_as_it_happens() {
    let rig = Rig::new(|_| {});
    let seen = std::sync::Mutex::new(Vec::new());
    let report = rig
        .engine
        .run(automatic(), &|p| {
            let line = match p {
                super::Progress::Started { .. } => "started".to_string(),
                super::Progress::PhaseStarted(phase) => format!("start {}", phase.as_str()),
                super::Progress::PhaseFinished { phase, .. } => format!("end {}", phase.as_str()),
                super::Progress::Note(text) => {
                    format!("note {}", text.lines().next().unwrap_or(""))
                }
            };
            seen.lock().unwrap().push(line);
        })
        .await;
    assert!(report.success);
    let seen = seen.into_inner().unwrap();
    let position = |needle: &str| {
        seen.iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {seen:?}"))
    };
    assert_eq!(seen[0], "started");
    assert!(position("start pre_validation") < position("note plan:"));
    assert!(position("note plan:") < position("end pre_validation"));
    assert!(position("start application") < position("note platform accepted the rollback to d1"));
    assert!(position("note rollback deployment") < position("end application"));
    assert!(position("note health quick") < position("end verification"));
    assert_eq!(seen.last().unwrap(), "end post_rollback");
}

#[tokio::test(start_paused = true)]
async fn a_run_that_succeeds_announces_its_start_then_its_success() {
    let rig = Rig::new(|_| {});
    assert!(rig.engine.run(automatic(), &|_| {}).await.success);
    assert_eq!(
        rig.delivered().await,
        [NotifyEvent::RollbackStarted, NotifyEvent::RollbackSucceeded]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_that_fails_announces_its_start_then_its_failure() {
    let rig = rig_where_rollbacks(RollbackBehaviour::Refuse);
    assert!(!rig.engine.run(automatic(), &|_| {}).await.success);
    assert_eq!(
        rig.delivered().await,
        [NotifyEvent::RollbackStarted, NotifyEvent::RollbackFailed]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_refused_while_the_lock_is_held_announces_nothing() {
    let rig = Rig::new(|_| {});
    let held = rig.engine.try_lock();
    assert!(!rig.engine.run(automatic(), &|_| {}).await.success);
    assert!(
        rig.delivered().await.is_empty(),
        "nothing ran, nothing to announce"
    );
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn the_start_notification_estimates_the_duration_from_past_rollbacks_or_the_budgets() {
    let rig = Rig::new(|_| {});
    assert!(rig.engine.run(automatic(), &|_| {}).await.success);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = rig.notices.full.lock().unwrap()[0].clone();
    assert_eq!(started.event, crate::notify::NotifyEvent::RollbackStarted);
    // No rollback recorded yet: the phase budgets' sum, 90+120+180+120+60 s.
    assert_eq!(started.estimated_seconds, Some(570.0));
    assert_eq!(
        started.estimated_from.as_deref(),
        Some("at most: the phase budgets; no rollback recorded yet")
    );
    // Now one is: its duration.
    let took = rig.history().events[0].duration_seconds;
    assert_eq!(
        rig.engine.estimated_duration(),
        (
            took,
            "the median of the last 1 successful rollback(s)".to_string()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_platform_that_does_not_name_the_deployment_it_made_is_followed_by_listing() {
    let rig = rig_where_rollbacks(RollbackBehaviour::SucceedSilently { polls: 3 });
    let notes = std::sync::Mutex::new(Vec::new());
    let report = rig
        .engine
        .run(automatic(), &|p| {
            if let super::Progress::Note(text) = p {
                notes.lock().unwrap().push(text);
            }
        })
        .await;
    assert!(report.success, "{:?}", report.error);
    let created = rig.platform.live().unwrap();
    assert!(created.starts_with("d1-redeploy-"), "{created}");
    assert_eq!(
        rig.history().events[0].created_deployment_id.as_deref(),
        Some(created.as_str())
    );
    // Each status it went through is said once.
    let notes = notes.into_inner().unwrap();
    let deploying = format!("rollback deployment {created} is DEPLOYING");
    assert_eq!(
        notes.iter().filter(|n| **n == deploying).count(),
        1,
        "{notes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn post_rollback_says_what_it_recorded() {
    let rig = Rig::new(|_| {});
    let report = rig.engine.run(automatic(), &|_| {}).await;
    let detail = report.phases[4].outcome.detail();
    assert!(
        detail.contains("last known good is d1") && detail.contains("HALF_OPEN in 5m"),
        "{detail}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_application_phase_waits_for_health_to_answer() {
    // Still starting for a few checks: the phase waits.
    let rig = Rig::new(|_| {});
    rig.service.fail_next(3);
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "succeeded", None)
    );
    let health = rig
        .service
        .checks()
        .iter()
        .filter(|u| u.as_str() == "http://service.test/health")
        .count();
    assert!(health >= 4, "asked /health {health} times");
}

#[tokio::test(start_paused = true)]
async fn the_application_phase_gives_up_on_a_service_never_healthy_in_time() {
    // Never healthy: it says so before the budget cuts it off.
    let rig = Rig::new(|_| {});
    rig.service.set_unhealthy(true);
    let report = rig.engine.run(automatic(), &|_| {}).await;
    let step = &report.phases[2];
    assert_eq!(step.outcome.reason(), Some("service_unhealthy"));
    assert!(
        step.outcome.detail().contains("kept failing (HTTP 503)"),
        "{:?}",
        step.outcome
    );
    assert!(step.elapsed < rig.engine.config.budgets.application);
    assert!(
        step.elapsed > Duration::from_secs(150),
        "it kept trying: {:?}",
        step.elapsed
    );
}
