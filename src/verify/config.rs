//! `[verify]`: the health phases checked after a rollback and their timing.
//! Data and its checks only; nothing here sends a request.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;

/// Health verification after a rollback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Pause before the first check, for the new deployment to settle.
    #[serde(with = "duration::serde_str")]
    pub initial_wait: Duration,
    /// A check slower than this fails.
    #[serde(with = "duration::serde_str")]
    pub check_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub retry_interval: Duration,
    pub phases: Vec<HealthPhaseConfig>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        let phase = |name: &str, endpoints: &[&str], min_healthy: f64| HealthPhaseConfig {
            name: name.into(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            min_healthy,
        };
        VerifyConfig {
            initial_wait: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(5),
            phases: vec![
                phase("quick", &["/", "/health"], 1.0),
                phase(
                    "core",
                    &["/health/production", "/health/critical-services"],
                    1.0,
                ),
                phase(
                    "performance",
                    &["/health/performance", "/health/comprehensive"],
                    1.0,
                ),
                phase(
                    "external",
                    &["/health/external-services", "/health/circuit-breakers"],
                    0.8,
                ),
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPhaseConfig {
    pub name: String,
    /// Paths relative to the service's base URL.
    pub endpoints: Vec<String>,
    /// Share of checks that must pass (1.0: all; the external phase: 0.8).
    #[serde(default = "all")]
    pub min_healthy: f64,
}

fn all() -> f64 {
    1.0
}

impl VerifyConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.check_timeout.is_zero() {
            problems.push("verify.check_timeout: must be greater than 0s".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, phase) in self.phases.iter().enumerate() {
            let at = format!("verify.phases[{i}] ({:?})", phase.name);
            if phase.name.trim().is_empty() || !names.insert(phase.name.clone()) {
                problems.push(format!("{at}: needs a unique, non-empty name"));
            }
            if phase.endpoints.is_empty() {
                problems.push(format!("{at}: list at least one endpoint"));
            }
            for e in &phase.endpoints {
                if !e.starts_with('/') {
                    problems.push(format!(
                        "{at}: endpoint {e:?} must be a path starting with / (it is joined to the base URL)"
                    ));
                }
            }
            if !(phase.min_healthy > 0.0 && phase.min_healthy <= 1.0) {
                problems.push(format!("{at}: min_healthy must be in (0, 1], like 0.8"));
            }
        }
    }
}
