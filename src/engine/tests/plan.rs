//! Planning and the database side on fakes: what the plan says and
//! chooses, which downgrades it allows, backups, recorded revisions.

use std::time::Duration;

use super::{automatic, outcomes, rig_with_database};
use crate::engine::testing::{migrations, with_database, Call, Rig};
use crate::engine::BreakerState;
use crate::engine::Phase;
use crate::history::{EventKind, TriggerKind};

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
async fn a_database_step_that_must_stop_the_run_leaves_the_application_alone() {
    let (rig, _) = rig_with_database("c3", None, |_| {});
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
    assert!(event.backup_warning.is_some(), "{event:?}");
    assert!(!event.touched_production());
}

#[tokio::test(start_paused = true)]
async fn a_destructive_downgrade_is_skipped_and_the_application_still_rolls_back() {
    let (rig, _) = rig_with_database("c3", Some("ALTER TABLE items DROP COLUMN note;\n"), |_| {});
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
    let (rig, _) = rig_with_database("c3", None, |c| c.backup_required = true);
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
    assert_eq!(rig.delivered().await, [RollbackFailed]);
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
    let rig = Rig::new(with_database(tool.clone(), |_| {}));
    let recorded = rig.engine.record_revision().await.unwrap();
    assert_eq!(recorded, Some(("d2".to_string(), "c3".to_string())));
    // The first sighting wins: a later migration does not rewrite d2's revision.
    *tool.current.lock().unwrap() = Some("d4".into());
    rig.engine.record_revision().await.unwrap();
    let db = rig.engine.db.as_ref().unwrap();
    assert_eq!(db.revisions.get("d2").as_deref(), Some("c3"));
}

#[tokio::test(start_paused = true)]
async fn no_revision_is_recorded_while_a_newer_deploy_is_on_its_way() {
    let (rig, _) = rig_with_database("c3", None, |_| {});
    // Its migrations may already have run: the database no longer says what d2 runs.
    rig.platform.begin_deploy("d3", "BUILDING");
    assert_eq!(rig.engine.record_revision().await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_newer_deploy_that_failed_does_not_keep_the_revision_from_being_recorded() {
    let (rig, _) = rig_with_database("c3", None, |_| {});
    rig.platform.begin_deploy("d3", "FAILED");
    assert_eq!(
        rig.engine.record_revision().await.unwrap(),
        Some(("d2".to_string(), "c3".to_string()))
    );
}

#[tokio::test(start_paused = true)]
async fn the_plan_reads_as_the_operator_sees_it() {
    let (rig, _) = rig_with_database(
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

/// Whether the downgrade c3 -> b2 by `sql` is `planned`, with
/// `allow_destructive` set to `allow`.
async fn a_downgrade_is_planned(sql: &str, allow: bool, planned: bool) {
    let (rig, _) = rig_with_database("c3", Some(sql), |c| c.allow_destructive = allow);
    let plan = rig.engine.plan(&automatic()).await.unwrap();
    assert_eq!(
        plan.database
            .starts_with("alembic downgrade c3 -> b2 under advisory lock"),
        planned,
        "{sql} (allow_destructive {allow}): {}",
        plan.database
    );
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_that_destroys_nothing_is_planned() {
    a_downgrade_is_planned("UPDATE alembic_version SET version_num='b2';", false, true).await;
}

#[tokio::test(start_paused = true)]
async fn a_destructive_downgrade_is_planned_when_allowed() {
    a_downgrade_is_planned("ALTER TABLE items DROP COLUMN note;", true, true).await;
}

#[tokio::test(start_paused = true)]
async fn a_destructive_downgrade_is_not_planned_unless_allowed() {
    a_downgrade_is_planned("ALTER TABLE items DROP COLUMN note;", false, false).await;
}

#[tokio::test(start_paused = true)]
async fn skip_db_skips_the_backup_and_the_database_even_when_configured() {
    let (rig, _) = rig_with_database("c3", None, |_| {});
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
    assert!(report.event.backup_warning.is_none(), "no backup was tried");
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
