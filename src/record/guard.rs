//! The guards' names, as the history, the metrics, back-tests and logs say
//! them (`crate::engine::guard` holds the guards themselves).

/// Which guard refused an automatic rollback. Its label is what metrics
/// (`rollbackd_rollbacks_blocked_total{guard}`), the history, back-tests
/// and logs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// The deploy breaker is OPEN.
    Breaker,
    /// The last rollback rolled back to the deployment now live.
    Loop,
    /// This deployment was already rolled back automatically.
    SameDeployment,
    Cooldown,
    RateLimit,
    /// The live deployment is too old to blame.
    DeployAge,
    /// A newer deployment is still in progress.
    InProgress,
    /// The platform cannot say what is live.
    Provider,
    /// The history cannot be read.
    History,
    /// Blame found the deploy not to blame.
    Blame,
}

impl Guard {
    pub const ALL: [Guard; 10] = [
        Guard::Breaker,
        Guard::Loop,
        Guard::SameDeployment,
        Guard::Cooldown,
        Guard::RateLimit,
        Guard::DeployAge,
        Guard::InProgress,
        Guard::Provider,
        Guard::History,
        Guard::Blame,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Breaker => "breaker",
            Guard::Loop => "loop",
            Guard::SameDeployment => "same_deployment",
            Guard::Cooldown => "cooldown",
            Guard::RateLimit => "rate_limit",
            Guard::DeployAge => "deploy_age",
            Guard::InProgress => "in_progress",
            Guard::Provider => "provider",
            Guard::History => "history",
            Guard::Blame => "blame",
        }
    }
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
