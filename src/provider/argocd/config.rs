//! `[provider] type = "argocd"`: an Argo CD application, through the REST
//! API the `argocd` CLI and UI use. Data and its checks; no I/O but reading
//! the token file when the client is built.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

/// The environment variable the `argocd` CLI reads its token from.
pub const TOKEN_ENV: &str = "ARGOCD_AUTH_TOKEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgocdConfig {
    /// The Argo CD server, `https://argocd.example.com`.
    pub server: String,
    /// The application's name.
    pub application: String,
    /// The application's namespace, when applications live outside Argo
    /// CD's own (`appNamespace`).
    #[serde(default)]
    pub app_namespace: Option<String>,
    /// The application's project (`project`), when the token is scoped to it.
    #[serde(default)]
    pub project: Option<String>,
    /// The token; without it `token_file`, then `ARGOCD_AUTH_TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A CA bundle for a server whose certificate the system does not trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Each request.
    #[serde(with = "duration::serde_str", default = "request_timeout")]
    pub timeout: Duration,
    /// How long a rollback's sync operation may run before rollbackd stops
    /// waiting for it (the application phase's budget still applies).
    #[serde(with = "duration::serde_str", default = "operation_timeout")]
    pub operation_timeout: Duration,
    /// Whether the rollback prunes resources the target revision lacks.
    #[serde(default)]
    pub prune: bool,
    #[serde(with = "duration::opt_serde_str", default)]
    pub retention: Option<Duration>,
    /// See [`crate::provider::DeployProvider::list_settle`].
    #[serde(with = "duration::serde_str", default = "list_settle")]
    pub list_settle: Duration,
}

fn request_timeout() -> Duration {
    Duration::from_secs(15)
}

fn operation_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn list_settle() -> Duration {
    crate::provider::DEFAULT_LIST_SETTLE
}

/// Why the token cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    File(#[from] crate::secret::TokenFileError),
    #[error("no Argo CD token: set provider.token, provider.token_file or {TOKEN_ENV} (an API token of an account with get, update and sync on the application)")]
    Missing,
}

impl ArgocdConfig {
    /// The token: `token`, else the first line of `token_file`, else
    /// `ARGOCD_AUTH_TOKEN`.
    pub fn token(&self) -> Result<Secret, TokenError> {
        crate::secret::token_from(
            self.token.as_ref(),
            self.token_file.as_deref(),
            "provider.token_file",
            TOKEN_ENV,
        )?
        .ok_or(TokenError::Missing)
    }

    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        super::super::config::check_list_settle(self.list_settle, problems);
        match reqwest::Url::parse(&self.server) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => problems.push(format!(
                "provider.server: {:?} is not an http(s) URL; write the Argo CD server like \"https://argocd.example.com\"",
                self.server
            )),
        }
        if self.application.trim().is_empty() {
            problems.push("provider.application: empty; name the Argo CD application".into());
        }
        if self.token.is_some() && self.token_file.is_some() {
            problems.push(
                "provider.token_file: set provider.token or provider.token_file, not both".into(),
            );
        }
        if self.timeout.is_zero() || self.operation_timeout.is_zero() {
            problems.push(
                "provider.timeout / provider.operation_timeout: must be greater than 0s".into(),
            );
        }
    }
}
