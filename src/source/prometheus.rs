//! Prometheus's HTTP API (`/api/v1/query`), read with a plain reqwest client.
//!
//! rollbackd parses the JSON itself rather than through a typed client so
//! that every shape Prometheus can answer with (vector, scalar, "NaN",
//! "+Inf", a string result, a native histogram, an error body behind a proxy)
//! maps to a known outcome instead of a parse failure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use super::{MetricsSource, Sample, SourceError};
use crate::config::{PrometheusAuth, PrometheusConfig};
use crate::rules::Labels;

/// A Prometheus server reached over HTTP.
#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    query_url: reqwest::Url,
    base: String,
    timeout: Duration,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("url", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Prometheus {
    /// Builds a client from validated config. Fails only when the client
    /// itself cannot be built (for example an unreadable token file).
    pub fn new(config: &PrometheusConfig) -> Result<Self, SourceError> {
        let base = config.url.trim_end_matches('/').to_string();
        let query_url = reqwest::Url::parse(&format!("{base}/api/v1/query")).map_err(|e| {
            SourceError::Decode(format!("prometheus.url {:?} is not a URL: {e}", config.url))
        })?;
        let mut headers = HeaderMap::new();
        if let Some(auth) = config.auth().map_err(SourceError::Decode)? {
            let value = match auth {
                PrometheusAuth::Bearer(token) => format!("Bearer {token}"),
                PrometheusAuth::Basic { username, password } => {
                    format!("Basic {}", base64(&format!("{username}:{password}")))
                }
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                SourceError::Decode(
                    "the Prometheus credentials contain characters not allowed in an HTTP header"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Decode(format!("cannot build the HTTP client: {e}")))?;
        Ok(Prometheus {
            client,
            query_url,
            base,
            timeout: config.timeout,
        })
    }

    async fn instant(&self, expr: &str, at: SystemTime) -> Result<Vec<Sample>, SourceError> {
        let mut url = self.query_url.clone();
        let at = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        url.query_pairs_mut()
            .append_pair("query", expr)
            .append_pair("time", &format!("{at:.3}"))
            .append_pair("timeout", &format!("{}ms", self.timeout.as_millis()));
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        match serde_json::from_slice::<ApiResponse>(&body) {
            Ok(ApiResponse {
                status: ApiStatus::Success,
                data: Some(data),
                ..
            }) => decode(data),
            Ok(ApiResponse {
                status: ApiStatus::Error,
                error_type,
                error,
                ..
            }) => Err(SourceError::Api {
                error_type: error_type.unwrap_or_else(|| "unknown".into()),
                message: error.unwrap_or_default(),
            }),
            _ if !status.is_success() => Err(SourceError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
            Ok(_) => Err(SourceError::Decode("a success answer without data".into())),
            Err(e) => Err(SourceError::Decode(e.to_string())),
        }
    }

    fn transport(&self, e: reqwest::Error) -> SourceError {
        if e.is_timeout() {
            SourceError::Timeout {
                after: self.timeout,
            }
        } else {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                message = format!("{message}: {inner}");
                source = inner.source();
            }
            SourceError::Connect {
                url: self.base.clone(),
                message,
            }
        }
    }
}

impl MetricsSource for Prometheus {
    fn query<'a>(
        &'a self,
        expr: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(self.instant(expr, at))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: ApiStatus,
    data: Option<ApiData>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ApiStatus {
    Success,
    Error,
}

/// `data` of a success answer, decoded straight into its typed shape.
#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorItem>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    metric: Labels,
    value: Option<(f64, String)>,
    histogram: Option<serde::de::IgnoredAny>,
}

fn decode(data: ApiData) -> Result<Vec<Sample>, SourceError> {
    match data {
        ApiData::Vector(items) => items
            .into_iter()
            .map(|item| {
                let Some((_, text)) = item.value else {
                    return Err(SourceError::Unsupported(if item.histogram.is_some() {
                        "a native histogram sample; wrap it in histogram_quantile() or histogram_count()".into()
                    } else {
                        "a vector sample without a value".into()
                    }));
                };
                let mut labels = item.metric;
                labels.remove("__name__");
                Ok(Sample {
                    labels,
                    value: parse_value(&text)?,
                })
            })
            .collect(),
        ApiData::Scalar((_, text)) => Ok(vec![Sample {
            labels: Labels::new(),
            value: parse_value(&text)?,
        }]),
        ApiData::Matrix(_) => Err(SourceError::Unsupported(
            "a matrix (range vector) result; rules need an instant vector or a scalar".into(),
        )),
        ApiData::String(_) => Err(SourceError::Unsupported(
            "a string result; rules need an instant vector or a scalar".into(),
        )),
    }
}

/// Prometheus writes sample values as strings: "1.5", "NaN", "+Inf", "-Inf".
fn parse_value(text: &str) -> Result<f64, SourceError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .map_err(|_| SourceError::Decode(format!("sample value {text:?} is not a number"))),
    }
}

fn base64(input: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(kind: &str, result: &str) -> ApiData {
        serde_json::from_str(&format!(r#"{{"resultType":"{kind}","result":{result}}}"#)).unwrap()
    }

    #[test]
    fn decodes_vectors_with_nan_and_inf() {
        let samples = decode(data(
            "vector",
            r#"[{"metric":{"__name__":"x","a":"1"},"value":[1.0,"NaN"]},
                {"metric":{"a":"2"},"value":[1.0,"+Inf"]},
                {"metric":{"a":"3"},"value":[1.0,"0.25"]}]"#,
        ))
        .unwrap();
        assert!(samples[0].value.is_nan());
        assert!(!samples[0].labels.contains_key("__name__"));
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, 0.25);
    }

    #[test]
    fn decodes_scalars_and_refuses_strings_and_matrices() {
        let s = decode(data("scalar", r#"[1.0,"3"]"#)).unwrap();
        assert_eq!(s[0].value, 3.0);
        assert!(matches!(
            decode(data("string", r#"[1.0,"x"]"#)),
            Err(SourceError::Unsupported(_))
        ));
        assert!(matches!(
            decode(data("matrix", "[]")),
            Err(SourceError::Unsupported(_))
        ));
    }

    #[test]
    fn native_histograms_are_unsupported_not_a_crash() {
        let e = decode(data(
            "vector",
            r#"[{"metric":{},"histogram":[1.0,{"count":"1"}]}]"#,
        ))
        .unwrap_err();
        assert_eq!(e.kind(), "unsupported_result");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
    }
}
