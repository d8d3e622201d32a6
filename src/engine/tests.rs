//! The engine's decisions on fakes and tokio's paused clock: every phase's
//! outcome, the budgets, the lock, and what the history keeps.

use std::time::Duration;

use super::testing::{Call, Rig, RollbackBehaviour};
use super::{FailureKind, Phase, PhaseOutcome, RollbackRequest, SkipReason, Trigger};
use crate::engine::BreakerState;
use crate::history::{EventKind, TriggerKind};
use crate::rules::Policy;

fn automatic() -> RollbackRequest {
    RollbackRequest {
        trigger: Trigger::Rules(vec![crate::history::RuleTrigger {
            group: "service".into(),
            rule: "HighErrorRate".into(),
            value: Some(0.05),
            condition: "> 0.00025".into(),
        }]),
        policy: Policy::Auto,
        reason: "rule fired".into(),
        deployment_id: None,
        skip_db: false,
        base_url: None,
        pending_id: None,
    }
}

fn outcomes(report: &super::RunReport) -> Vec<(Phase, &'static str, Option<&'static str>)> {
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
    assert_eq!(blocked.guard, "loop", "{}", blocked.reason);
}

#[tokio::test(start_paused = true)]
async fn a_refused_platform_call_fails_and_keeps_the_breaker_open() {
    let rig = Rig::new(|_| {});
    rig.platform.set_behaviour(RollbackBehaviour::Refuse);
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

#[tokio::test(start_paused = true)]
async fn a_deployment_that_ends_failed_fails_the_application_phase() {
    // Named by the platform or not (then found by listing), the deployment
    // the rollback made is recorded although it failed.
    for behaviour in [RollbackBehaviour::Fail, RollbackBehaviour::FailSilently] {
        let rig = Rig::new(|_| {});
        rig.platform.set_behaviour(behaviour);
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
}

#[tokio::test(start_paused = true)]
async fn a_deployment_that_never_succeeds_fails_before_the_budget_with_what_was_seen() {
    let rig = Rig::new(|_| {});
    rig.platform.set_behaviour(RollbackBehaviour::Hang);
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
    let rig = Rig::new(|_| {});
    rig.platform.set_latency(Duration::from_secs(120));
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
    let service = rig.service.clone();
    let engine = rig.engine.clone();
    let report = engine
        .run(automatic(), &move |p| {
            // Healthy for the application phase's /health, then failing.
            if let super::Progress::PhaseStarted(Phase::Verification) = p {
                service.set_unhealthy(true);
            }
        })
        .await;
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
    let service = rig.service.clone();
    let report = rig
        .engine
        .run(automatic(), &move |p| {
            if let super::Progress::PhaseStarted(Phase::Verification) = p {
                service.set_latency(Duration::from_secs(4));
            }
        })
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
async fn planning_reads_and_never_acts() {
    let rig = Rig::new(|_| {});
    let plan = rig.engine.plan(&automatic()).await.unwrap();
    assert_eq!(
        (plan.current.id.as_str(), plan.target.id.as_str()),
        ("d2", "d1")
    );
    assert!(rig.platform.calls().iter().all(|c| *c == Call::List));
    assert!(rig.history().events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_recorded_as_blocked_not_as_a_rollback() {
    let rig = Rig::new(|_| {});
    let blocked = super::Blocked {
        guard: "cooldown",
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
async fn a_run_announces_its_start_then_its_end_and_a_refused_one_nothing() {
    use crate::notify::NotifyEvent::*;
    let rig = Rig::new(|_| {});
    assert!(rig.engine.run(automatic(), &|_| {}).await.success);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.notices(), [RollbackStarted, RollbackSucceeded]);

    let rig = Rig::new(|_| {});
    rig.platform.set_behaviour(RollbackBehaviour::Refuse);
    assert!(!rig.engine.run(automatic(), &|_| {}).await.success);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.notices(), [RollbackStarted, RollbackFailed]);

    let rig = Rig::new(|_| {});
    let held = rig.engine.try_lock();
    assert!(!rig.engine.run(automatic(), &|_| {}).await.success);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(rig.notices().is_empty(), "nothing ran, nothing to announce");
    drop(held);
}

/// A rig whose database is at `current`, whose downgrade SQL is `sql`, and
/// which recorded revision b2 for d1 (the target).
fn rig_with_database(
    current: &str,
    sql: Option<&str>,
    tweak: impl FnOnce(&mut crate::db::config::DatabaseConfig),
) -> Rig {
    let tool = migrations(current, sql);
    Rig::new(|s| {
        let state = s.config.state_dir.clone();
        let db = super::testing::database(&state, tool, tweak);
        db.revisions.record("d1", "b2").unwrap();
        s.db = Some(db);
    })
}

fn migrations(current: &str, sql: Option<&str>) -> std::sync::Arc<super::testing::FakeMigrations> {
    std::sync::Arc::new(super::testing::FakeMigrations {
        current: std::sync::Mutex::new(Some(current.into())),
        sql: sql.map(str::to_string),
    })
}

#[tokio::test(start_paused = true)]
async fn a_database_step_that_must_stop_the_run_leaves_the_application_alone() {
    let rig = rig_with_database("c3", None, |_| {});
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert_eq!(
        outcomes(&report)[1..4],
        [
            (Phase::Database, "failed", Some("database_refused")),
            (Phase::Application, "skipped", Some("database_failed")),
            (Phase::Verification, "skipped", Some("application_failed")),
        ]
    );
    assert!(report.phases[1]
        .outcome
        .detail()
        .contains("cannot obtain the downgrade SQL c3 -> b2"));
    assert!(
        rig.platform.rollbacks().is_empty(),
        "the application was not rolled back"
    );
    // A failed backup that is not required is a warning, kept in the history.
    let event = &rig.history().events[0];
    assert!(event.extra.contains_key("backup_warning"), "{event:?}");
    assert!(!event.touched_production());
}

#[tokio::test(start_paused = true)]
async fn a_destructive_downgrade_is_skipped_and_the_application_still_rolls_back() {
    let rig = rig_with_database("c3", Some("ALTER TABLE items DROP COLUMN note;\n"), |_| {});
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(
        outcomes(&report)[1],
        (Phase::Database, "skipped", Some("destructive"))
    );
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
}

#[tokio::test(start_paused = true)]
async fn a_required_backup_that_fails_stops_the_run_and_says_so() {
    use crate::notify::NotifyEvent::*;
    let rig = rig_with_database("c3", None, |c| c.backup_required = true);
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert_eq!(
        outcomes(&report)[0],
        (Phase::PreValidation, "failed", Some("backup_failed"))
    );
    assert!(report.phases[0]
        .outcome
        .detail()
        .contains("database.backup_required"));
    assert!(rig.platform.rollbacks().is_empty());
    // The lock was held, so the run is recorded, and people hear that it failed.
    assert_eq!(rig.history().events.len(), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.notices(), [RollbackFailed]);
    let now = rig.engine.clock.now();
    assert_eq!(
        rig.engine.breaker_state(now),
        BreakerState::Closed,
        "never opened"
    );
}

#[tokio::test(start_paused = true)]
async fn the_live_deployments_revision_is_recorded_once() {
    let tool = migrations("c3", None);
    let rig = Rig::new(|s| {
        let state = s.config.state_dir.clone();
        s.db = Some(super::testing::database(&state, tool.clone(), |_| {}));
    });
    let recorded = rig.engine.record_revision().await.unwrap();
    assert_eq!(recorded, Some(("d2".to_string(), "c3".to_string())));
    // The first sighting wins: a later migration does not rewrite d2's revision.
    *tool.current.lock().unwrap() = Some("d4".into());
    rig.engine.record_revision().await.unwrap();
    let db = rig.engine.db.as_ref().unwrap();
    assert_eq!(db.revisions.get("d2").as_deref(), Some("c3"));
}

#[tokio::test(start_paused = true)]
async fn a_platform_that_does_not_name_the_deployment_it_made_is_followed_by_listing() {
    let rig = Rig::new(|_| {});
    rig.platform
        .set_behaviour(RollbackBehaviour::SucceedSilently { polls: 3 });
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
async fn the_application_phase_waits_for_health_to_answer_then_gives_up_in_time() {
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

#[tokio::test(start_paused = true)]
async fn no_revision_is_recorded_while_a_newer_deploy_is_on_its_way() {
    let rig = rig_with_database("c3", None, |_| {});
    // Its migrations may already have run: the database no longer says what d2 runs.
    rig.platform.begin_deploy("d3", "BUILDING");
    assert_eq!(rig.engine.record_revision().await.unwrap(), None);
    // A newer deploy that failed does not stand in the way.
    let rig = rig_with_database("c3", None, |_| {});
    rig.platform.begin_deploy("d3", "FAILED");
    assert_eq!(
        rig.engine.record_revision().await.unwrap(),
        Some(("d2".to_string(), "c3".to_string()))
    );
}

#[tokio::test(start_paused = true)]
async fn the_plan_reads_as_the_operator_sees_it() {
    let rig = rig_with_database(
        "c3",
        Some("ALTER TABLE items DROP COLUMN note;\n\n"),
        |_| {},
    );
    let text = rig.engine.plan(&automatic()).await.unwrap().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("  live now:     d2 (SUCCESS, sha-d2, created "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("  roll back to: d1 (REMOVED, sha-d1, created "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("  backup:       pg_dump of 127.0.0.1:9/app"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("  database:     skipped: the downgrade c3 -> b2 is destructive"),
        "{text}"
    );
    assert_eq!(
        lines[4], "    | ALTER TABLE items DROP COLUMN note;",
        "{text}"
    );
    assert_eq!(lines[5], "  verify at:    http://service.test");
    assert!(
        lines[6].starts_with("    quick: /, /health (all must pass)"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_that_destroys_nothing_is_planned_and_a_destructive_one_when_allowed() {
    for (sql, allow, planned) in [
        ("UPDATE alembic_version SET version_num='b2';", false, true),
        ("ALTER TABLE items DROP COLUMN note;", true, true),
        ("ALTER TABLE items DROP COLUMN note;", false, false),
    ] {
        let rig = rig_with_database("c3", Some(sql), |c| c.allow_destructive = allow);
        let plan = rig.engine.plan(&automatic()).await.unwrap();
        assert_eq!(
            plan.database
                .starts_with("alembic downgrade c3 -> b2 under advisory lock"),
            planned,
            "{sql} (allow_destructive {allow}): {}",
            plan.database
        );
    }
}

#[tokio::test(start_paused = true)]
async fn skip_db_skips_the_backup_and_the_database_even_when_configured() {
    let rig = rig_with_database("c3", None, |_| {});
    let mut req = automatic();
    req.skip_db = true;
    let report = rig.engine.run(req, &|_| {}).await;
    assert!(report.success, "{:?}", report.error);
    let plan = report.plan.as_ref().unwrap();
    assert_eq!(plan.backup, "skipped: --skip-db");
    assert_eq!(
        outcomes(&report)[1],
        (Phase::Database, "skipped", Some("skip_db"))
    );
    assert!(
        !report.event.extra.contains_key("backup_warning"),
        "no backup was tried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_requested_deployment_is_the_target_and_untouched_runs_do_not_rule_one_out() {
    let rig = Rig::new(|_| {});
    // An earlier run from d1 that never reached the platform.
    let mut untouched = crate::history::Event {
        kind: EventKind::Rollback,
        timestamp: crate::clock::seconds(rig.engine.clock.now()),
        from_deployment_id: Some("d1".into()),
        ..Default::default()
    };
    untouched.trigger = TriggerKind::Rule;
    rig.engine.history().append(untouched, None).unwrap();
    rig.platform.push_old(
        "d0",
        "REMOVED",
        Duration::from_secs(86_400),
        rig.engine.clock.now(),
    );
    let mut req = automatic();
    req.deployment_id = Some("d0".into());
    let plan = rig.engine.plan(&req).await.unwrap();
    assert_eq!(plan.target.id, "d0");
    let plan = rig.engine.plan(&automatic()).await.unwrap();
    assert_eq!(
        plan.target.id, "d1",
        "a run that changed nothing moved nothing away"
    );
}
