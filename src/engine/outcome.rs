//! What a phase reports, as data: succeeded (with what it did), failed (with
//! a [`FailureKind`]) or skipped (with a [`SkipReason`]), each with the
//! words an operator reads. The orchestrator decides what follows from the
//! kind, never from the words.

use std::time::Duration;

use crate::history::{PhaseName, PhaseRecord, PhaseResult};

/// The five phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Pick the target, take the rollback lock, back up, open the breaker.
    PreValidation,
    /// Undo the deploy's migrations, when that is safe.
    Database,
    /// Ask the platform to roll back and follow it until the service answers.
    Application,
    /// The health phases against the service.
    Verification,
    /// Record the run, settle the breaker.
    PostRollback,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::PreValidation,
        Phase::Database,
        Phase::Application,
        Phase::Verification,
        Phase::PostRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreValidation => "pre_validation",
            Phase::Database => "database",
            Phase::Application => "application",
            Phase::Verification => "verification",
            Phase::PostRollback => "post_rollback",
        }
    }
}

impl From<Phase> for PhaseName {
    fn from(phase: Phase) -> PhaseName {
        match phase {
            Phase::PreValidation => PhaseName::PreValidation,
            Phase::Database => PhaseName::Database,
            Phase::Application => PhaseName::Application,
            Phase::Verification => PhaseName::Verification,
            Phase::PostRollback => PhaseName::PostRollback,
        }
    }
}

/// Why a phase failed: a small fixed set, also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Another rollback holds the rollback lock.
    RollbackLocked,
    /// The rollback lock file cannot be used.
    LockError,
    /// No target, no base URL, or the platform could not list deployments.
    NoPlan,
    /// The emergency backup failed and `database.backup_required` is set.
    BackupFailed,
    /// The breaker file cannot be written.
    BreakerError,
    /// The plan says the run must stop before touching the database.
    DatabaseRefused,
    /// The migration advisory lock was not free in time.
    MigrationLock,
    /// The downgrade itself failed.
    DowngradeFailed,
    /// After the downgrade, the schema is not at the target revision.
    DowngradeUnverified,
    /// The platform could not be asked.
    ProviderError,
    /// The platform refused the rollback call.
    PlatformRefused,
    /// The platform changed between the plan and the call (another
    /// deployment went live, or the target can no longer be rolled back to).
    PlanOutdated,
    /// The rollback deployment ended in a failed state.
    DeploymentFailed,
    /// The rollback deployment did not reach SUCCESS in time.
    DeploymentTimeout,
    /// The deployment is live but the service's /health kept failing.
    ServiceUnhealthy,
    /// The rollback deployment logged errors as it started.
    StartupErrors,
    /// A health phase did not pass.
    VerificationFailed,
    /// The phase ran out of its time budget.
    BudgetExceeded,
    /// The history or breaker could not be written.
    RecordFailed,
    /// The run journal could not be written, so the step was not taken.
    JournalFailed,
    /// rollbackd died during a step whose result it cannot know.
    OutcomeUnknown,
    /// A run journal cannot be read: what that run did is unknown, so no
    /// new rollback starts until it is repaired or quarantined.
    UnreadableJournal,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::RollbackLocked => "rollback_locked",
            FailureKind::LockError => "lock_error",
            FailureKind::NoPlan => "no_plan",
            FailureKind::BackupFailed => "backup_failed",
            FailureKind::BreakerError => "breaker_error",
            FailureKind::DatabaseRefused => "database_refused",
            FailureKind::MigrationLock => "migration_lock",
            FailureKind::DowngradeFailed => "downgrade_failed",
            FailureKind::DowngradeUnverified => "downgrade_unverified",
            FailureKind::ProviderError => "provider_error",
            FailureKind::PlatformRefused => "platform_refused",
            FailureKind::PlanOutdated => "plan_outdated",
            FailureKind::DeploymentFailed => "deployment_failed",
            FailureKind::DeploymentTimeout => "deployment_timeout",
            FailureKind::ServiceUnhealthy => "service_unhealthy",
            FailureKind::StartupErrors => "startup_errors",
            FailureKind::VerificationFailed => "verification_failed",
            FailureKind::BudgetExceeded => "budget_exceeded",
            FailureKind::RecordFailed => "record_failed",
            FailureKind::JournalFailed => "journal_failed",
            FailureKind::OutcomeUnknown => "outcome_unknown",
            FailureKind::UnreadableJournal => "unreadable_journal",
        }
    }

    pub const ALL: [FailureKind; 22] = [
        FailureKind::RollbackLocked,
        FailureKind::LockError,
        FailureKind::NoPlan,
        FailureKind::BackupFailed,
        FailureKind::BreakerError,
        FailureKind::DatabaseRefused,
        FailureKind::MigrationLock,
        FailureKind::DowngradeFailed,
        FailureKind::DowngradeUnverified,
        FailureKind::ProviderError,
        FailureKind::PlatformRefused,
        FailureKind::PlanOutdated,
        FailureKind::DeploymentFailed,
        FailureKind::DeploymentTimeout,
        FailureKind::ServiceUnhealthy,
        FailureKind::StartupErrors,
        FailureKind::VerificationFailed,
        FailureKind::BudgetExceeded,
        FailureKind::RecordFailed,
        FailureKind::JournalFailed,
        FailureKind::OutcomeUnknown,
        FailureKind::UnreadableJournal,
    ];
}

/// Why a phase was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `--skip-db`.
    SkipDb,
    NoDatabase,
    NoMigrationTool,
    /// The database has no `alembic_version`.
    NotUnderMigrationControl,
    /// rollbackd never saw the target live, so it does not know its revision.
    NoRecordedRevision,
    AlreadyAtRevision,
    /// The downgrade would destroy data and `allow_destructive` is not set.
    Destructive,
    /// The database or the migration tool could not be used at planning,
    /// and `database.on_failure = "app_only"`.
    DatabaseUnavailable,
    NothingPlanned,
    PreValidationFailed,
    DatabaseFailed,
    ApplicationFailed,
    /// The lock was never taken: nothing to record.
    NothingRan,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::SkipDb => "skip_db",
            SkipReason::NoDatabase => "no_database",
            SkipReason::NoMigrationTool => "no_migration_tool",
            SkipReason::NotUnderMigrationControl => "not_under_migration_control",
            SkipReason::NoRecordedRevision => "no_recorded_revision",
            SkipReason::AlreadyAtRevision => "already_at_revision",
            SkipReason::Destructive => "destructive",
            SkipReason::DatabaseUnavailable => "database_unavailable",
            SkipReason::NothingPlanned => "nothing_planned",
            SkipReason::PreValidationFailed => "pre_validation_failed",
            SkipReason::DatabaseFailed => "database_failed",
            SkipReason::ApplicationFailed => "application_failed",
            SkipReason::NothingRan => "nothing_ran",
        }
    }

    pub const ALL: [SkipReason; 13] = [
        SkipReason::SkipDb,
        SkipReason::NoDatabase,
        SkipReason::NoMigrationTool,
        SkipReason::NotUnderMigrationControl,
        SkipReason::NoRecordedRevision,
        SkipReason::AlreadyAtRevision,
        SkipReason::Destructive,
        SkipReason::DatabaseUnavailable,
        SkipReason::NothingPlanned,
        SkipReason::PreValidationFailed,
        SkipReason::DatabaseFailed,
        SkipReason::ApplicationFailed,
        SkipReason::NothingRan,
    ];
}

/// What a phase reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PhaseOutcome {
    Succeeded(String),
    Failed(FailureKind, String),
    Skipped(SkipReason, String),
}

impl PhaseOutcome {
    pub fn failed(kind: FailureKind, detail: impl Into<String>) -> PhaseOutcome {
        PhaseOutcome::Failed(kind, detail.into())
    }

    pub fn skipped(reason: SkipReason, detail: impl Into<String>) -> PhaseOutcome {
        PhaseOutcome::Skipped(reason, detail.into())
    }

    pub fn result(&self) -> PhaseResult {
        match self {
            PhaseOutcome::Succeeded(_) => PhaseResult::Succeeded,
            PhaseOutcome::Failed(..) => PhaseResult::Failed,
            PhaseOutcome::Skipped(..) => PhaseResult::Skipped,
        }
    }

    /// `succeeded`, `failed` or `skipped`, for logs and metrics.
    pub fn result_label(&self) -> &'static str {
        match self {
            PhaseOutcome::Succeeded(_) => "succeeded",
            PhaseOutcome::Failed(..) => "failed",
            PhaseOutcome::Skipped(..) => "skipped",
        }
    }

    /// The failure kind or skip reason, as a label.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            PhaseOutcome::Succeeded(_) => None,
            PhaseOutcome::Failed(kind, _) => Some(kind.as_str()),
            PhaseOutcome::Skipped(reason, _) => Some(reason.as_str()),
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            PhaseOutcome::Succeeded(d)
            | PhaseOutcome::Failed(_, d)
            | PhaseOutcome::Skipped(_, d) => d,
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, PhaseOutcome::Succeeded(_))
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, PhaseOutcome::Failed(..))
    }
}

/// One phase as it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseStep {
    pub phase: Phase,
    pub outcome: PhaseOutcome,
    pub elapsed: Duration,
}

impl PhaseStep {
    /// The step a record was written from (a journal read back after a
    /// restart); `None` for a phase this version does not know. A reason it
    /// does not know reads as [`FailureKind::OutcomeUnknown`] or
    /// [`SkipReason::NothingRan`], never as a success.
    pub fn from_record(record: &PhaseRecord) -> Option<PhaseStep> {
        let phase = Phase::ALL
            .into_iter()
            .find(|p| PhaseName::from(*p) == record.name)?;
        let reason = record.reason.as_deref().unwrap_or_default();
        let detail = record.detail.clone();
        let outcome = match record.result {
            PhaseResult::Succeeded => PhaseOutcome::Succeeded(detail),
            PhaseResult::Skipped => PhaseOutcome::Skipped(
                SkipReason::ALL
                    .into_iter()
                    .find(|r| r.as_str() == reason)
                    .unwrap_or(SkipReason::NothingRan),
                detail,
            ),
            _ => PhaseOutcome::Failed(
                FailureKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == reason)
                    .unwrap_or(FailureKind::OutcomeUnknown),
                detail,
            ),
        };
        Some(PhaseStep {
            phase,
            outcome,
            elapsed: Duration::from_secs_f64(record.duration_seconds.max(0.0)),
        })
    }

    pub fn record(&self) -> PhaseRecord {
        PhaseRecord {
            name: self.phase.into(),
            result: self.outcome.result(),
            duration_seconds: round3(self.elapsed.as_secs_f64()),
            detail: self.outcome.detail().to_string(),
            reason: self.outcome.reason().map(str::to_string),
            extra: serde_json::Map::new(),
        }
    }
}

/// Seconds with millisecond precision, as the history writes them.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_recorded_with_millisecond_seconds_and_its_reason() {
        let step = PhaseStep {
            phase: Phase::Application,
            outcome: PhaseOutcome::failed(FailureKind::PlatformRefused, "no"),
            elapsed: Duration::from_micros(1_234_567),
        };
        let record = step.record();
        assert_eq!(record.duration_seconds, 1.235);
        assert_eq!(record.name, PhaseName::Application);
        assert_eq!(record.result, PhaseResult::Failed);
        assert_eq!(record.reason.as_deref(), Some("platform_refused"));
        assert_eq!(round3(0.0004), 0.0);
        let back = PhaseStep::from_record(&record).unwrap();
        assert_eq!((back.phase, back.outcome), (step.phase, step.outcome));
    }

    #[test]
    fn every_outcome_reads_back_from_its_record_and_unknown_reasons_are_never_success() {
        let outcomes = FailureKind::ALL
            .map(|k| PhaseOutcome::failed(k, "x"))
            .into_iter()
            .chain(SkipReason::ALL.map(|r| PhaseOutcome::skipped(r, "y")))
            .chain([PhaseOutcome::Succeeded("z".into())]);
        for outcome in outcomes {
            let step = PhaseStep {
                phase: Phase::Database,
                outcome,
                elapsed: Duration::from_millis(5),
            };
            assert_eq!(PhaseStep::from_record(&step.record()), Some(step));
        }
        let mut odd = PhaseStep {
            phase: Phase::Application,
            outcome: PhaseOutcome::failed(FailureKind::NoPlan, "x"),
            elapsed: Duration::ZERO,
        }
        .record();
        odd.reason = Some("from_a_newer_rollbackd".into());
        assert_eq!(
            PhaseStep::from_record(&odd).unwrap().outcome,
            PhaseOutcome::failed(FailureKind::OutcomeUnknown, "x")
        );
        odd.name = PhaseName::Other("canary".into());
        assert_eq!(PhaseStep::from_record(&odd), None);
        assert_eq!(round3(2.0), 2.0);
    }
}
