//! Prometheus's HTTP API (`/api/v1/query`), read with a plain reqwest client.
//!
//! rollbackd parses the JSON itself rather than through a typed client so
//! that every shape Prometheus can answer with (vector, scalar, "NaN",
//! "+Inf", a string result, a native histogram, an error body behind a proxy)
//! maps to a known outcome instead of a parse failure.
//!
//! Every answer is read within bounds: `prometheus.max_response_bytes` read
//! in chunks, `prometheus.max_series` per query, large answers parsed off
//! the runtime thread, two series with the same labels refused.
//!
//! Just over 600 lines with its comments (about 530 of code; the tests are
//! in `prometheus/tests.rs`): one client, whose single, combined and range
//! queries share the bounds and the reading of failures, kept together.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{join_all, BoxFuture};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::config::{PrometheusAuth, PrometheusConfig};
use super::{MetricsSource, Query, QueryResult, Sample, SetupError, SourceError};
use crate::rules::Labels;

/// A Prometheus server reached over HTTP.
#[derive(Clone)]
pub(crate) struct Prometheus {
    pub(super) client: reqwest::Client,
    query_url: reqwest::Url,
    pub(super) base: String,
    pub(super) timeout: Duration,
    max_per_request: usize,
    max_response_bytes: u64,
    max_series: usize,
    /// The key holding the credentials sent, named when Prometheus refuses them.
    auth_key: Option<&'static str>,
    /// Whether rollbackd speaks TLS to it without a client certificate: a
    /// connection it closes at once may want one.
    tls_without_client_cert: bool,
    /// Expressions that failed when asked alone after a combined request
    /// fell back: asked alone from then on, until one succeeds, so a broken
    /// or slow expression does not cost its chunk a failed combined request
    /// on every tick.
    solo: Arc<Mutex<HashSet<String>>>,
    /// Signs every request (Amazon Managed Service for Prometheus).
    sigv4: Option<Arc<super::sigv4::Signer>>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("url", &crate::secret::redact_url(&self.base))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Prometheus {
    /// Builds a client from validated config. Fails only when the client
    /// itself cannot be built (for example an unreadable token file).
    pub(crate) fn new(config: &PrometheusConfig) -> Result<Self, SetupError> {
        let base = config.url.trim_end_matches('/').to_string();
        let query_url = reqwest::Url::parse(&format!("{base}/api/v1/query")).map_err(|source| {
            SetupError::Url {
                url: crate::secret::redact_url(&config.url),
                cause: source,
            }
        })?;
        let mut headers = HeaderMap::new();
        let auth_key = config.auth_key();
        if let Some(auth) = config.auth()? {
            let value = match auth {
                PrometheusAuth::Bearer(token) => format!("Bearer {token}"),
                PrometheusAuth::Basic { username, password } => {
                    format!(
                        "Basic {}",
                        crate::secret::base64(&format!("{username}:{password}"))
                    )
                }
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| SetupError::Header {
                key: auth_key.unwrap_or("prometheus"),
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for h in config.resolved_headers()? {
            headers.insert(h.name, h.value);
        }
        crate::install_crypto_provider();
        let client = config
            .tls
            .apply(reqwest::Client::builder())?
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError::Client)?;
        Ok(Prometheus {
            client,
            query_url,
            base,
            timeout: config.timeout,
            max_per_request: config.max_queries_per_request.max(1),
            max_response_bytes: config.max_response_bytes,
            max_series: config.max_series.max(1),
            auth_key,
            tls_without_client_cert: config.url.starts_with("https:")
                && config.tls.cert_file.is_none(),
            solo: Arc::default(),
            sigv4: match &config.sigv4 {
                Some(c) => Some(Arc::new(super::sigv4::Signer::new(c)?)),
                None => None,
            },
        })
    }

    /// One query, one GET request.
    async fn instant(&self, expr: &str, at: SystemTime) -> QueryResult {
        let mut url = self.query_url.clone();
        url.query_pairs_mut().extend_pairs(self.params(expr, at));
        crate::telemetry::events::prometheus_request("single");
        let samples = self.answer(self.client.get(url), self.max_series).await?;
        distinct(&samples)?;
        Ok(samples)
    }

    /// Several queries combined into one expression, sent as a form POST
    /// (the combined text can outgrow what proxies accept in a URL).
    async fn combined(
        &self,
        queries: &[Query<'_>],
        at: SystemTime,
    ) -> Result<Vec<Vec<Sample>>, SourceError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.params(&combine(queries), at))
            .finish();
        crate::telemetry::events::prometheus_request("combined");
        let request = self
            .client
            .post(self.query_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        // The series bound is each query's: the whole answer may hold
        // `max_series` per query, and each is checked once split.
        let bound = self.max_series.saturating_mul(queries.len());
        split(self.answer(request, bound).await?, queries.len())
    }

    fn params(&self, expr: &str, at: SystemTime) -> [(&'static str, String); 3] {
        let at = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        [
            ("query", expr.to_string()),
            ("time", format!("{at:.3}")),
            ("timeout", format!("{}ms", self.timeout.as_millis())),
        ]
    }

    /// Answers one chunk of queries: combined when there are several, and
    /// one by one when the combined request reached Prometheus but did not
    /// give every answer (one expression failing, or too slow, must not
    /// decide the others' answers).
    async fn chunk(
        &self,
        queries: &[Query<'_>],
        at: SystemTime,
        permits: &Semaphore,
    ) -> Vec<QueryResult> {
        if queries.len() > 1 {
            let combined = {
                let _permit = permits.acquire().await.ok();
                self.combined(queries, at).await
            };
            match combined {
                Ok(answers) => {
                    let answers: Vec<QueryResult> =
                        answers.into_iter().map(|a| self.within_series(a)).collect();
                    // A query over the series bound is asked alone from now
                    // on, so it stops swelling its chunk's answers.
                    let mut solo = self.solo_set();
                    for (q, a) in queries.iter().zip(&answers) {
                        if a.is_err() {
                            solo.insert(q.expr.to_string());
                        }
                    }
                    return answers;
                }
                Err(e) if !worth_asking_one_by_one(&e) => {
                    return queries.iter().map(|_| Err(e.clone())).collect();
                }
                Err(e) => {
                    crate::telemetry::events::combined_query_split(queries.len(), &e);
                }
            }
        }
        let answers = join_all(queries.iter().map(|q| self.alone(q, at, permits))).await;
        if queries.len() > 1 {
            let mut solo = self.solo_set();
            for (q, answer) in queries.iter().zip(&answers) {
                if answer.as_ref().is_err_and(worth_asking_one_by_one) {
                    solo.insert(q.expr.to_string());
                }
            }
        }
        answers
    }

    /// One query on its own request; one that succeeds may be combined again.
    async fn alone(&self, q: &Query<'_>, at: SystemTime, permits: &Semaphore) -> QueryResult {
        let answer = {
            let _permit = permits.acquire().await.ok();
            self.instant(q.expr, at).await
        };
        if answer.is_ok() {
            self.solo_set().remove(q.expr);
        }
        answer
    }

    /// The queries in their order, in chunks of up to `max_per_request`;
    /// a query that is asked alone is a chunk of its own.
    fn chunks<'q>(&self, queries: &[Query<'q>]) -> Vec<Vec<Query<'q>>> {
        let solo = self.solo_set();
        let mut chunks: Vec<Vec<Query<'q>>> = Vec::new();
        for q in queries {
            let alone = solo.contains(q.expr);
            match chunks.last_mut() {
                Some(last)
                    if !alone
                        && last.len() < self.max_per_request
                        && !solo.contains(last[0].expr) =>
                {
                    last.push(*q)
                }
                _ => chunks.push(vec![*q]),
            }
        }
        chunks
    }

    fn solo_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.solo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `request` and reads its answer, within the size limits; a
    /// large body is parsed on a blocking thread, so the runtime (the
    /// other groups, the HTTP server) never waits on it.
    /// One query's answer, refused past `prometheus.max_series`.
    fn within_series(&self, samples: Vec<Sample>) -> QueryResult {
        if samples.len() > self.max_series {
            return Err(SourceError::TooLarge(format!(
                "{} series, more than {} (prometheus.max_series)",
                samples.len(),
                self.max_series
            )));
        }
        Ok(samples)
    }

    async fn answer(&self, request: reqwest::RequestBuilder, max_series: usize) -> QueryResult {
        let (status, body) = self.read(request).await?;
        let auth_key = self.auth_key;
        if body.len() < 256 << 10 {
            return parse_answer(status, &body, auth_key, max_series);
        }
        tokio::task::spawn_blocking(move || parse_answer(status, &body, auth_key, max_series))
            .await
            .unwrap_or_else(|e| {
                Err(SourceError::Decode(format!(
                    "parsing ended abnormally: {e}"
                )))
            })
    }

    /// Sends `request` and reads the answer, at most
    /// `prometheus.max_response_bytes` of it.
    pub(super) async fn read(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), SourceError> {
        let mut request = request.build().map_err(|e| self.transport(e))?;
        if let Some(signer) = &self.sigv4 {
            signer
                .sign(&mut request)
                .await
                .map_err(|message| SourceError::Connect {
                    url: crate::secret::redact_url(&self.base),
                    message,
                })?;
        }
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let too_large = || {
            SourceError::TooLarge(format!(
                "more than {} bytes (prometheus.max_response_bytes)",
                self.max_response_bytes
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if (body.len() + chunk.len()) as u64 > self.max_response_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    fn transport(&self, e: reqwest::Error) -> SourceError {
        // A connect timeout is "cannot reach", not "the query was slow".
        if e.is_timeout() && !e.is_connect() {
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
                url: crate::secret::redact_url(&self.base),
                message: format!(
                    "{}{}",
                    crate::secret::redact_url(&message),
                    tls_hint(&message, self.tls_without_client_cert)
                ),
            }
        }
    }
}

/// What to change for a TLS failure, from rustls's words.
fn tls_hint(message: &str, without_client_cert: bool) -> &'static str {
    if message.contains("invalid peer certificate") {
        if message.contains("NotValidForName") || message.contains("not valid for name") {
            "; Prometheus's certificate does not name the host in prometheus.url (or prometheus.tls.server_name): use the name (or IP) it was issued for, or set server_name to it"
        } else if message.contains("Expired") || message.contains("certificate expired") {
            "; Prometheus's certificate has expired"
        } else {
            "; Prometheus's certificate is not trusted: set prometheus.tls.ca_file to the CA that signed it"
        }
    } else if message.contains("CertificateRequired")
        || message.contains("certificate required")
        || message.contains("BadCertificate")
        || message.contains("UnknownCA")
        || (without_client_cert
            && (message.contains("connection closed")
                || message.contains("connection was not ready")))
    {
        // Go's TLS server answers a missing client certificate with
        // `certificate_required` under TLS 1.3 and `bad_certificate` under
        // TLS 1.2, or closes the connection before the alert is read (hyper
        // then says the connection closed, or was not ready): which one
        // rollbackd sees depends on timing, so the hint depends only on
        // whether it presented one.
        if without_client_cert {
            "; Prometheus wants a client certificate (client_auth_type): set prometheus.tls.cert_file and key_file"
        } else {
            "; Prometheus refused rollbackd's client certificate: set prometheus.tls.cert_file and key_file to a certificate its client_ca_file trusts"
        }
    } else {
        ""
    }
}

impl MetricsSource for Prometheus {
    fn query<'a>(&'a self, expr: &'a str, at: SystemTime) -> BoxFuture<'a, QueryResult> {
        Box::pin(self.instant(expr, at))
    }

    fn query_range<'a>(
        &'a self,
        expr: &'a str,
        from: SystemTime,
        to: SystemTime,
        step: std::time::Duration,
    ) -> BoxFuture<'a, Result<super::range::Answers, SourceError>> {
        Box::pin(Prometheus::query_range(self, expr, from, to, step))
    }

    fn scrape_timings(
        &self,
    ) -> BoxFuture<'_, Result<Vec<super::scrapes::ScrapeTiming>, SourceError>> {
        Box::pin(Prometheus::scrape_timings(self))
    }

    /// Up to `prometheus.max_queries_per_request` queries per request.
    fn query_many<'a>(
        &'a self,
        queries: &'a [Query<'a>],
        at: SystemTime,
        concurrency: usize,
    ) -> BoxFuture<'a, Vec<QueryResult>> {
        Box::pin(async move {
            let permits = Semaphore::new(concurrency.clamp(1, Semaphore::MAX_PERMITS));
            let chunks = self.chunks(queries);
            join_all(chunks.iter().map(|chunk| self.chunk(chunk, at, &permits)))
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }
}

/// Reads an answer's body: samples, Prometheus's error, or why neither.
pub(crate) fn parse_answer(
    status: reqwest::StatusCode,
    body: &[u8],
    auth_key: Option<&'static str>,
    max_series: usize,
) -> QueryResult {
    match serde_json::from_slice::<ApiResponse>(body) {
        Ok(ApiResponse {
            status: ApiStatus::Success,
            data: Some(data),
            ..
        }) => decode(data, max_series),
        Ok(ApiResponse {
            status: ApiStatus::Error,
            error_type,
            error,
            ..
        }) => Err(SourceError::Api {
            error_type: error_type.unwrap_or_else(|| "unknown".into()),
            message: error.unwrap_or_default(),
        }),
        _ if matches!(status.as_u16(), 401 | 403) => Err(SourceError::Unauthorized {
            status: status.as_u16(),
            auth_key,
            body: String::from_utf8_lossy(body).chars().take(200).collect(),
        }),
        _ if !status.is_success() => Err(SourceError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(body).chars().take(200).collect(),
        }),
        Ok(_) => Err(SourceError::Decode("a success answer without data".into())),
        Err(_) if looks_like_a_web_page(body) => Err(SourceError::WebPage { auth_key }),
        Err(e) => Err(SourceError::Decode(e.to_string())),
    }
}

/// Fails when two series of one answer carry the same labels: Prometheus
/// never answers so, and a proxy that merges answers badly does, so the
/// value to judge is unknown.
fn distinct(samples: &[Sample]) -> Result<(), SourceError> {
    let mut seen = HashSet::with_capacity(samples.len());
    for s in samples {
        if !seen.insert(&s.labels) {
            return Err(SourceError::Decode(format!(
                "two series with the same labels {:?}; a proxy in front of Prometheus may be merging answers",
                s.labels
            )));
        }
    }
    Ok(())
}

/// The label that tells a combined query's answers apart.
const INDEX_LABEL: &str = "__rollbackd_query__";

/// `label_replace(<q0>, "__rollbackd_query__", "0", "", "") or …`: every
/// series of query `i` carries the label `i`, so no two queries' series can
/// match each other under `or`, and each answer comes back whole. A scalar
/// query is wrapped in `vector()`. Each expression sits on lines of its own,
/// so a trailing `# comment` in it cannot swallow the closing parenthesis.
fn combine(queries: &[Query<'_>]) -> String {
    let mut out = String::new();
    for (i, q) in queries.iter().enumerate() {
        if i > 0 {
            out.push_str("\nor\n");
        }
        let (open, close) = if q.scalar {
            ("vector(", ")")
        } else {
            ("(", ")")
        };
        out.push_str(&format!(
            "label_replace({open}\n{}\n{close}, \"{INDEX_LABEL}\", \"{i}\", \"\", \"\")",
            q.expr
        ));
    }
    out
}

/// Sorts a combined answer back into one answer per query.
pub(crate) fn split(samples: Vec<Sample>, queries: usize) -> Result<Vec<Vec<Sample>>, SourceError> {
    let mut answers = vec![Vec::new(); queries];
    for mut sample in samples {
        let index = sample
            .labels
            .remove(INDEX_LABEL)
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < queries)
            .ok_or_else(|| {
                SourceError::Decode(format!(
                    "a combined answer has a series without a valid {INDEX_LABEL} label"
                ))
            })?;
        answers[index].push(sample);
    }
    for answer in &answers {
        distinct(answer)?;
    }
    Ok(answers)
}

/// HTML where JSON was expected: a proxy's login page after a redirect
/// answers 200, so only the body tells it apart.
fn looks_like_a_web_page(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &body[i..]);
    start.starts_with(b"<")
}

/// Whether a failed combined request is worth repeating query by query:
/// not when Prometheus cannot be reached or says it is overloaded, which
/// every single query would hear too.
fn worth_asking_one_by_one(e: &SourceError) -> bool {
    !matches!(
        e,
        SourceError::Connect { .. }
            | SourceError::Unauthorized { .. }
            | SourceError::WebPage { .. }
            | SourceError::Status {
                status: 401 | 403 | 429 | 502 | 503 | 504,
                ..
            }
    )
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

fn decode(data: ApiData, max_series: usize) -> Result<Vec<Sample>, SourceError> {
    match data {
        ApiData::Vector(items) if items.len() > max_series => Err(SourceError::TooLarge(format!(
            "{} series, more than {max_series} (prometheus.max_series)",
            items.len()
        ))),
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
pub(super) fn parse_value(text: &str) -> Result<f64, SourceError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .map_err(|_| SourceError::Decode(format!("sample value {text:?} is not a number"))),
    }
}

#[cfg(test)]
mod tests;
