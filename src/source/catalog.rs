//! What Prometheus holds about a service, for `rollbackd init`: the metric
//! names a selector's series carry, the label names of a metric, and the
//! metrics' metadata (type, help). Prometheus's HTTP API:
//! `/api/v1/label/__name__/values`, `/api/v1/labels` and `/api/v1/metadata`,
//! each over a time range so a service that was quiet for a minute is still
//! found.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

use super::prometheus::Prometheus;
use super::SourceError;

/// A metric's metadata, as the scrape reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Metadata {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub unit: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    #[serde(default = "Option::default")]
    data: Option<T>,
    #[serde(rename = "errorType", default)]
    error_type: String,
    #[serde(default)]
    error: String,
}

impl Prometheus {
    /// `GET path?params`, its `data`.
    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<T, SourceError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let request = self.client.get(format!("{}{path}?{query}", self.base));
        let (status, bytes) = self.read(request).await?;
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| {
            if status.is_success() {
                SourceError::Decode(format!("{path}: {e}"))
            } else {
                SourceError::Status {
                    status: status.as_u16(),
                    body: crate::secret::shown(&String::from_utf8_lossy(&bytes), 200),
                }
            }
        })?;
        match (envelope.status.as_str(), envelope.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(SourceError::Api {
                error_type: envelope.error_type,
                message: envelope.error,
            }),
        }
    }

    /// `path` for the series `selector` matches over `[from, to]`.
    async fn over<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        selector: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<T, SourceError> {
        let params = [
            ("match[]", selector.to_string()),
            ("start", seconds(from)),
            ("end", seconds(to)),
        ];
        self.api(path, &params).await
    }

    /// The metric names of the series `selector` matches over `[from, to]`.
    pub(crate) async fn metric_names(
        &self,
        selector: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<String>, SourceError> {
        self.over("/api/v1/label/__name__/values", selector, from, to)
            .await
    }

    /// The label names of the series `selector` matches over `[from, to]`.
    pub(crate) async fn label_names(
        &self,
        selector: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<String>, SourceError> {
        self.over("/api/v1/labels", selector, from, to).await
    }

    /// The values of label `name` on the series `selector` matches.
    pub(crate) async fn label_values(
        &self,
        name: &str,
        selector: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<String>, SourceError> {
        self.over(&format!("/api/v1/label/{name}/values"), selector, from, to)
            .await
    }

    /// Every metric's metadata (one entry per name: the first the targets
    /// report).
    pub(crate) async fn metadata(&self) -> Result<BTreeMap<String, Metadata>, SourceError> {
        let all: BTreeMap<String, Vec<Metadata>> = self.api("/api/v1/metadata", &[]).await?;
        Ok(all
            .into_iter()
            .filter_map(|(name, mut list)| (!list.is_empty()).then(|| (name, list.remove(0))))
            .collect())
    }
}

fn seconds(t: SystemTime) -> String {
    format!("{:.3}", super::range::millis(t) as f64 / 1000.0)
}
