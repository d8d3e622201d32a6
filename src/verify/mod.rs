//! Health checks against the service's own HTTP endpoints, for probe rules
//! and for verification after a rollback. A check never panics and never
//! hangs past its timeout: every failure is a [`CheckResult`]. Asking
//! ([`HealthProbe::fetch`]) is apart from judging ([`judge`]), which is pure.

pub(crate) mod config;
pub(crate) mod phases;
pub(crate) mod startup;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

pub use crate::expect::{body, BodyCheck, Component, Expect};
pub use phases::{verify, Verification};

/// The most of a body that is read; health answers are small.
const MAX_BODY: usize = 1 << 20;

/// An HTTP answer, before it is judged.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The outcome of one HTTP health check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub healthy: bool,
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why the check failed, in words (empty when healthy).
    pub reason: String,
    /// The components the body reported, each judged (empty when none are configured).
    pub components: Vec<Component>,
}

impl CheckResult {
    pub fn unanswered(latency: Duration, reason: String) -> CheckResult {
        CheckResult {
            healthy: false,
            status: None,
            latency,
            reason,
            components: Vec::new(),
        }
    }
}

/// Judges an answer: its status first, then its body. The check is
/// unhealthy when any component is; the phase may count components instead.
pub fn judge(expect: &Expect, answer: Answer, latency: Duration) -> CheckResult {
    let status = answer.status;
    let status_ok = if expect.status.is_empty() {
        (200..300).contains(&status)
    } else {
        expect.status.contains(&status)
    };
    let mut result = CheckResult {
        healthy: false,
        status: Some(status),
        latency,
        reason: String::new(),
        components: Vec::new(),
    };
    if !status_ok {
        let wanted: Vec<String> = expect.status.iter().map(u16::to_string).collect();
        result.reason = if wanted.is_empty() {
            format!("HTTP {status}")
        } else {
            format!(
                "HTTP {status}, expected {} (expect_status)",
                wanted.join(" or ")
            )
        };
        return result;
    }
    let Some(body) = &expect.body else {
        result.healthy = true;
        return result;
    };
    match body.judge(&answer.body) {
        Err(reason) => result.reason = reason.to_string(),
        Ok(components) => {
            let failed: Vec<String> = components
                .iter()
                .filter(|c| !c.healthy)
                .map(|c| format!("{}: {}", c.name, c.reason))
                .collect();
            result.healthy = failed.is_empty();
            result.reason = failed.join("; ");
            result.components = components;
        }
    }
    result
}

/// GETs `url` and judges the answer within `timeout`.
pub async fn check(
    probe: &dyn HealthProbe,
    url: &str,
    timeout: Duration,
    expect: &Expect,
) -> CheckResult {
    let started = tokio::time::Instant::now();
    let fetched = probe.fetch(url, timeout, expect.body.is_some()).await;
    let latency = started.elapsed();
    match fetched {
        Ok(answer) => judge(expect, answer, latency),
        Err(reason) => CheckResult::unanswered(latency, reason.to_string()),
    }
}

/// How health endpoints are asked: the real HTTP client, or a scripted
/// fake in tests (the judging is the same either way).
pub trait HealthProbe: Send + Sync {
    /// GETs `url` within `timeout`: the answer (its body only when
    /// `read_body`), or why there was none.
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        timeout: Duration,
        read_body: bool,
    ) -> BoxFuture<'a, Result<Answer, FetchError>>;
}

/// Why a health endpoint gave no answer to judge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {}", crate::duration::format(*.0))]
    Timeout(Duration),
    #[error("connection refused or unreachable")]
    Unreachable,
    #[error("request failed")]
    Failed,
    #[error("HTTP {status}, but the body did not arrive within {}", crate::duration::format(*.timeout))]
    SlowBody { status: u16, timeout: Duration },
    #[error("HTTP {status}, then {broke}")]
    BodyBroke { status: u16, broke: Box<FetchError> },
    #[error("HTTP {status}, but the body is larger than {} MiB (body.* reads small JSON answers)", MAX_BODY >> 20)]
    BodyTooLarge { status: u16 },
}

impl HealthProbe for reqwest::Client {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        timeout: Duration,
        read_body: bool,
    ) -> BoxFuture<'a, Result<Answer, FetchError>> {
        Box::pin(async move {
            let started = Instant::now();
            let words = |e: reqwest::Error| {
                if e.is_timeout() {
                    FetchError::Timeout(timeout)
                } else if e.is_connect() {
                    FetchError::Unreachable
                } else {
                    FetchError::Failed
                }
            };
            let mut response = self.get(url).timeout(timeout).send().await.map_err(words)?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            let mut reading = read_body;
            while reading {
                let left = timeout.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, response.chunk()).await {
                    Err(_) => return Err(FetchError::SlowBody { status, timeout }),
                    Ok(Err(e)) => {
                        return Err(FetchError::BodyBroke {
                            status,
                            broke: Box::new(words(e)),
                        })
                    }
                    Ok(Ok(None)) => reading = false,
                    Ok(Ok(Some(chunk))) => {
                        body.extend_from_slice(&chunk);
                        if body.len() > MAX_BODY {
                            return Err(FetchError::BodyTooLarge { status });
                        }
                    }
                }
            }
            Ok(Answer { status, body })
        })
    }
}

/// The HTTP client for health checks (at most three redirects followed).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!(
            "rollbackd/",
            env!("CARGO_PKG_VERSION"),
            " health-check"
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_status_is_judged_before_the_body() {
        let exactly_200 = Expect::status(vec![200]);
        let ms = Duration::from_millis(3);
        assert!(judge(&exactly_200, answer(200, ""), ms).healthy);
        let created = judge(&exactly_200, answer(201, ""), ms);
        assert!(!created.healthy);
        assert_eq!(created.reason, "HTTP 201, expected 200 (expect_status)");
        assert!(judge(&Expect::default(), answer(201, ""), ms).healthy);
        let with_body = Expect {
            status: vec![200],
            body: Some(BodyCheck::with_components("/services")),
        };
        assert_eq!(
            judge(&with_body, answer(503, "not json"), ms).reason,
            "HTTP 503, expected 200 (expect_status)"
        );
        let r = judge(
            &with_body,
            answer(200, r#"{"services":{"a":"ok","b":"down"}}"#),
            ms,
        );
        assert!(!r.healthy);
        assert_eq!(r.reason, "b: status down");
        assert_eq!(r.components.len(), 2);
    }
}
