//! The engine's section of the configuration (`[engine]`): where its state
//! lives, the guards' limits, confirmations, the breaker's timing and each
//! phase's budget. Checked purely; never read from anywhere but here.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outcome::Phase;
use crate::duration;

/// What `confirm` does when nobody answers in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmDefault {
    Reject,
    Approve,
}

/// The rollback engine: state, guards and phase budgets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// History, breaker state and the rollback lock live here.
    pub state_dir: PathBuf,
    /// Least time between two automatic rollbacks.
    #[serde(with = "duration::serde_str")]
    pub cooldown: Duration,
    /// At most this many automatic rollbacks per `auto_window`.
    pub max_auto_rollbacks: u32,
    #[serde(with = "duration::serde_str")]
    pub auto_window: Duration,
    /// Roll back automatically only when the live deployment is younger than
    /// this: an older one cannot be blamed for a new regression.
    #[serde(with = "duration::serde_str")]
    pub max_deploy_age: Duration,
    /// How long a `confirm` rollback waits for an operator.
    #[serde(with = "duration::serde_str")]
    pub confirm_timeout: Duration,
    pub confirm_default: ConfirmDefault,
    /// The breaker goes from OPEN to HALF_OPEN this long after a successful rollback…
    #[serde(with = "duration::serde_str")]
    pub half_open_after: Duration,
    /// …and to CLOSED once no rule has been pending or firing for this long.
    #[serde(with = "duration::serde_str")]
    pub close_after: Duration,
    /// Rules firing within this window make one rollback.
    #[serde(with = "duration::serde_str")]
    pub coalesce: Duration,
    /// How old a deployment list the guards and the plan may use. While a
    /// rule is pending, rollbackd keeps one this fresh; the platform call
    /// always uses one asked for after the rule fired.
    #[serde(with = "duration::serde_str")]
    pub deployments_max_age: Duration,
    /// How often a rollback in progress asks the platform for news.
    #[serde(with = "duration::serde_str")]
    pub poll_interval: Duration,
    pub budgets: Budgets,
    /// How much history is kept.
    pub history: crate::history::Retention,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            state_dir: PathBuf::from("state"),
            cooldown: Duration::from_secs(15 * 60),
            max_auto_rollbacks: 3,
            auto_window: Duration::from_secs(3600),
            max_deploy_age: Duration::from_secs(2 * 3600),
            confirm_timeout: Duration::from_secs(15 * 60),
            confirm_default: ConfirmDefault::Reject,
            half_open_after: Duration::from_secs(5 * 60),
            close_after: Duration::from_secs(5 * 60),
            coalesce: Duration::from_secs(2),
            deployments_max_age: Duration::from_secs(5),
            poll_interval: Duration::from_secs(3),
            budgets: Budgets::default(),
            history: crate::history::Retention::default(),
        }
    }
}

/// Each phase's maximum time (the seed's budgets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budgets {
    #[serde(with = "duration::serde_str")]
    pub pre_validation: Duration,
    #[serde(with = "duration::serde_str")]
    pub database: Duration,
    #[serde(with = "duration::serde_str")]
    pub application: Duration,
    #[serde(with = "duration::serde_str")]
    pub verification: Duration,
    #[serde(with = "duration::serde_str")]
    pub post_rollback: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            pre_validation: Duration::from_secs(90),
            database: Duration::from_secs(120),
            application: Duration::from_secs(180),
            verification: Duration::from_secs(120),
            post_rollback: Duration::from_secs(60),
        }
    }
}

impl EngineConfig {
    /// A phase's maximum time.
    pub fn budget(&self, phase: Phase) -> Duration {
        let b = &self.budgets;
        match phase {
            Phase::PreValidation => b.pre_validation,
            Phase::Database => b.database,
            Phase::Application => b.application,
            Phase::Verification => b.verification,
            Phase::PostRollback => b.post_rollback,
        }
    }

    /// Adds what is wrong with this section to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        self.history.validate(problems);
        for phase in Phase::ALL {
            if self.budget(phase).is_zero() {
                problems.push(format!(
                    "engine.budgets.{}: must be greater than 0s",
                    phase.as_str()
                ));
            }
        }
        if self.deployments_max_age > Duration::from_secs(60) {
            problems.push(
                "engine.deployments_max_age: at most 1m (a rollback must not be planned from an old deployment list)".into(),
            );
        }
        if self.poll_interval.is_zero() {
            problems.push("engine.poll_interval: must be greater than 0s".into());
        }
        if self.max_auto_rollbacks > 1000 {
            problems.push("engine.max_auto_rollbacks: at most 1000 (0 allows none)".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_budget_or_poll_interval_is_named() {
        let mut config = EngineConfig::default();
        let mut problems = Vec::new();
        config.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        config.budgets.application = Duration::ZERO;
        config.poll_interval = Duration::ZERO;
        config.deployments_max_age = Duration::from_secs(120);
        config.validate(&mut problems);
        assert_eq!(
            problems,
            [
                "engine.budgets.application: must be greater than 0s",
                "engine.deployments_max_age: at most 1m (a rollback must not be planned from an old deployment list)",
                "engine.poll_interval: must be greater than 0s"
            ]
        );
    }
}
