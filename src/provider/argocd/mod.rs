//! Argo CD (`provider.type = "argocd"`): one application, through the REST
//! API the `argocd` CLI and UI use (`/api/v1/applications/{name}`), with a
//! bearer token.
//!
//! - **Deployments** are the application's `status.history`, newest first:
//!   each entry is a sync that succeeded, its id the history id. The newest
//!   is what runs (`SUCCESS`, or `DEPLOYING` while the application is
//!   `Progressing`); the older ones are `REMOVED` (superseded, and what a
//!   rollback can go back to). The git revision is the entry's `revision`.
//! - **A rollback** turns automated sync off first: Argo CD refuses a
//!   rollback while it is on ("rollback cannot be initiated when auto-sync
//!   is enabled"), and with self-heal it would re-apply the bad commit at
//!   once. One merge patch removes `spec.syncPolicy.automated` and records
//!   it, exactly, in the annotation [`PAUSED`] of the application itself
//!   (kept when already there: a second rollback, or one after a crash,
//!   never overwrites the policy the first one saved). Then
//!   `POST …/rollback` with the target's history id (sent once, never
//!   retried), and the sync operation and the application's health are
//!   followed until the operation succeeded and the application is
//!   `Healthy`. `Degraded` fails the phase.
//! - **Automated sync stays off** (the cluster now differs from git on
//!   purpose) until an operator resumes it: `rollbackd breaker reset
//!   --resume-sync` writes the recorded policy back and removes the
//!   annotation.
//!
//! Errors come as grpc-gateway bodies `{"error","code","message"}`; every
//! non-GET request carries exactly `Content-Type: application/json` (Argo CD
//! answers anything else 415). Shapes and refusals: argoproj/argo-cd
//! `server/application/application.go`, `pkg/apis/application/v1alpha1/types.go`.

pub mod config;

use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use self::config::{ArgocdConfig, TokenError, TOKEN_ENV};
use super::{DeployProvider, Deployment, DeploymentStatus, ProviderError};

const WHAT: &str = "Argo CD";

/// The annotation holding the automated sync policy rollbackd turned off.
pub const PAUSED: &str = "rollbackd.io/paused-automated-sync";

/// Why the client could not be built from `[provider]`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the Argo CD token contains characters not allowed in an HTTP header")]
    Header,
    #[error("provider.ca_file {}: {message}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("provider.server / provider.application: {0:?} is not a URL")]
    Url(String),
}

pub struct Argocd {
    client: reqwest::Client,
    /// `https://argocd.example.com/api/v1/applications/<name>`.
    base: String,
    auth: HeaderValue,
    application: String,
    /// `appNamespace` and `project`, on every request.
    scope: Vec<(&'static str, String)>,
    timeout: Duration,
    operation_timeout: Duration,
    prune: bool,
    list_settle: Duration,
    /// How often a rollback's operation is looked at.
    poll: Duration,
}

impl std::fmt::Debug for Argocd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argocd")
            .field("application", &self.base)
            .finish_non_exhaustive()
    }
}

impl Argocd {
    pub fn new(config: &ArgocdConfig) -> Result<Argocd, SetupError> {
        let token = config.token()?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| SetupError::Header)?;
        auth.set_sensitive(true);
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let bad = |message: String| SetupError::CaFile {
                path: path.clone(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(SetupError::Client)?;
        let mut scope = Vec::new();
        if let Some(ns) = &config.app_namespace {
            scope.push(("appNamespace", ns.clone()));
        }
        if let Some(project) = &config.project {
            scope.push(("project", project.clone()));
        }
        let base = format!(
            "{}/api/v1/applications/{}",
            config.server.trim_end_matches('/'),
            config.application
        );
        reqwest::Url::parse(&base).map_err(|_| SetupError::Url(base.clone()))?;
        Ok(Argocd {
            client,
            base,
            auth,
            application: config.application.clone(),
            scope,
            timeout: config.timeout,
            operation_timeout: config.operation_timeout,
            prune: config.prune,
            list_settle: config.list_settle,
            poll: Duration::from_secs(1),
        })
    }

    /// The same client looking at the operation every `poll` (tests).
    pub fn with_poll(mut self, poll: Duration) -> Argocd {
        self.poll = poll;
        self
    }

    /// The application's URL with `tail`, and `appNamespace` and `project`
    /// when configured.
    fn url(&self, tail: &str) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("{}{tail}", self.base))
            .expect("checked when the client was built");
        if !self.scope.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(self.scope.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One request; the answer's JSON, or the error Argo CD gave, said with
    /// what to do about it.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, ProviderError> {
        let response = request
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ProviderError::Timeout {
                        what: format!("{WHAT} ({what})"),
                        after: self.timeout,
                    }
                } else {
                    ProviderError::Unreachable {
                        what: format!("{WHAT} at {}", self.base),
                        message: super::railway::describe(&e),
                    }
                }
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Unreachable {
                what: WHAT.into(),
                message: super::railway::describe(&e),
            })?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        // grpc-gateway's error body: {"error", "code", "message"}.
        let message = body["message"]
            .as_str()
            .or_else(|| body["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes)
                    .trim()
                    .chars()
                    .take(300)
                    .collect()
            });
        let hint = match status.as_u16() {
            401 => format!(
                "; the token was refused (provider.token, provider.token_file or {TOKEN_ENV}: an API token of an account that may get, update and sync the application)"
            ),
            403 => format!(
                "; the application {:?} does not exist, or the token's account may not {what} it (Argo CD says \"permission denied\" for both)",
                self.application
            ),
            _ => String::new(),
        };
        Err(ProviderError::Http {
            what: format!("{WHAT} ({what})"),
            status: status.as_u16(),
            body: format!("{message}{hint}"),
        })
    }

    /// The application, asked again on a transient failure (reads only).
    async fn application(&self) -> Result<Value, ProviderError> {
        let mut delay = Duration::from_millis(300);
        for attempt in 1.. {
            match self.send(self.client.get(self.url("")), "get").await {
                Err(e) if e.is_transient() && attempt < 3 => {
                    tracing::warn!(attempt, error = %e, "Argo CD read failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns by the third attempt")
    }

    /// A merge patch of the application (`PATCH …/{name}`).
    async fn patch(&self, patch: &Value, what: &str) -> Result<Value, ProviderError> {
        let body = json!({
            "name": self.application,
            "patch": patch.to_string(),
            "patchType": "merge",
        });
        self.send(self.client.patch(self.url("")).json(&body), what)
            .await
    }

    /// Turns automated sync off, recording the policy in [`PAUSED`] unless
    /// a policy is recorded there already. Returns what was done.
    async fn pause(&self, app: &Value) -> Result<Option<String>, ProviderError> {
        let automated = &app["spec"]["syncPolicy"]["automated"];
        let recorded = app["metadata"]["annotations"][PAUSED].as_str();
        if automated.is_null() {
            return Ok(None);
        }
        let mut patch = json!({ "spec": { "syncPolicy": { "automated": null } } });
        if recorded.is_none() {
            patch["metadata"] = json!({ "annotations": { PAUSED: automated.to_string() } });
        }
        self.patch(&patch, "update").await?;
        tracing::warn!(application = %self.application, policy = %automated, "automated sync turned off for the rollback; it stays off until `rollbackd breaker reset --resume-sync`");
        Ok(Some(automated.to_string()))
    }

    /// Waits for the rollback's sync operation to end and the application
    /// to settle; the history id it created.
    async fn follow(&self, target: &str) -> Result<String, ProviderError> {
        let deadline = tokio::time::Instant::now() + self.operation_timeout;
        let mut last = String::from("the operation has not started");
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::Timeout {
                    what: format!("{WHAT}'s rollback operation (last seen: {last})"),
                    after: self.operation_timeout,
                });
            }
            tokio::time::sleep(self.poll).await;
            let app = match self.application().await {
                Ok(app) => app,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let state = &app["status"]["operationState"];
            let phase = state["phase"].as_str().unwrap_or("");
            let health = app["status"]["health"]["status"]
                .as_str()
                .unwrap_or("Unknown");
            last = format!(
                "operation {}, health {health}",
                if phase.is_empty() { "pending" } else { phase }
            );
            // Done when no operation is asked or running any more.
            if !app["operation"].is_null()
                || phase.is_empty()
                || phase == "Running"
                || phase == "Terminating"
            {
                continue;
            }
            if phase != "Succeeded" {
                return Err(ProviderError::Api {
                    what: format!("{WHAT}'s rollback to history id {target}"),
                    message: format!(
                        "the sync operation ended {phase}: {}",
                        state["message"].as_str().unwrap_or("no message")
                    ),
                });
            }
            let newest = history(&app).last().and_then(|h| h["id"].as_i64());
            match health {
                "Healthy" => {
                    return Ok(newest.map(|id| id.to_string()).unwrap_or_default());
                }
                "Degraded" | "Missing" => {
                    return Err(ProviderError::Api {
                        what: format!("{WHAT}'s rollback to history id {target}"),
                        message: format!(
                            "the sync succeeded, but the application is {health}: {}",
                            app["status"]["health"]["message"]
                                .as_str()
                                .unwrap_or("no message")
                        ),
                    })
                }
                _ => {}
            }
        }
    }

    /// Turns automated sync back on as it was recorded, and removes the
    /// record. What was done, or `None` when rollbackd had not turned it off.
    async fn resume(&self) -> Result<Option<String>, ProviderError> {
        let app = self.application().await?;
        let Some(recorded) = app["metadata"]["annotations"][PAUSED].as_str() else {
            return Ok(None);
        };
        let policy: Value = serde_json::from_str(recorded).map_err(|e| ProviderError::Decode {
            what: format!("the annotation {PAUSED} of {}", self.application),
            message: format!("{e}; turn automated sync on by hand and remove the annotation"),
        })?;
        let patch = json!({
            "metadata": { "annotations": { PAUSED: null } },
            "spec": { "syncPolicy": { "automated": policy } },
        });
        self.patch(&patch, "update").await?;
        Ok(Some(format!(
            "automated sync of Argo CD application {} is on again, as it was: {policy}",
            self.application
        )))
    }

    /// Whether rollbackd holds automated sync off now, said for people.
    async fn paused(&self) -> Result<Option<String>, ProviderError> {
        let app = self.application().await?;
        Ok(app["metadata"]["annotations"][PAUSED].as_str().map(|policy| {
            format!(
                "automated sync of Argo CD application {} is OFF, turned off by rollbackd for a rollback (recorded policy {policy}); `rollbackd breaker reset --resume-sync` turns it back on",
                self.application
            )
        }))
    }
}

/// `status.history`, oldest first.
fn history(app: &Value) -> Vec<Value> {
    app["status"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The deployments `app`'s history stands for, newest first.
fn deployments(app: &Value) -> Result<Vec<Deployment>, ProviderError> {
    let health = app["status"]["health"]["status"]
        .as_str()
        .unwrap_or("Unknown");
    let entries = history(app);
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().rev().enumerate() {
        let id = entry["id"].as_i64().ok_or_else(|| ProviderError::Decode {
            what: WHAT.into(),
            message: format!("a history entry without a numeric id: {entry}"),
        })?;
        let at = entry["deployedAt"]
            .as_str()
            .or_else(|| entry["deployStartedAt"].as_str())
            .and_then(crate::clock::parse)
            .ok_or_else(|| ProviderError::Decode {
                what: WHAT.into(),
                message: format!("history entry {id} has no deployedAt time"),
            })?;
        let status = match (i, health) {
            // What runs: deployed (every history entry is a sync that
            // succeeded), serving unless it is still rolling out.
            (0, "Progressing") => DeploymentStatus::Deploying,
            (0, _) => DeploymentStatus::Success,
            _ => DeploymentStatus::Removed,
        };
        let first = |key: &str| {
            entry[key]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let revisions = entry["revisions"].as_array();
        let source = match entry["sources"].as_array() {
            Some(sources) if !sources.is_empty() => sources[0].clone(),
            _ => entry["source"].clone(),
        };
        out.push(Deployment {
            id: id.to_string(),
            status,
            created_at: at,
            git_sha: first("revision").or_else(|| {
                revisions
                    .and_then(|r| r.first())
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
            git_branch: source["targetRevision"].as_str().map(str::to_string),
            // Argo CD refuses entries from v0.11 and older (no source).
            can_rollback: Some(
                source["repoURL"].as_str().is_some_and(|u| !u.is_empty())
                    || entry["sources"].as_array().is_some_and(|s| !s.is_empty()),
            ),
        });
    }
    Ok(out)
}

impl DeployProvider for Argocd {
    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Deployment>, ProviderError>> {
        Box::pin(async move {
            let app = self.application().await?;
            let mut list = deployments(&app)?;
            list.truncate(limit);
            Ok(list)
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Deployment, ProviderError>> {
        Box::pin(async move {
            let app = self.application().await?;
            deployments(&app)?
                .into_iter()
                .find(|d| d.id == id)
                .ok_or_else(|| ProviderError::NotFound(id.to_string()))
        })
    }

    fn rollback<'a>(
        &'a self,
        target: &'a Deployment,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let id: i64 = target.id.parse().map_err(|_| ProviderError::Api {
                what: WHAT.into(),
                message: format!("{:?} is not an Argo CD history id", target.id),
            })?;
            let app = self.application().await?;
            self.pause(&app).await?;
            // Sent once: a lost answer is settled by the journal, never by
            // asking again.
            let body = json!({ "id": id, "prune": self.prune, "dryRun": false });
            self.send(self.client.post(self.url("/rollback")).json(&body), "sync")
                .await?;
            self.follow(&target.id).await.map(Some)
        })
    }

    fn list_settle(&self) -> Duration {
        self.list_settle
    }

    fn held(&self) -> BoxFuture<'_, Result<Option<String>, ProviderError>> {
        Box::pin(self.paused())
    }

    fn resume_sync(&self) -> BoxFuture<'_, Result<Option<String>, ProviderError>> {
        Box::pin(self.resume())
    }

    fn after_rollback(&self) -> Option<String> {
        Some(format!(
            "automated sync of Argo CD application {} stays off (the cluster differs from git on purpose) until `rollbackd breaker reset --resume-sync`",
            self.application
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_the_deployments_newest_first_and_only_the_newest_runs() {
        let app = json!({
            "status": {
                "health": {"status": "Progressing"},
                "history": [
                    {"id": 0, "revision": "aaa", "deployedAt": "2026-01-01T00:00:00Z", "source": {"repoURL": "https://git/x", "targetRevision": "main"}},
                    {"id": 1, "revision": "bbb", "deployedAt": "2026-01-02T00:00:00Z", "source": {"repoURL": "https://git/x", "targetRevision": "main"}},
                    {"id": 2, "revisions": ["ccc", "ddd"], "deployedAt": "2026-01-03T00:00:00Z", "source": {"repoURL": ""}, "sources": [{"repoURL": "https://git/y", "targetRevision": "v2"}]}
                ]
            }
        });
        let list = deployments(&app).unwrap();
        let ids: Vec<(&str, &str)> = list
            .iter()
            .map(|d| (d.id.as_str(), d.status.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("2", "DEPLOYING"), ("1", "REMOVED"), ("0", "REMOVED")]
        );
        assert_eq!(list[0].git_sha.as_deref(), Some("ccc"));
        assert_eq!(list[0].git_branch.as_deref(), Some("v2"));
        assert_eq!(list[1].git_sha.as_deref(), Some("bbb"));
        assert_eq!(list[1].can_rollback, Some(true));
        let old = json!({"status": {"history": [{"id": 0, "revision": "a", "deployedAt": "2026-01-01T00:00:00Z", "source": {"repoURL": ""}}, {"id": 1, "revision": "b", "deployedAt": "2026-01-02T00:00:00Z", "source": {"repoURL": "r"}}]}});
        let list = deployments(&old).unwrap();
        assert_eq!(list[0].status, DeploymentStatus::Success);
        assert_eq!(
            list[1].can_rollback,
            Some(false),
            "an entry from Argo CD v0.11"
        );
        let broken = json!({"status": {"history": [{"id": "x"}]}});
        assert!(deployments(&broken)
            .unwrap_err()
            .to_string()
            .contains("numeric id"));
    }
}
