//! Where rule values come from. One small trait, [`MetricsSource`], so the
//! watcher can be driven by a real Prometheus in production and by scripted
//! samples in unit tests. Errors keep "the query failed" apart from "the
//! query returned nothing": a failure is a [`SourceError`], an empty result is
//! an empty `Vec`.

pub(crate) mod catalog;
pub(crate) mod config;
pub(crate) mod prometheus;
pub(crate) mod range;
pub(crate) mod scrapes;
pub(crate) mod sigv4;

use config::AuthError;

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use crate::rules::Labels;

/// One series of an instant query result. A scalar result is one sample
/// without labels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// What one query gave.
pub(crate) type QueryResult = Result<Vec<Sample>, SourceError>;

/// One expression of a [`MetricsSource::query_many`] call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    pub expr: &'a str,
    /// The expression is scalar-typed (it answers a number, not series).
    pub scalar: bool,
}

impl<'a> Query<'a> {
    /// Reads the expression's type; one that does not parse counts as a
    /// vector (rules are validated when loaded, so that does not happen).
    pub(crate) fn new(expr: &'a str) -> Self {
        use promql_parser::parser::{self, value::ValueType};
        let scalar = parser::parse(expr).is_ok_and(|e| e.value_type() == ValueType::Scalar);
        Query { expr, scalar }
    }
}

/// A source of instant query results.
pub(crate) trait MetricsSource: Send + Sync {
    /// Evaluates `expr` at time `at`.
    fn query<'a>(&'a self, expr: &'a str, at: SystemTime) -> BoxFuture<'a, QueryResult>;

    /// The active targets' last scrapes, for evaluating just after them
    /// (`scrapes.rs`); none when the source cannot say.
    fn scrape_timings(&self) -> BoxFuture<'_, Result<Vec<scrapes::ScrapeTiming>, SourceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// `expr` at every `step` from `from` to `to` (Prometheus's range API);
    /// a source without one says so.
    fn query_range<'a>(
        &'a self,
        expr: &'a str,
        from: SystemTime,
        to: SystemTime,
        step: Duration,
    ) -> BoxFuture<'a, Result<range::Answers, SourceError>> {
        let _ = (expr, from, to, step);
        Box::pin(async {
            Err(SourceError::Unsupported(
                "this metrics source has no range queries".into(),
            ))
        })
    }

    /// Evaluates every query at the same time `at`, answering in order, at
    /// most `concurrency` requests at once. A source may answer several
    /// queries with one request, as long as each answer is the one its own
    /// query would get.
    fn query_many<'a>(
        &'a self,
        queries: &'a [Query<'a>],
        at: SystemTime,
        concurrency: usize,
    ) -> BoxFuture<'a, Vec<QueryResult>> {
        use futures_util::stream::{self, StreamExt};
        Box::pin(
            stream::iter(queries)
                .map(move |q| self.query(q.expr, at))
                .buffered(concurrency.max(1))
                .collect(),
        )
    }
}

/// Why a query gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SourceError {
    /// Nothing listens at the URL, or the connection broke.
    #[error("cannot reach Prometheus at {url}: {message}")]
    Connect { url: String, message: String },
    /// No answer within the query timeout.
    #[error("Prometheus did not answer within {}", crate::duration::format(*.after))]
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
    /// HTTP 401 or 403 (from Prometheus or a proxy in front of it): the
    /// credentials are missing or wrong. `auth_key` is the key that holds
    /// the credentials sent, if any.
    #[error("{}", unauthorized(*.status, *.auth_key, .body))]
    Unauthorized {
        status: u16,
        auth_key: Option<&'static str>,
        body: String,
    },
    /// A web page where Prometheus's JSON was expected: most often the login
    /// page of a proxy that wants credentials, sometimes a wrong URL.
    #[error("{}", web_page(*.auth_key))]
    WebPage { auth_key: Option<&'static str> },
    /// A body that is not Prometheus's JSON.
    #[error("cannot decode Prometheus's answer: {0}")]
    Decode(String),
    /// An answer past `prometheus.max_response_bytes` or `max_series`,
    /// refused before it could grow rollbackd's memory.
    #[error("Prometheus's answer is too large: {0}; narrow the query (aggregate with sum by (…)) or raise the limit")]
    TooLarge(String),
}

/// Which keys to fix when Prometheus refuses rollbackd.
fn credentials_hint(auth_key: Option<&'static str>) -> String {
    match auth_key {
        None => "rollbackd sends no credentials; set prometheus.bearer_token, bearer_token_file or basic_auth".into(),
        Some(key) => format!("fix {key} (or, if a proxy needs another kind, set bearer_token, bearer_token_file or basic_auth instead)"),
    }
}

fn unauthorized(status: u16, auth_key: Option<&'static str>, body: &str) -> String {
    let refused = if auth_key.is_some() {
        "refused rollbackd's credentials"
    } else {
        "wants credentials"
    };
    let body = if body.trim().is_empty() {
        String::new()
    } else {
        format!(" ({})", body.trim())
    };
    format!(
        "Prometheus (or a proxy in front of it) {refused}: HTTP {status}{body}; {}",
        credentials_hint(auth_key)
    )
}

fn web_page(auth_key: Option<&'static str>) -> String {
    format!(
        "Prometheus's address answered with a web page, not Prometheus's JSON: a proxy's login page? \
         If so, {}; otherwise check prometheus.url",
        credentials_hint(auth_key)
    )
}

/// The URL parser's error, named through reqwest so rollbackd needs no
/// direct dependency on the `url` crate.
pub(crate) type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Why a Prometheus client could not be built from `[prometheus]`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// `prometheus.url` does not make an API URL.
    #[error("prometheus.url {url:?} is not a URL: {cause}")]
    Url { url: String, cause: UrlError },
    /// The configured credentials cannot be read.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `[prometheus.tls]` cannot be used.
    #[error(transparent)]
    Tls(#[from] config::TlsError),
    /// The credentials cannot travel in an HTTP header.
    #[error("{key}: the Prometheus credentials contain characters not allowed in an HTTP header (a stray newline or control character?)")]
    Header { key: &'static str },
    /// `[prometheus.sigv4]` cannot be used.
    #[error(transparent)]
    SigV4(#[from] sigv4::SigV4Error),
    /// The HTTP client itself could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

impl SourceError {
    /// A small fixed label value for metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SourceError::Connect { .. } => "connect",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Status { .. } | SourceError::Unauthorized { .. } => "http_status",
            SourceError::Api { error_type, .. } => match error_type.as_str() {
                "bad_data" => "bad_data",
                "timeout" | "canceled" => "query_timeout",
                "execution" => "execution",
                _ => "api_other",
            },
            SourceError::Unsupported(_) => "unsupported_result",
            SourceError::WebPage { .. } | SourceError::Decode(_) => "decode",
            SourceError::TooLarge(_) => "too_large",
        }
    }
}
