//! Where rule values come from. One small trait, [`MetricsSource`], so the
//! watcher can be driven by a real Prometheus in production and by scripted
//! samples in unit tests. Errors keep "the query failed" apart from "the
//! query returned nothing": a failure is a [`SourceError`], an empty result is
//! an empty `Vec`.

pub mod prometheus;

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use crate::rules::Labels;

/// One series of an instant query result. A scalar result is one sample
/// without labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// A source of instant query results.
pub trait MetricsSource: Send + Sync {
    /// Evaluates `expr` at time `at`.
    fn query<'a>(
        &'a self,
        expr: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>>;
}

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing listens at the URL, or the connection broke.
    #[error("cannot reach Prometheus at {url}: {message}")]
    Connect { url: String, message: String },
    /// No answer within the query timeout.
    #[error("Prometheus did not answer within {}", crate::rules::duration::format(*.after))]
    Timeout { after: Duration },
    /// An HTTP status without a Prometheus error body (a proxy, a 401…).
    #[error("Prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// Prometheus refused or failed the query (`errorType` and `error`).
    #[error("Prometheus error {error_type}: {message}")]
    Api { error_type: String, message: String },
    /// A result rollbackd cannot use (a range vector, a string, a native histogram).
    #[error("unsupported result: {0}")]
    Unsupported(String),
    /// A body that is not Prometheus's JSON.
    #[error("cannot decode Prometheus's answer: {0}")]
    Decode(String),
}

impl SourceError {
    /// A small fixed label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Connect { .. } => "connect",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Status { .. } => "http_status",
            SourceError::Api { error_type, .. } => match error_type.as_str() {
                "bad_data" => "bad_data",
                "timeout" | "canceled" => "query_timeout",
                "execution" => "execution",
                _ => "api_other",
            },
            SourceError::Unsupported(_) => "unsupported_result",
            SourceError::Decode(_) => "decode",
        }
    }
}
