//! Health checks against the service's own HTTP endpoints, for probe rules
//! and for verification after a rollback. A check never panics and never
//! hangs past its timeout: every failure is a [`CheckResult`].

pub mod config;
pub mod phases;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

pub use phases::{verify, Verification};

/// The outcome of one HTTP health check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub healthy: bool,
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why the check failed, in words (empty when healthy).
    pub reason: String,
}

/// GETs `url` and judges the answer: healthy when the status is in `expect`
/// (any 2xx when `expect` is empty) within `timeout`.
pub async fn check(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    expect: &[u16],
) -> CheckResult {
    let started = Instant::now();
    let result = client.get(url).timeout(timeout).send().await;
    let latency = started.elapsed();
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let healthy = if expect.is_empty() {
                response.status().is_success()
            } else {
                expect.contains(&status)
            };
            CheckResult {
                healthy,
                status: Some(status),
                latency,
                reason: if healthy {
                    String::new()
                } else {
                    format!("HTTP {status}")
                },
            }
        }
        Err(e) => CheckResult {
            healthy: false,
            status: None,
            latency,
            reason: if e.is_timeout() {
                format!("no answer within {}", crate::duration::format(timeout))
            } else if e.is_connect() {
                "connection refused or unreachable".to_string()
            } else {
                "request failed".to_string()
            },
        },
    }
}

/// How health endpoints are asked: the real HTTP client, or a scripted
/// fake in tests (the verification logic is the same either way).
pub trait HealthProbe: Send + Sync {
    /// GETs `url` within `timeout`; healthy on any 2xx.
    fn get<'a>(&'a self, url: &'a str, timeout: Duration) -> BoxFuture<'a, CheckResult>;
}

impl HealthProbe for reqwest::Client {
    fn get<'a>(&'a self, url: &'a str, timeout: Duration) -> BoxFuture<'a, CheckResult> {
        Box::pin(check(self, url, timeout, &[]))
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
