//! `[server]` and `[alertmanager]`: where rollbackd's own HTTP server
//! listens, the token its mutating calls need, and which Alertmanager alerts
//! may trigger a rollback. Data and its checks only; nothing here binds a port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of rollbackd's own HTTP server (`/metrics`, `/healthz`, `/readyz`, `/api/v1`).
    pub listen: SocketAddr,
    /// Bearer token for the API's mutating calls (approve, reject, breaker
    /// reset). Without it those calls are refused.
    pub api_token: Option<Secret>,
    /// Connections served at once; past it, a few more are served one short
    /// request each (so `/healthz` still answers), the rest closed at once.
    pub max_connections: usize,
    /// The longest a client may take to send a request's headers, and to
    /// start its next request on a kept-alive connection.
    #[serde(with = "duration::serde_str")]
    pub header_timeout: Duration,
    /// The longest a request may take, body and answer included.
    #[serde(with = "duration::serde_str")]
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            api_token: None,
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !(1..=10_000).contains(&self.max_connections) {
            problems.push("server.max_connections: between 1 and 10000".into());
        }
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(600) {
                problems.push(format!("server.{key}: between 100ms and 10m"));
            }
        }
    }
}

/// Alerts from Alertmanager that may trigger a rollback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Label values an alert must carry, like `{ rollback = "true" }`.
    pub matchers: BTreeMap<String, String>,
    /// The policy for alerts that match.
    pub policy: crate::rules::Policy,
    /// How long a delivered alert is remembered, to recognise redeliveries.
    #[serde(with = "duration::serde_str")]
    pub dedupe_for: Duration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            matchers: BTreeMap::from([("rollback".to_string(), "true".to_string())]),
            policy: crate::rules::Policy::DryRun,
            dedupe_for: Duration::from_secs(3600),
        }
    }
}

impl AlertmanagerConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.matchers.is_empty() {
            problems.push(
                "alertmanager.matchers: give at least one label, like { rollback = \"true\" }, so only alerts meant for rollbackd can roll back"
                    .into(),
            );
        }
    }
}
