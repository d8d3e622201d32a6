//! `[verify]`: the health phases checked after a rollback and their timing.
//! Data and its checks only; nothing here sends a request.

use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess};
use serde::Deserialize;

use super::body::{BodyCheck, LatencyUnit};
use super::Expect;
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
    /// Statuses a check accepts unless its endpoint says otherwise (empty:
    /// any 2xx; the shipped core phase asks exactly 200 of its critical checks).
    pub expect_status: Vec<u16>,
    pub phases: Vec<HealthPhaseConfig>,
    /// Start-up errors in the rollback deployment's logs.
    pub startup_logs: super::startup::StartupLogsConfig,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        let phase =
            |name: &str, endpoints: Vec<EndpointConfig>, min_healthy: f64| HealthPhaseConfig {
                name: name.into(),
                endpoints,
                min_healthy,
                count: Count::Endpoints,
            };
        let paths = |paths: &[&str]| paths.iter().map(|p| EndpointConfig::path(p)).collect();
        // The seed: critical checks return exactly 200.
        let critical = |path: &str| EndpointConfig {
            expect_status: Some(vec![200]),
            ..EndpointConfig::path(path)
        };
        // The seed's performance phase: no component slower than 5 s.
        let performance = EndpointConfig {
            body: Some(BodyCheck {
                component_latency: Some("/response_time_ms".into()),
                latency_unit: LatencyUnit::Ms,
                max_latency: Some(Duration::from_secs(5)),
                ..BodyCheck::with_components("/components")
            }),
            ..EndpointConfig::path("/health/performance")
        };
        // The seed's external phase: 80 % of the external services listed.
        let external = EndpointConfig {
            body: Some(BodyCheck::with_components("/services")),
            ..EndpointConfig::path("/health/external-services")
        };
        VerifyConfig {
            initial_wait: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(5),
            expect_status: Vec::new(),
            startup_logs: Default::default(),
            phases: vec![
                phase("quick", paths(&["/", "/health"]), 1.0),
                phase(
                    "core",
                    vec![
                        critical("/health/production"),
                        critical("/health/critical-services"),
                    ],
                    1.0,
                ),
                phase(
                    "performance",
                    vec![performance, EndpointConfig::path("/health/comprehensive")],
                    1.0,
                ),
                HealthPhaseConfig {
                    count: Count::Components,
                    ..phase(
                        "external",
                        vec![external, EndpointConfig::path("/health/circuit-breakers")],
                        0.8,
                    )
                },
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPhaseConfig {
    pub name: String,
    /// Paths relative to the service's base URL, or tables with a path.
    pub endpoints: Vec<EndpointConfig>,
    /// Share of checks that must pass (1.0: all; the external phase: 0.8).
    #[serde(default = "all")]
    pub min_healthy: f64,
    /// What `min_healthy` counts.
    #[serde(default)]
    pub count: Count,
}

fn all() -> f64 {
    1.0
}

/// What a phase's `min_healthy` counts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Count {
    /// Each endpoint is one check; one with components is healthy when all are.
    #[default]
    Endpoints,
    /// Each component is one check; an endpoint without components (or
    /// whose components could not be read) is one.
    Components,
}

impl HealthPhaseConfig {
    /// How many checks may fail out of `total`: the share `1 - min_healthy`,
    /// rounded to the nearest whole check, halves down (at 0.8: none of 2,
    /// one of 3 to 7, two of 8 to 12).
    pub fn tolerated(&self, total: usize) -> usize {
        let share = (1.0 - self.min_healthy).max(0.0) * total as f64;
        ((share + 0.5 - 1e-9).floor() as usize).min(total)
    }
}

/// One health endpoint: `"/health"`, or a table
/// `{ path = "/health/performance", expect_status = [200], body = { … } }`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub path: String,
    /// Overrides `verify.expect_status` for this endpoint.
    pub expect_status: Option<Vec<u16>>,
    /// What the JSON body must say.
    pub body: Option<BodyCheck>,
}

impl EndpointConfig {
    pub fn path(path: &str) -> EndpointConfig {
        EndpointConfig {
            path: path.into(),
            expect_status: None,
            body: None,
        }
    }

    /// What makes this endpoint's answer healthy, given the phase defaults.
    pub fn expect(&self, verify: &VerifyConfig) -> Expect {
        Expect {
            status: self
                .expect_status
                .clone()
                .unwrap_or_else(|| verify.expect_status.clone()),
            body: self.body.clone(),
        }
    }

    /// The path and, when a body is read, what it must say.
    pub fn describe(&self) -> String {
        match &self.body {
            Some(body) => format!("{} [{}]", self.path, body.describe()),
            None => self.path.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for EndpointConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EndpointConfig, D::Error> {
        endpoint(d)
    }
}

/// A path string or a table, each with its own error messages.
fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<EndpointConfig, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = EndpointConfig;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a path like \"/health\" or a table like { path = \"/health\", body = { status = \"/status\" } }")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointConfig, E> {
            Ok(EndpointConfig::path(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointConfig, A::Error> {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Table {
                path: String,
                #[serde(default)]
                expect_status: Option<Vec<u16>>,
                #[serde(default)]
                body: Option<BodyCheck>,
            }
            let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(EndpointConfig {
                path: t.path,
                expect_status: t.expect_status,
                body: t.body,
            })
        }
    }
    d.deserialize_any(Visitor)
}

impl VerifyConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.check_timeout.is_zero() {
            problems.push("verify.check_timeout: must be greater than 0s".into());
        }
        validate_statuses("verify", &self.expect_status, problems);
        self.startup_logs.validate(problems);
        let mut names = std::collections::BTreeSet::new();
        for (i, phase) in self.phases.iter().enumerate() {
            let at = format!("verify.phases[{i}] ({:?})", phase.name);
            if phase.name.trim().is_empty() || !names.insert(phase.name.clone()) {
                problems.push(format!("{at}: needs a unique, non-empty name"));
            }
            if phase.endpoints.is_empty() {
                problems.push(format!("{at}: list at least one endpoint"));
            }
            for (j, e) in phase.endpoints.iter().enumerate() {
                if !e.path.starts_with('/') {
                    problems.push(format!(
                        "{at}: endpoint {:?} must be a path starting with / (it is joined to the base URL)",
                        e.path
                    ));
                }
                let here = format!("verify.phases[{i}].endpoints[{j}]");
                validate_statuses(&here, e.expect_status.as_deref().unwrap_or(&[]), problems);
                if let Some(body) = &e.body {
                    body.validate(&here, problems);
                }
            }
            if !(phase.min_healthy > 0.0 && phase.min_healthy <= 1.0) {
                problems.push(format!("{at}: min_healthy must be in (0, 1], like 0.8"));
            }
        }
    }
}

fn validate_statuses(at: &str, statuses: &[u16], problems: &mut Vec<String>) {
    for status in statuses {
        if !(100..=599).contains(status) {
            problems.push(format!(
                "{at}.expect_status: {status} is not an HTTP status (100 to 599)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(toml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path)).map_err(|e| e.to_string())
    }

    #[test]
    fn endpoints_are_paths_or_tables() {
        let config = load(
            r#"
[verify]
expect_status = [200, 204]
[[verify.phases]]
name = "external"
min_healthy = 0.8
count = "components"
endpoints = [
  "/health/circuit-breakers",
  { path = "/health/external-services", expect_status = [200, 503], body = { components = "/services", component_latency = "/ms", max_latency = "2s" } },
]
"#,
        )
        .unwrap();
        let phase = &config.verify.phases[0];
        assert_eq!(phase.count, Count::Components);
        assert_eq!(
            phase.endpoints[0],
            EndpointConfig::path("/health/circuit-breakers")
        );
        assert_eq!(phase.endpoints[0].expect(&config.verify).status, [200, 204]);
        let external = &phase.endpoints[1];
        assert_eq!(external.expect(&config.verify).status, [200, 503]);
        let body = external.body.as_ref().unwrap();
        assert_eq!(body.max_latency, Some(Duration::from_secs(2)));
        assert_eq!(body.component_status, "/status");
        assert_eq!(
            external.describe(),
            "/health/external-services [components at /services under 2s]"
        );
    }

    #[test]
    fn a_misspelt_body_key_or_a_bad_pointer_is_named() {
        let e = load(
            "[[verify.phases]]\nname = \"p\"\nendpoints = [{ path = \"/h\", body = { component = \"/x\" } }]\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field: found `component`"), "{e}");
        assert!(e.contains("verify.phases.0.endpoints.0.body"), "{e}");
        let e = load(
            "[[verify.phases]]\nname = \"p\"\nendpoints = [{ path = \"/h\", expect_status = [42], body = { status = \"status\" } }]\n",
        )
        .unwrap_err();
        assert!(
            e.contains(
                "verify.phases[0].endpoints[0].body.status: \"status\" is not a JSON Pointer"
            ),
            "{e}"
        );
        assert!(
            e.contains("verify.phases[0].endpoints[0].expect_status: 42 is not an HTTP status"),
            "{e}"
        );
        let e = load("[[verify.phases]]\nname = \"p\"\nendpoints = [7]\n").unwrap_err();
        assert!(e.contains("a path like \"/health\""), "{e}");
    }

    #[test]
    fn a_startup_log_window_the_application_budget_cannot_hold_is_refused() {
        let provider = "[provider]\ntype = \"command\"\nlist = [\"l\"]\nstatus = [\"s\"]\nrollback = [\"r\"]\n";
        let e = load(&format!(
            "{provider}[verify.startup_logs]\nwindow = \"2m\"\n[engine.budgets]\napplication = \"3m\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains(
                "verify.startup_logs.window: must be under half of engine.budgets.application (3m)"
            ),
            "{e}"
        );
        load(&format!(
            "{provider}[verify.startup_logs]\nwindow = \"30s\"\n"
        ))
        .unwrap();
    }

    #[test]
    fn the_share_that_may_fail_rounds_to_whole_checks() {
        let phase = |min_healthy| HealthPhaseConfig {
            name: "p".into(),
            endpoints: vec![],
            min_healthy,
            count: Count::Endpoints,
        };
        let at_80: Vec<usize> = (1..=12).map(|n| phase(0.8).tolerated(n)).collect();
        assert_eq!(at_80, [0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(phase(1.0).tolerated(9), 0);
        assert_eq!(phase(0.75).tolerated(2), 0, "a half rounds down");
        assert_eq!(phase(0.5).tolerated(4), 2);
    }
}
