//! Railway's public GraphQL API. A project token goes in the
//! `project-access-token` header, an account or team token as
//! `Authorization: Bearer`. Reads are retried on transient failures (bounded,
//! with backoff); `deploymentRollback` is sent once and never retried, so a
//! lost answer can never roll back twice.

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::{MissingSetting, RailwayConfig, TokenKind};
use super::{DeployProvider, Deployment, DeploymentStatus, LogLine, ProviderError};

const WHAT: &str = "Railway";
const FIELDS: &str = "id status createdAt meta canRollback";

/// Why a Railway client could not be built from `[provider]`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// A setting is neither in the config nor in the environment.
    #[error(transparent)]
    Missing(#[from] MissingSetting),
    /// The token cannot travel in an HTTP header.
    #[error("the Railway token contains characters not allowed in an HTTP header")]
    Header,
    /// The HTTP client itself could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

pub(crate) struct Railway {
    client: reqwest::Client,
    endpoint: String,
    auth: (HeaderName, HeaderValue),
    project_id: String,
    service_id: String,
    environment_id: Option<String>,
    timeout: Duration,
    list_settle: Duration,
}

impl std::fmt::Debug for Railway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Railway")
            .field("endpoint", &self.endpoint)
            .field("project_id", &self.project_id)
            .field("service_id", &self.service_id)
            .finish_non_exhaustive()
    }
}

impl Railway {
    pub(crate) fn new(config: &RailwayConfig) -> Result<Self, SetupError> {
        let (kind, token) = config.token()?;
        let (name, value) = match kind {
            TokenKind::Project => (HeaderName::from_static("project-access-token"), token),
            TokenKind::Account => (AUTHORIZATION, format!("Bearer {token}")),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| SetupError::Header)?;
        value.set_sensitive(true);
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError::Client)?;
        Ok(Railway {
            client,
            endpoint: config.endpoint.clone(),
            auth: (name, value),
            project_id: config.project_id()?,
            service_id: config.service_id()?,
            environment_id: config.environment_id(),
            list_settle: config.list_settle,
            timeout: config.timeout,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<T, ProviderError> {
        let response = self
            .client
            .post(&self.endpoint)
            .header(self.auth.0.clone(), self.auth.1.clone())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ProviderError::Timeout {
                        what: WHAT.into(),
                        after: self.timeout,
                    }
                } else {
                    ProviderError::Unreachable {
                        what: format!("{WHAT} at {}", self.endpoint),
                        message: describe(&e),
                    }
                }
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Unreachable {
                what: WHAT.into(),
                message: describe(&e),
            })?;
        decode(status.as_u16(), &body, variables_id(&variables))
    }

    /// A read, retried up to three times on transient failures.
    async fn read<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<T, ProviderError> {
        let mut delay = Duration::from_millis(300);
        for attempt in 1.. {
            match self.send(query, variables.clone()).await {
                Err(e) if e.is_transient() && attempt < 3 => {
                    tracing::warn!(attempt, error = %e, "Railway read failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns by the third attempt")
    }
}

/// Railway's answer to one GraphQL request: its `data`, or the error it
/// means. GraphQL errors win over the HTTP status (Railway answers them
/// with 200 or 400); a "not found" about the request's `id` is
/// [`ProviderError::NotFound`].
fn decode<T: DeserializeOwned>(
    status: u16,
    body: &[u8],
    id: Option<String>,
) -> Result<T, ProviderError> {
    #[derive(Deserialize)]
    struct GraphqlError {
        message: String,
    }
    #[derive(Deserialize)]
    struct Envelope<T> {
        data: Option<T>,
        #[serde(default)]
        errors: Vec<GraphqlError>,
    }
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(envelope) if !envelope.errors.is_empty() => {
            let message: Vec<String> = envelope.errors.into_iter().map(|e| e.message).collect();
            let message = message.join("; ");
            match id {
                Some(id) if message.to_lowercase().contains("not found") => {
                    Err(ProviderError::NotFound(id))
                }
                _ => Err(ProviderError::Api {
                    what: WHAT.into(),
                    message,
                }),
            }
        }
        _ if !(200..300).contains(&status) => Err(ProviderError::Http {
            what: WHAT.into(),
            status,
            body: String::from_utf8_lossy(body).chars().take(200).collect(),
        }),
        Ok(Envelope {
            data: Some(data), ..
        }) => Ok(data),
        Ok(_) => Err(ProviderError::Decode {
            what: WHAT.into(),
            message: "an answer without data or errors".into(),
        }),
        Err(e) => Err(ProviderError::Decode {
            what: WHAT.into(),
            message: e.to_string(),
        }),
    }
}

fn variables_id(v: &Value) -> Option<String> {
    v.get("id").and_then(Value::as_str).map(str::to_string)
}

/// A reqwest error with its causes, as one line.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    message
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    id: String,
    status: String,
    created_at: String,
    #[serde(default)]
    meta: Option<Value>,
    #[serde(default)]
    can_rollback: Option<bool>,
}

impl Node {
    fn into_deployment(self) -> Result<Deployment, ProviderError> {
        let created_at = humantime::parse_rfc3339(&self.created_at)
            .or_else(|_| humantime::parse_rfc3339_weak(&self.created_at))
            .map_err(|e| ProviderError::Decode {
                what: WHAT.into(),
                message: format!("createdAt {:?}: {e}", self.created_at),
            })?;
        let meta = self.meta.unwrap_or(Value::Null);
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| meta.get(*k).and_then(Value::as_str))
                .map(str::to_string)
        };
        Ok(Deployment {
            id: self.id,
            status: DeploymentStatus::parse(&self.status),
            created_at,
            git_sha: text(&["commitHash", "commitSha"]),
            git_branch: text(&["branch"]),
            can_rollback: self.can_rollback,
        })
    }
}

impl DeployProvider for Railway {
    fn list_settle(&self) -> Duration {
        self.list_settle
    }

    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Deployment>, ProviderError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Edge {
                node: Node,
            }
            #[derive(Deserialize)]
            struct Connection {
                edges: Vec<Edge>,
            }
            #[derive(Deserialize)]
            struct Data {
                deployments: Connection,
            }
            let mut input = json!({ "projectId": self.project_id, "serviceId": self.service_id });
            if let Some(env) = &self.environment_id {
                input["environmentId"] = json!(env);
            }
            let query = format!(
                "query deployments($input: DeploymentListInput!, $first: Int) {{ \
                 deployments(input: $input, first: $first) {{ edges {{ node {{ {FIELDS} }} }} }} }}"
            );
            let data: Data = self
                .read(&query, json!({ "input": input, "first": limit }))
                .await?;
            let mut deployments = data
                .deployments
                .edges
                .into_iter()
                .map(|e| e.node.into_deployment())
                .collect::<Result<Vec<_>, _>>()?;
            deployments.sort_by_key(|d| std::cmp::Reverse(d.created_at));
            Ok(deployments)
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Deployment, ProviderError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Data {
                deployment: Option<Node>,
            }
            let query =
                format!("query deployment($id: String!) {{ deployment(id: $id) {{ {FIELDS} }} }}");
            let data: Data = self.read(&query, json!({ "id": id })).await?;
            data.deployment
                .ok_or_else(|| ProviderError::NotFound(id.to_string()))?
                .into_deployment()
        })
    }

    fn rollback<'a>(
        &'a self,
        target: &'a Deployment,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Data {
                deployment_rollback: bool,
            }
            let data: Data = self
                .send(
                    "mutation deploymentRollback($id: String!) { deploymentRollback(id: $id) }",
                    json!({ "id": target.id }),
                )
                .await?;
            if data.deployment_rollback {
                // Railway answers a plain Boolean; the new deployment is found by listing.
                Ok(None)
            } else {
                Err(ProviderError::Api {
                    what: WHAT.into(),
                    message: format!("deploymentRollback({}) returned false", target.id),
                })
            }
        })
    }

    fn cancels(&self) -> bool {
        true
    }

    /// `deploymentCancel(id: String!): Boolean!` ("Cancels a deployment.",
    /// the schema the railway CLI ships, `src/gql/schema.json`), sent once
    /// like a rollback.
    fn cancel<'a>(&'a self, d: &'a Deployment) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Data {
                deployment_cancel: bool,
            }
            let data: Data = self
                .send(
                    "mutation deploymentCancel($id: String!) { deploymentCancel(id: $id) }",
                    json!({ "id": d.id }),
                )
                .await?;
            if data.deployment_cancel {
                Ok(())
            } else {
                Err(ProviderError::Api {
                    what: WHAT.into(),
                    message: format!("deploymentCancel({}) returned false", d.id),
                })
            }
        })
    }

    fn reads_logs(&self) -> bool {
        true
    }

    /// `deploymentLogs` over the window, at most 5,000 lines (Railway's
    /// limit). Railway marks every line written to stderr as severity
    /// `error`, so only a structured `level` attribute counts as a level.
    fn logs<'a>(
        &'a self,
        id: &'a str,
        from: SystemTime,
        to: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<LogLine>, ProviderError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Attribute {
                key: String,
                value: String,
            }
            #[derive(Deserialize)]
            struct Log {
                message: String,
                #[serde(default)]
                timestamp: Option<String>,
                #[serde(default)]
                attributes: Vec<Attribute>,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Data {
                deployment_logs: Vec<Log>,
            }
            let query = "query deploymentLogs($deploymentId: String!, $startDate: DateTime, $endDate: DateTime, $limit: Int) { \
                 deploymentLogs(deploymentId: $deploymentId, startDate: $startDate, endDate: $endDate, limit: $limit) { \
                 timestamp message attributes { key value } } }";
            let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
            let data: Data = self
                .read(
                    query,
                    json!({ "deploymentId": id, "startDate": time(from), "endDate": time(to), "limit": 5000 }),
                )
                .await?;
            Ok(data
                .deployment_logs
                .into_iter()
                .map(|log| LogLine {
                    at: log
                        .timestamp
                        .and_then(|t| humantime::parse_rfc3339_weak(&t).ok()),
                    level: log
                        .attributes
                        .into_iter()
                        .find(|a| matches!(a.key.as_str(), "level" | "lvl" | "severity"))
                        .map(|a| a.value.trim_matches('"').to_string()),
                    message: log.message,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{decode, Node};
    use crate::provider::{DeploymentStatus, ProviderError};

    fn answer(status: u16, body: Value) -> Result<Value, ProviderError> {
        decode(status, body.to_string().as_bytes(), Some("d1".into()))
    }

    #[test]
    fn data_is_the_answer() {
        let data = answer(200, json!({"data": {"deploymentRollback": true}})).unwrap();
        assert_eq!(data, json!({"deploymentRollback": true}));
    }

    #[test]
    fn graphql_errors_win_over_the_http_status_and_name_every_message() {
        // Railway answers a refused mutation with 200 or 400 and `errors`.
        for status in [200, 400] {
            let e = answer(
                status,
                json!({"data": null, "errors": [{"message": "Not Authorized"}, {"message": "try again"}]}),
            )
            .unwrap_err();
            assert!(
                matches!(&e, ProviderError::Api { message, .. } if message == "Not Authorized; try again"),
                "{e:?}"
            );
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn a_deployment_not_found_is_not_found_only_when_the_request_named_one() {
        let body = json!({"errors": [{"message": "Deployment not found"}]});
        let e = answer(200, body.clone()).unwrap_err();
        assert!(
            matches!(&e, ProviderError::NotFound(id) if id == "d1"),
            "{e:?}"
        );
        let e = decode::<Value>(200, body.to_string().as_bytes(), None).unwrap_err();
        assert!(matches!(e, ProviderError::Api { .. }), "{e:?}");
    }

    #[test]
    fn a_refusal_without_graphql_errors_is_its_http_status_with_the_start_of_the_body() {
        let page = format!("<html>{}</html>", "x".repeat(500));
        let e = decode::<Value>(502, page.as_bytes(), None).unwrap_err();
        match &e {
            ProviderError::Http { status, body, .. } => {
                assert_eq!(*status, 502);
                assert_eq!(body.chars().count(), 200);
                assert!(body.starts_with("<html>"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_transient());
        let e = answer(429, json!({"message": "rate limited"})).unwrap_err();
        assert!(matches!(e, ProviderError::Http { status: 429, .. }) && e.is_transient());
        let e = answer(401, json!({"data": null})).unwrap_err();
        assert!(matches!(e, ProviderError::Http { status: 401, .. }) && !e.is_transient());
    }

    #[test]
    fn an_answer_with_neither_data_nor_errors_or_not_json_is_undecodable() {
        let e = answer(200, json!({"data": null})).unwrap_err();
        assert!(
            matches!(&e, ProviderError::Decode { message, .. } if message.contains("without data or errors")),
            "{e:?}"
        );
        let e = decode::<Value>(200, b"not json", None).unwrap_err();
        assert!(matches!(e, ProviderError::Decode { .. }), "{e:?}");
    }

    fn node(value: Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_node_becomes_a_deployment_in_rollbackd_s_words() {
        let d = node(json!({
            "id": "d2", "status": "Removed", "createdAt": "2026-01-15T10:30:00.123Z",
            "canRollback": true,
            "meta": {"commitHash": "a1b2c3d", "branch": "main", "commitMessage": "fix"}
        }))
        .into_deployment()
        .unwrap();
        assert_eq!(d.id, "d2");
        assert_eq!(d.status, DeploymentStatus::Removed);
        assert!(d.status.served());
        assert_eq!(d.git_sha.as_deref(), Some("a1b2c3d"));
        assert_eq!(d.git_branch.as_deref(), Some("main"));
        assert_eq!(d.can_rollback, Some(true));
        assert_eq!(
            humantime::format_rfc3339_millis(d.created_at).to_string(),
            "2026-01-15T10:30:00.123Z"
        );
        // An image deploy has no commit; an unknown status is kept.
        let d = node(json!({"id": "d3", "status": "NEEDS_APPROVAL", "createdAt": "2026-01-15 10:30:00", "meta": {"image": "shop:1"}}))
            .into_deployment()
            .unwrap();
        assert_eq!(d.git_sha, None);
        assert_eq!(d.status, DeploymentStatus::Other("NEEDS_APPROVAL".into()));
        assert!(!d.is_success() && !d.has_failed() && !d.in_progress());
    }

    #[test]
    fn a_node_with_a_bad_creation_time_names_it() {
        let e = node(json!({"id": "d4", "status": "SUCCESS", "createdAt": "yesterday"}))
            .into_deployment()
            .unwrap_err();
        assert!(
            matches!(&e, ProviderError::Decode { message, .. } if message.contains("createdAt \"yesterday\"")),
            "{e:?}"
        );
    }
}
