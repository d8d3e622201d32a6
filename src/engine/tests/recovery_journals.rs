//! Recovery from journals written as a killed run leaves them (the
//! database boundaries: the migration lock is PostgreSQL's, so those runs
//! cannot be cut off there on fakes; a journaled refusal or accepted call; a
//! run the history already holds; a corrupt journal), and SIGTERM stopping a
//! run between phases. Runs cut off at each boundary are in `recovery.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::recovery::{journals, killed_on_a_slow_platform, resumed_by, steps};
use super::spawn_run;
use super::{automatic, outcomes, rig_where_rollbacks, rig_with_database, rig_with_latency};
use crate::engine::journal::{Journal, Step};
use crate::engine::testing::{database, FakeMigrations, Rig, RollbackBehaviour};
use crate::engine::{BreakerState, Engine, Phase, PhaseOutcome, RunReport, Settled};
use crate::history::EventKind;
use crate::notify::NotifyEvent;

/// Writes the journal of a run that planned (with the rig's database) the
/// downgrade c3 -> b2, took
/// the lock, opened the breaker, journaled `steps` after those and finished
/// `phases` after pre-validation, then died: what the migration lock, held
/// in PostgreSQL, keeps these tests from reaching by running.
async fn leave_journal(rig: &Rig, steps: &[(Step, &str)], phases: &[(Phase, PhaseOutcome)]) {
    let plan = rig.engine.plan(&automatic()).await.unwrap();
    assert!(
        rig.engine.db.is_none()
            || plan.db_step
                == crate::engine::plan::DbStep::Downgrade {
                    from: "c3".into(),
                    to: "b2".into()
                }
    );
    let mut event = crate::history::Event {
        id: Some("rb-killed".into()),
        timestamp: crate::clock::seconds(rig.engine.clock.now()),
        rules: automatic().trigger.rules().to_vec(),
        ..Default::default()
    };
    let pre = (
        Phase::PreValidation,
        PhaseOutcome::Succeeded("target d1".into()),
    );
    for (phase, outcome) in std::iter::once(&pre).chain(phases) {
        event.phases.push(
            crate::engine::PhaseStep {
                phase: *phase,
                outcome: outcome.clone(),
                elapsed: Duration::from_secs(1),
            }
            .record(),
        );
    }
    let mark = |(step, detail): (Step, &str)| crate::engine::journal::Mark {
        step,
        at: "2026-01-01T00:00:00Z".into(),
        detail: detail.into(),
    };
    let mut marks = vec![
        mark((Step::Started, "d2 -> d1")),
        mark((Step::BreakerOpened, "")),
    ];
    marks.extend(steps.iter().copied().map(mark));
    journals(rig)
        .write(&Journal {
            version: 1,
            id: "rb-killed".into(),
            pid: 1,
            steps: marks,
            breaker_before: None,
            plan: Some(plan),
            known_deployments: ["d2", "d1"].map(String::from).to_vec(),
            request: Default::default(),
            event,
        })
        .unwrap();
    rig.open_breaker("rb-killed", "rollback rb-killed running");
}

/// The downgrade c3 -> b2 started and finished.
const DOWNGRADED: [(Step, &str); 2] = [
    (Step::DowngradeStarted, "c3 -> b2"),
    (Step::DowngradeFinished, "ok; at b2"),
];

/// The database phase, done: it downgraded c3 -> b2.
fn downgrade_phase() -> (Phase, PhaseOutcome) {
    (
        Phase::Database,
        PhaseOutcome::Succeeded("downgraded c3 -> b2".into()),
    )
}

/// A run on a database at c3 that recorded b2 for d1 (the target), dead
/// once it journaled `steps` and finished `phases` (see [`leave_journal`]):
/// the rig, and the migration tool to restart it on.
async fn killed_on_a_database(
    steps: &[(Step, &str)],
    phases: &[(Phase, PhaseOutcome)],
) -> (Rig, Arc<FakeMigrations>) {
    let (rig, tool) = rig_with_database(
        "c3",
        Some("ALTER TABLE items ADD COLUMN note text;\n"),
        |_| {},
    );
    leave_journal(&rig, steps, phases).await;
    (rig, tool)
}

/// `rig`'s engine after a restart, its database on `tool`.
fn restarted_on_the_database(rig: &Rig, tool: Arc<FakeMigrations>) -> Engine {
    rig.restarted(Some(database(rig.state_dir(), tool, |_| {})))
}

/// A run without a database (its phase skipped), dead once it journaled
/// `steps` (see [`leave_journal`]).
async fn killed_without_a_database(steps: &[(Step, &str)]) -> Rig {
    let rig = Rig::new(|_| {});
    let no_database = PhaseOutcome::skipped(crate::engine::SkipReason::NoDatabase, "no db");
    leave_journal(&rig, steps, &[(Phase::Database, no_database)]).await;
    rig
}

/// Runs `automatic()` and stops it (SIGTERM) `after` in: its report.
async fn stopped_after(rig: &Rig, after: Duration) -> RunReport {
    let run = spawn_run(rig);
    tokio::time::sleep(after).await;
    rig.engine.stop();
    run.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn killed_after_the_downgrade_before_the_platform_call_the_rollback_is_finished() {
    let (rig, tool) = killed_on_a_database(&DOWNGRADED, &[downgrade_phase()]).await;
    let report = resumed_by(&restarted_on_the_database(&rig, tool)).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(
        rig.platform.rollbacks(),
        ["d1"],
        "asked once, after the restart"
    );
    let event = &rig.history().events[0];
    assert_eq!(event.resumed_at_phase.as_deref(), Some("application"));
    assert_eq!(event.phases[1].detail, "downgraded c3 -> b2");
}

#[tokio::test(start_paused = true)]
async fn killed_during_a_downgrade_the_run_fails_saying_what_is_unknown_and_the_breaker_stays_open()
{
    // The migration lock is PostgreSQL's (tests/crash.rs kills a real
    // Alembic): write the journal a run killed during the downgrade leaves.
    let (rig, tool) = killed_on_a_database(&[(Step::DowngradeStarted, "c3 -> b2")], &[]).await;
    let restarted = restarted_on_the_database(&rig, tool);
    let report = resumed_by(&restarted).await;
    assert!(!report.success);
    assert_eq!(
        outcomes(&report)[1..4],
        [
            (Phase::Database, "failed", Some("outcome_unknown")),
            (Phase::Application, "skipped", Some("database_failed")),
            (Phase::Verification, "skipped", Some("application_failed")),
        ]
    );
    let detail = report.phases[1].outcome.detail();
    assert!(
        detail.contains("killed during the downgrade c3 -> b2")
            && detail.contains("the database now reports revision c3"),
        "{detail}"
    );
    assert!(rig.platform.rollbacks().is_empty());
    let history = rig.history();
    assert_eq!(history.events.len(), 1);
    assert!(!history.events[0].success);
    let later = rig.engine.clock.now() + Duration::from_secs(86_400);
    assert_eq!(restarted.breaker_state(later), BreakerState::Open);
    assert!(restarted
        .breaker()
        .load()
        .unwrap()
        .reason
        .contains("breaker reset"));
    assert!(rig.delivered().await.contains(&NotifyEvent::RollbackFailed));
}

#[tokio::test(start_paused = true)]
async fn a_run_the_history_already_holds_only_has_its_journal_and_breaker_tidied() {
    let rig = Rig::new(|_| {});
    let report = rig.engine.run(automatic(), &|_| {}).await;
    assert!(report.success);
    // As if killed after the record was written, before the tidying.
    let event = rig.history().events[0].clone();
    let journal = Journal {
        version: 1,
        id: report.id.clone(),
        pid: 1,
        steps: vec![],
        breaker_before: None,
        plan: None,
        known_deployments: vec![],
        request: Default::default(),
        event,
    };
    journals(&rig).write(&journal).unwrap();
    rig.open_breaker(&report.id, "rollback running");
    let settled = rig.restarted(None).recover().await.unwrap();
    assert!(
        matches!(&settled[..], [Settled::Recorded { .. }]),
        "{settled:?}"
    );
    assert_eq!(rig.history().events.len(), 1, "recorded once");
    assert!(journals(&rig).unfinished().unwrap().is_empty());
    let breaker = rig.engine.breaker().load().unwrap();
    assert!(
        breaker.settled_at.is_some() && !breaker.failed,
        "{breaker:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn stopping_between_phases_keeps_the_journal_once_production_was_touched() {
    let rig = rig_where_rollbacks(RollbackBehaviour::Succeed { polls: 3 });
    // SIGTERM while the application phase follows the deployment.
    let report = stopped_after(&rig, Duration::from_secs(4)).await;
    assert!(!report.success);
    assert!(report.error.unwrap().contains("next start finishes it"));
    assert!(rig.history().events.is_empty(), "not recorded yet");
    let left = journals(&rig).unfinished().unwrap();
    assert_eq!(steps(&left[0]).last(), Some(&Step::Stopped));
    let report = resumed_by(&rig.restarted(None)).await;
    assert!(report.success, "{:?}", report.error);
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
}

#[tokio::test(start_paused = true)]
async fn stopping_before_production_was_touched_settles_the_run_at_once() {
    let rig = rig_with_latency(Duration::from_secs(10));
    let report = stopped_after(&rig, Duration::from_secs(5)).await;
    assert!(!report.success);
    assert_eq!(rig.history().events[0].kind, EventKind::Interrupted);
    assert!(journals(&rig).unfinished().unwrap().is_empty());
    assert!(rig.platform.rollbacks().is_empty());
    assert_eq!(
        rig.engine.breaker_state(rig.engine.clock.now()),
        BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_journal_stops_recovery_naming_it_and_is_left_alone() {
    let rig = Rig::new(|_| {});
    let path = journals(&rig).path("rb-0123");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"version\": 1, \"id\"").unwrap();
    let err = rig.engine.recover().await.unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\": 1, \"id\""
    );
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_journaled_as_finished_whose_phase_was_not_is_verified_then_finished() {
    let (rig, tool) = killed_on_a_database(&DOWNGRADED, &[]).await;
    // The database is where the journal says the downgrade left it.
    *tool.current.lock().unwrap() = Some("b2".into());
    let report = resumed_by(&restarted_on_the_database(&rig, tool)).await;
    assert!(report.success, "{:?}", report.error);
    assert!(report.phases[1]
        .outcome
        .detail()
        .contains("verified after the restart"));
    assert_eq!(rig.platform.rollbacks(), ["d1"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_downgrade_left_by_a_stop_is_recorded_as_failed_never_as_interrupted() {
    let (rig, tool) = killed_on_a_database(
        &[
            (Step::DowngradeStarted, "c3 -> b2"),
            (Step::DowngradeFinished, "failed: alembic exited 1"),
            (Step::Stopped, "before application"),
        ],
        &[(
            Phase::Database,
            PhaseOutcome::failed(
                crate::engine::FailureKind::DowngradeFailed,
                "the downgrade c3 -> b2 failed",
            ),
        )],
    )
    .await;
    let restarted = restarted_on_the_database(&rig, tool);
    let report = resumed_by(&restarted).await;
    assert!(!report.success);
    assert_eq!(
        outcomes(&report)[1..3],
        [
            (Phase::Database, "failed", Some("downgrade_failed")),
            (Phase::Application, "skipped", Some("database_failed")),
        ]
    );
    assert!(rig.platform.rollbacks().is_empty());
    assert_eq!(rig.history().events[0].kind, EventKind::Rollback);
    let later = rig.engine.clock.now() + Duration::from_secs(86_400);
    assert_eq!(restarted.breaker_state(later), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn after_a_downgrade_a_deploy_made_while_rollbackd_was_down_is_never_rolled_back_over() {
    let (rig, tool) = killed_on_a_database(&DOWNGRADED, &[downgrade_phase()]).await;
    // An operator deployed a fix while rollbackd was down.
    rig.platform.begin_deploy("d3", "SUCCESS");
    let report = resumed_by(&restarted_on_the_database(&rig, tool)).await;
    assert!(!report.success);
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "failed", Some("outcome_unknown"))
    );
    assert!(report.phases[2]
        .outcome
        .detail()
        .contains("live deployment changed from d2 to d3"));
    assert!(rig.platform.rollbacks().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_journaled_before_the_phase_ended_is_recorded_as_the_refusal() {
    let rig = killed_without_a_database(&[
        (Step::PlatformCallStarted, "d1"),
        (Step::PlatformCallAnswered, "refused: quota exceeded"),
    ])
    .await;
    let report = resumed_by(&rig.restarted(None)).await;
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "failed", Some("platform_refused"))
    );
    assert!(report.error.as_deref().unwrap().contains("quota exceeded"));
    assert!(rig.platform.rollbacks().is_empty(), "never asked again");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_run_recorded_before_its_journal_went_gets_its_breaker_back() {
    let (rig, journal) = killed_on_a_slow_platform(Duration::from_secs(15)).await;
    // As if killed after the interrupted record was written, before the
    // breaker was given back and the journal removed.
    let mut event = journal.event.clone();
    event.kind = EventKind::Interrupted;
    rig.engine.history().append(event, None).unwrap();
    let restarted = rig.restarted(None);
    let settled = restarted.recover().await.unwrap();
    assert!(
        matches!(&settled[..], [Settled::Recorded { .. }]),
        "{settled:?}"
    );
    assert_eq!(
        restarted.breaker_state(rig.engine.clock.now()),
        BreakerState::Closed
    );
    assert_eq!(rig.history().events.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn stopping_after_a_failed_phase_records_the_failure_at_once() {
    let rig = rig_with_latency(Duration::from_secs(10));
    rig.platform.set_behaviour(RollbackBehaviour::Refuse);
    // Stopped while the application phase lists, before the refused call.
    let report = stopped_after(&rig, Duration::from_secs(15)).await;
    // The application phase was running: it ends (refused), the rest is
    // skipped, and the failure is recorded, not left for the next start.
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "failed", Some("platform_refused"))
    );
    assert_eq!(rig.history().events[0].kind, EventKind::Rollback);
    assert!(journals(&rig).unfinished().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_accepted_call_whose_deployment_never_shows_is_unknown_and_never_made_again() {
    let rig = killed_without_a_database(&[
        (Step::PlatformCallStarted, "d1"),
        (Step::PlatformCallAnswered, "accepted"),
    ])
    .await;
    let restarted = rig.restarted(None);
    let report = resumed_by(&restarted).await;
    assert_eq!(
        outcomes(&report)[2],
        (Phase::Application, "failed", Some("outcome_unknown"))
    );
    assert!(report.phases[2]
        .outcome
        .detail()
        .contains("accepted the rollback to d1"));
    assert!(rig.platform.rollbacks().is_empty());
    let later = rig.engine.clock.now() + Duration::from_secs(86_400);
    assert_eq!(restarted.breaker_state(later), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_deploy_made_while_rollbackd_was_down_is_never_taken_for_the_rollbacks_own() {
    let rig = killed_without_a_database(&[(Step::PlatformCallStarted, "d1")]).await;
    // The call never reached the platform; an operator deployed another commit.
    rig.platform.begin_deploy("d3", "SUCCESS");
    let report = resumed_by(&rig.restarted(None)).await;
    assert!(!report.success);
    let detail = report.phases[2].outcome.detail();
    assert!(detail.contains("none of the target's commit"), "{detail}");
    assert!(rig.platform.rollbacks().is_empty());
    assert_ne!(
        rig.history()
            .last_known_good
            .map(|g| g.deployment_id)
            .as_deref(),
        Some("d1")
    );
}
