//! `[prometheus]`: where rule queries go and how rollbackd authenticates.
//!
//! Only data and its checks live here; nothing in this module opens a
//! connection (reading `bearer_token_file` happens when the client is built).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL of Prometheus (a path prefix such as `/prometheus` is kept).
    pub url: String,
    /// Per-query timeout, also passed to Prometheus so it stops working too.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    /// How many of a group's queries go to Prometheus in one request
    /// (combined with `or`, each answer told apart by a label); 1 sends each
    /// query on its own.
    pub max_queries_per_request: usize,
    /// The largest answer read; past it the query fails with outcome
    /// `too_large` instead of growing rollbackd's memory.
    pub max_response_bytes: u64,
    /// The most series one query may answer with (same outcome past it).
    pub max_series: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(10),
            max_queries_per_request: 20,
            max_response_bytes: 4 << 20,
            max_series: 10_000,
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
        }
    }
}

/// Credentials for Prometheus, resolved from config.
pub enum PrometheusAuth {
    Bearer(String),
    Basic { username: String, password: String },
}

/// Why the configured credentials cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `bearer_token_file` is missing or unreadable.
    #[error(
        "prometheus.bearer_token_file {}: {source}; fix bearer_token_file (the file must exist and be readable by rollbackd) or set prometheus.bearer_token instead",
        path.display()
    )]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `bearer_token_file` holds nothing but whitespace.
    #[error("prometheus.bearer_token_file {}: the file is empty; put the token in it", path.display())]
    EmptyTokenFile { path: PathBuf },
}

impl PrometheusConfig {
    /// The credentials to send, reading `bearer_token_file` if set.
    pub fn auth(&self) -> Result<Option<PrometheusAuth>, AuthError> {
        if let Some(token) = &self.bearer_token {
            return Ok(Some(PrometheusAuth::Bearer(token.expose().to_string())));
        }
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|source| AuthError::TokenFile {
                path: path.clone(),
                source,
            })?;
            let token = token.trim();
            if token.is_empty() {
                return Err(AuthError::EmptyTokenFile { path: path.clone() });
            }
            return Ok(Some(PrometheusAuth::Bearer(token.to_string())));
        }
        Ok(self.basic_auth.as_ref().map(|b| PrometheusAuth::Basic {
            username: b.username.clone(),
            password: b.password.expose().to_string(),
        }))
    }

    /// The key that holds the credentials rollbackd sends, if any, for
    /// messages that tell the operator what to fix.
    pub fn auth_key(&self) -> Option<&'static str> {
        if self.bearer_token.is_some() {
            Some("prometheus.bearer_token")
        } else if self.bearer_token_file.is_some() {
            Some("prometheus.bearer_token_file")
        } else if self.basic_auth.is_some() {
            Some("prometheus.basic_auth")
        } else {
            None
        }
    }

    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => problems.push(format!(
                "prometheus.url: {:?} is not an http(s) URL; set it like \"http://prometheus:9090\"",
                crate::secret::redact_url(&self.url)
            )),
        }
        if self.timeout.is_zero() {
            problems.push("prometheus.timeout: must be greater than 0s".into());
        }
        if !(1..=1000).contains(&self.max_queries_per_request) {
            problems.push(
                "prometheus.max_queries_per_request: between 1 and 1000 (1 sends every query on its own)"
                    .into(),
            );
        }
        if !(64 << 10..=256 << 20).contains(&self.max_response_bytes) {
            problems.push(
                "prometheus.max_response_bytes: between 65536 (64 KiB) and 268435456 (256 MiB)"
                    .into(),
            );
        }
        if !(1..=1_000_000).contains(&self.max_series) {
            problems.push("prometheus.max_series: between 1 and 1000000".into());
        }
        let auths = [
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
            self.basic_auth.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            problems.push(
                "prometheus: set only one of bearer_token, bearer_token_file and basic_auth".into(),
            );
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}
