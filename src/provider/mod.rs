//! Deploy providers: where deployments are listed and rolled back. One small
//! trait, [`DeployProvider`]; one file per implementation (`railway`,
//! `argocd`, `command`), and one vocabulary for a deployment's state
//! ([`DeploymentStatus`]) each maps its platform's words into. A provider reports what the platform said and never decides
//! anything: choosing a target and following a rollback is the engine's job.

pub mod argocd;
pub(crate) mod command;
pub mod config;
pub(crate) mod railway;
mod status;

pub use status::DeploymentStatus;

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// One deployment as the platform reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    /// What the platform says of it, in rollbackd's words.
    pub status: DeploymentStatus,
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    /// Whether the platform says it can still roll back to this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_rollback: Option<bool>,
}

impl Deployment {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// See [`DeploymentStatus::in_progress`].
    pub fn in_progress(&self) -> bool {
        self.status.in_progress()
    }

    /// See [`DeploymentStatus::has_failed`].
    pub fn has_failed(&self) -> bool {
        self.status.has_failed()
    }

    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.created_at).unwrap_or_default()
    }
}

/// `provider.list_settle`'s default: Railway creates the deployment before
/// it answers the call.
pub const DEFAULT_LIST_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// One line of a deployment's logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub at: Option<SystemTime>,
    /// The level the line carries as structured data (a JSON `level`,
    /// Railway's `level` attribute), if any.
    pub level: Option<String>,
    pub message: String,
}

/// A platform that can list deployments and roll back to one.
pub trait DeployProvider: Send + Sync {
    /// Recent deployments, newest first.
    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Deployment>, ProviderError>>;

    /// One deployment by id.
    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Deployment, ProviderError>>;

    /// Asks the platform to roll back to `target`. Returns the id of the
    /// deployment the rollback created, when the platform says it.
    fn rollback<'a>(
        &'a self,
        target: &'a Deployment,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>>;

    /// Whether [`DeployProvider::cancel`] can stop a deployment in progress.
    fn cancels(&self) -> bool {
        false
    }

    /// Cancels deployment `d`, still in progress (the one to blame for a
    /// breach, so it never goes live). Sent once, never retried.
    fn cancel<'a>(&'a self, d: &'a Deployment) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::Api {
                what: "the provider".into(),
                message: format!(
                    "cannot cancel deployment {}: the provider has no cancel",
                    d.id
                ),
            })
        })
    }

    /// How long after a restart the platform's list is watched for the
    /// deployment an interrupted call created before the call is taken as
    /// never made (`provider.list_settle`): a platform that lists a new
    /// deployment late must not be rolled back twice.
    fn list_settle(&self) -> std::time::Duration {
        DEFAULT_LIST_SETTLE
    }

    /// What the platform keeps in a rollback's state after it (Argo CD:
    /// automated sync stays off), said in the run's record and its
    /// notification.
    fn after_rollback(&self) -> Option<String> {
        None
    }

    /// What rollbackd holds on the platform now (Argo CD: automated sync it
    /// turned off), for `check` and `breaker reset`.
    fn held(&self) -> BoxFuture<'_, Result<Option<String>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }

    /// Gives back what rollbackd held (`breaker reset --resume-sync`): what
    /// was done, or `None` when nothing was held.
    fn resume_sync(&self) -> BoxFuture<'_, Result<Option<String>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }

    /// Whether [`DeployProvider::logs`] can read anything.
    fn reads_logs(&self) -> bool {
        false
    }

    /// Deployment `id`'s log lines between `from` and `to`, oldest first.
    fn logs<'a>(
        &'a self,
        id: &'a str,
        from: SystemTime,
        to: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<LogLine>, ProviderError>> {
        let _ = (id, from, to);
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Why the platform gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach {what}: {message}")]
    Unreachable { what: String, message: String },
    #[error("{what} did not answer within {}", crate::duration::format(*.after))]
    Timeout { what: String, after: Duration },
    #[error("{what} answered HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} refused: {message}")]
    Api { what: String, message: String },
    #[error("cannot understand {what}'s answer: {message}")]
    Decode { what: String, message: String },
    #[error("deployment {0} does not exist (list candidates with `rollbackd deployments list`)")]
    NotFound(String),
}

impl ProviderError {
    /// A small fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Unreachable { .. } => "unreachable",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Http { .. } => "http_status",
            ProviderError::Api { .. } => "refused",
            ProviderError::Decode { .. } => "decode",
            ProviderError::NotFound(_) => "not_found",
        }
    }

    /// Worth asking again (for reads only: a rollback is never retried blindly).
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Unreachable { .. } | ProviderError::Timeout { .. } => true,
            ProviderError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// RFC 3339 timestamps in provider JSON.
pub(crate) mod rfc3339 {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .or_else(|_| humantime::parse_rfc3339_weak(&text))
            .map_err(|e| {
                de::Error::custom(format!(
                    "{text:?} is not a UTC RFC 3339 time like \"2025-01-15T10:30:00Z\": {e}"
                ))
            })
    }
}
