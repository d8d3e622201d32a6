//! Prometheus's range API (`/api/v1/query_range`), for back-tests: an
//! expression evaluated at every step of a time range, exactly as an instant
//! query at each of those times would be. Long ranges are split so no
//! request asks for more than [`MAX_POINTS`] points per series (Prometheus
//! refuses more than 11,000), and answers are read within
//! `prometheus.max_response_bytes` like every other answer.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::prometheus::Prometheus;
use super::{Sample, SourceError};
use crate::rules::Labels;

/// Points per series in one request (Prometheus's limit is 11,000).
pub(crate) const MAX_POINTS: u64 = 10_000;

/// An expression's answers over a range: for each evaluation time (Unix
/// milliseconds), the series that had a value then. A time missing from
/// the map had no series (an empty answer).
pub(crate) type Answers = BTreeMap<u64, Vec<Sample>>;

/// Milliseconds since the epoch.
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The evaluation times from `from` to `to`, every `step`, in chunks of at
/// most [`MAX_POINTS`] (Unix milliseconds, first and last of each chunk).
pub(crate) fn chunks(from: u64, to: u64, step: Duration) -> Vec<(u64, u64)> {
    let step_ms = step.as_millis().max(1) as u64;
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + step_ms * (MAX_POINTS - 1)).min(to);
        out.push((start, end));
        start = end + step_ms;
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    kind: String,
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: Labels,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Adds a matrix answer to `answers`; refuses what is not a matrix.
fn add(body: &[u8], answers: &mut Answers) -> Result<(), SourceError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| SourceError::Decode(format!("/api/v1/query_range: {e}")))?;
    if answer.status != "success" {
        return Err(SourceError::Decode(format!(
            "/api/v1/query_range: {}",
            answer.error.unwrap_or_else(|| answer.status.clone())
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| SourceError::Decode("/api/v1/query_range: an answer without data".into()))?;
    if data.kind != "matrix" {
        return Err(SourceError::Decode(format!(
            "/api/v1/query_range answered a {} (a range query answers a matrix)",
            data.kind
        )));
    }
    for series in data.result {
        for (t, v) in series.values {
            let value = super::prometheus::parse_value(&v)?;
            answers
                .entry((t * 1000.0).round() as u64)
                .or_default()
                .push(Sample {
                    labels: series.metric.clone(),
                    value,
                });
        }
    }
    Ok(())
}

impl Prometheus {
    /// `expr` at every `step` from `from` to `to` (both included).
    pub(crate) async fn query_range(
        &self,
        expr: &str,
        from: SystemTime,
        to: SystemTime,
        step: Duration,
    ) -> Result<Answers, SourceError> {
        let mut answers = Answers::new();
        for (start, end) in chunks(millis(from), millis(to), step) {
            let url = format!("{}/api/v1/query_range", self.base);
            let form = [
                ("query", expr.to_string()),
                ("start", format!("{:.3}", start as f64 / 1000.0)),
                ("end", format!("{:.3}", end as f64 / 1000.0)),
                ("step", format!("{:.3}", step.as_secs_f64())),
                ("timeout", format!("{}s", self.timeout.as_secs().max(1))),
            ];
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            let request = self
                .client
                .post(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
            let (status, bytes) = self.read(request).await?;
            if !status.is_success() && !status.is_client_error() {
                return Err(SourceError::Decode(format!(
                    "/api/v1/query_range answered HTTP {status}"
                )));
            }
            add(&bytes, &mut answers)?;
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_week_at_15_s_is_split_below_prometheus_s_limit_without_gaps() {
        let step = Duration::from_secs(15);
        let week = 7 * 24 * 3600 * 1000;
        let parts = chunks(0, week, step);
        // 40,321 points: five requests.
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[0], (0, 15_000 * 9_999));
        for pair in parts.windows(2) {
            assert_eq!(pair[1].0, pair[0].1 + 15_000, "no gap, no overlap");
        }
        assert_eq!(parts.last().unwrap().1, week);
        assert!(parts.iter().all(|(a, b)| (b - a) / 15_000 < MAX_POINTS));
    }

    #[test]
    fn a_matrix_is_read_per_time_and_anything_else_refused() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"code":"500"},"values":[[1700000000,"0.5"],[1700000015.5,"NaN"]]},
            {"metric":{"code":"502"},"values":[[1700000000,"+Inf"]]}]}}"#;
        let mut answers = Answers::new();
        add(body, &mut answers).unwrap();
        assert_eq!(answers[&1_700_000_000_000].len(), 2);
        assert!(answers[&1_700_000_015_500][0].value.is_nan());
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(add(vector, &mut Answers::new())
            .unwrap_err()
            .to_string()
            .contains("a range query answers a matrix"));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(add(error, &mut Answers::new())
            .unwrap_err()
            .to_string()
            .contains("parse error at char 3"));
    }
}
