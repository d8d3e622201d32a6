//! `[provider]`: the deploy platform, Railway or operator commands. Data, its
//! checks, and where each value falls back to the environment; nothing here
//! talks to the platform.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

/// The deploy platform, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProviderConfig {
    Railway(RailwayConfig),
    Command(CommandConfig),
    Argocd(super::argocd::config::ArgocdConfig),
}

impl ProviderConfig {
    /// Whether the provider can read a deployment's logs.
    pub fn reads_logs(&self) -> bool {
        match self {
            ProviderConfig::Railway(_) => true,
            ProviderConfig::Command(c) => c.logs.is_some(),
            ProviderConfig::Argocd(_) => false,
        }
    }

    /// How old a deployment may be and still be a rollback target.
    pub fn retention(&self) -> Option<Duration> {
        match self {
            ProviderConfig::Railway(r) => Some(r.retention),
            ProviderConfig::Command(c) => c.retention,
            ProviderConfig::Argocd(a) => a.retention,
        }
    }

    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        match self {
            ProviderConfig::Railway(r) => r.validate(problems),
            ProviderConfig::Command(c) => c.validate(problems),
            ProviderConfig::Argocd(a) => a.validate(problems),
        }
    }
}

/// Railway's public GraphQL API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RailwayConfig {
    pub endpoint: String,
    /// The token; without it RAILWAY_TOKEN (a project token) or
    /// RAILWAY_API_TOKEN (an account or team token) is read.
    pub token: Option<Secret>,
    pub token_kind: Option<TokenKind>,
    /// Default RAILWAY_PROJECT_ID.
    pub project_id: Option<String>,
    /// Default RAILWAY_SERVICE_ID.
    pub service_id: Option<String>,
    /// Default RAILWAY_ENVIRONMENT_ID.
    pub environment_id: Option<String>,
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Railway cannot roll back to deployments older than about two weeks.
    #[serde(with = "duration::serde_str")]
    pub retention: Duration,
    /// See [`super::DeployProvider::list_settle`].
    #[serde(with = "duration::serde_str")]
    pub list_settle: Duration,
}

impl Default for RailwayConfig {
    fn default() -> Self {
        RailwayConfig {
            endpoint: "https://backboard.railway.com/graphql/v2".into(),
            token: None,
            token_kind: None,
            project_id: None,
            service_id: None,
            environment_id: None,
            timeout: Duration::from_secs(15),
            retention: Duration::from_secs(14 * 24 * 3600),
            list_settle: super::DEFAULT_LIST_SETTLE,
        }
    }
}

/// How a Railway token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `project-access-token: <token>`
    Project,
    /// `Authorization: Bearer <token>`
    Account,
}

/// A Railway setting that is neither in the config nor in the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissingSetting {
    /// No token in `provider.token`, RAILWAY_TOKEN or RAILWAY_API_TOKEN.
    #[error(
        "provider.token: no Railway token; set provider.token, RAILWAY_TOKEN (a project token) \
         or RAILWAY_API_TOKEN (an account or team token)"
    )]
    Token,
    /// No `provider.project_id` or RAILWAY_PROJECT_ID.
    #[error("provider.project_id: not set (or set RAILWAY_PROJECT_ID)")]
    ProjectId,
    /// No `provider.service_id` or RAILWAY_SERVICE_ID.
    #[error("provider.service_id: not set (or set RAILWAY_SERVICE_ID)")]
    ServiceId,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl RailwayConfig {
    pub fn token(&self) -> Result<(TokenKind, String), MissingSetting> {
        if let Some(token) = &self.token {
            return Ok((
                self.token_kind.unwrap_or(TokenKind::Project),
                token.expose().to_string(),
            ));
        }
        if let Some(token) = env_nonempty("RAILWAY_TOKEN") {
            return Ok((self.token_kind.unwrap_or(TokenKind::Project), token));
        }
        if let Some(token) = env_nonempty("RAILWAY_API_TOKEN") {
            return Ok((self.token_kind.unwrap_or(TokenKind::Account), token));
        }
        Err(MissingSetting::Token)
    }

    pub fn project_id(&self) -> Result<String, MissingSetting> {
        self.project_id
            .clone()
            .or_else(|| env_nonempty("RAILWAY_PROJECT_ID"))
            .ok_or(MissingSetting::ProjectId)
    }

    pub fn service_id(&self) -> Result<String, MissingSetting> {
        self.service_id
            .clone()
            .or_else(|| env_nonempty("RAILWAY_SERVICE_ID"))
            .ok_or(MissingSetting::ServiceId)
    }

    pub fn environment_id(&self) -> Option<String> {
        self.environment_id
            .clone()
            .or_else(|| env_nonempty("RAILWAY_ENVIRONMENT_ID"))
    }

    /// Adds a message per unusable value to `problems`; no I/O (the
    /// environment fallbacks are read when the provider is built).
    pub fn validate(&self, problems: &mut Vec<String>) {
        check_list_settle(self.list_settle, problems);
        if reqwest::Url::parse(&self.endpoint).is_err() {
            problems.push(format!(
                "provider.endpoint: {:?} is not a URL",
                self.endpoint
            ));
        }
    }
}

/// Operator commands for list / status / rollback (see `provider::command`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub list: Vec<String>,
    pub status: Vec<String>,
    pub rollback: Vec<String>,
    /// Optional: prints a deployment's log lines (start-up error checks).
    #[serde(default)]
    pub logs: Option<Vec<String>>,
    /// Optional: cancels `ROLLBACKD_DEPLOYMENT_ID`, a deployment still in
    /// progress that blame found responsible for a breach.
    #[serde(default)]
    pub cancel: Option<Vec<String>>,
    #[serde(with = "duration::serde_str", default = "command_timeout")]
    pub timeout: Duration,
    #[serde(with = "duration::opt_serde_str", default)]
    pub retention: Option<Duration>,
    /// See [`super::DeployProvider::list_settle`].
    #[serde(with = "duration::serde_str", default = "list_settle")]
    pub list_settle: Duration,
}

fn command_timeout() -> Duration {
    super::command::DEFAULT_TIMEOUT
}

fn list_settle() -> Duration {
    super::DEFAULT_LIST_SETTLE
}

/// The longest `provider.list_settle` accepted: a restart waits that long
/// before it may call the platform again.
const MAX_LIST_SETTLE: Duration = Duration::from_secs(30 * 60);

pub(super) fn check_list_settle(settle: Duration, problems: &mut Vec<String>) {
    if settle > MAX_LIST_SETTLE {
        problems.push(format!(
            "provider.list_settle: {} is longer than {}; it is how long a restart waits for the platform to list what an interrupted call created",
            duration::format(settle),
            duration::format(MAX_LIST_SETTLE)
        ));
    }
}

impl CommandConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        check_list_settle(self.list_settle, problems);
        for (name, argv) in [
            ("list", &self.list),
            ("status", &self.status),
            ("rollback", &self.rollback),
        ] {
            if argv.is_empty() {
                problems.push(format!(
                    "provider.{name}: give the command as a list, like [\"./deploy.sh\", \"{name}\"]"
                ));
            }
        }
        for (name, argv) in [("logs", &self.logs), ("cancel", &self.cancel)] {
            if argv.as_ref().is_some_and(Vec::is_empty) {
                problems.push(format!(
                    "provider.{name}: give the command as a list, like [\"./deploy.sh\", \"{name}\"], or leave it out"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_railway_settings_read_as_before() {
        assert_eq!(
            MissingSetting::Token.to_string(),
            "provider.token: no Railway token; set provider.token, RAILWAY_TOKEN (a project token) \
             or RAILWAY_API_TOKEN (an account or team token)"
        );
        assert_eq!(
            MissingSetting::ServiceId.to_string(),
            "provider.service_id: not set (or set RAILWAY_SERVICE_ID)"
        );
    }
}
