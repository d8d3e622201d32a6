//! What a health answer's JSON body must say: an overall status field, and
//! a list or map of components, each with its own status and, optionally,
//! a latency with a limit. Fields are named by JSON Pointers (RFC 6901,
//! `/services/openai/status`). Judging is pure: bytes in, verdicts out.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration;

/// `body = { … }` of a health endpoint or a probe rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyCheck {
    /// Pointer to the overall status; unset: the overall status is not read.
    #[serde(default)]
    pub status: Option<String>,
    /// Status values that count as healthy, compared as text without case.
    #[serde(default = "healthy_values")]
    pub healthy: Vec<String>,
    /// Pointer to a list or map of components; unset: no components.
    #[serde(default)]
    pub components: Option<String>,
    /// Pointer, inside a component, to its status (empty: not read).
    #[serde(default = "component_status")]
    pub component_status: String,
    /// Pointer, inside a component of a list, to its name (a map uses its keys).
    #[serde(default = "component_name")]
    pub component_name: String,
    /// Pointer, inside a component, to its latency.
    #[serde(default)]
    pub component_latency: Option<String>,
    /// The unit of `component_latency`.
    #[serde(default)]
    pub latency_unit: LatencyUnit,
    /// A component slower than this fails.
    #[serde(default, with = "duration::opt_serde_str")]
    pub max_latency: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyUnit {
    #[default]
    Ms,
    S,
}

fn healthy_values() -> Vec<String> {
    ["ok", "healthy", "up", "pass", "true"]
        .map(String::from)
        .to_vec()
}

fn component_status() -> String {
    "/status".into()
}

fn component_name() -> String {
    "/name".into()
}

/// Why a body makes the whole answer unhealthy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unhealthy {
    #[error("the body is not JSON ({error}); body.* reads a JSON answer: {excerpt}")]
    NotJson { error: String, excerpt: String },
    #[error("the body has no {pointer} ({key})")]
    Missing { pointer: String, key: &'static str },
    #[error("{pointer} is {found} (healthy: {healthy})")]
    Status {
        pointer: String,
        found: String,
        healthy: String,
    },
    #[error("{pointer} is {kind}, not a list or map of components (body.components)")]
    NotComponents { pointer: String, kind: &'static str },
    #[error("{pointer} lists no components (body.components)")]
    NoComponents { pointer: String },
}

impl BodyCheck {
    /// Components read at `pointer`, each judged by status and latency.
    pub fn with_components(pointer: &str) -> BodyCheck {
        BodyCheck {
            status: None,
            healthy: healthy_values(),
            components: Some(pointer.into()),
            component_status: component_status(),
            component_name: component_name(),
            component_latency: None,
            latency_unit: LatencyUnit::Ms,
            max_latency: None,
        }
    }

    /// Adds a message per unusable value to `problems`, each starting with `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        let pointers = [
            ("status", self.status.as_deref()),
            ("components", self.components.as_deref()),
            ("component_status", Some(self.component_status.as_str())),
            ("component_name", Some(self.component_name.as_str())),
            ("component_latency", self.component_latency.as_deref()),
        ];
        for (key, pointer) in pointers {
            if let Some(p) = pointer.filter(|p| !p.is_empty() && !p.starts_with('/')) {
                problems.push(format!(
                    "{at}.body.{key}: {p:?} is not a JSON Pointer; write it like \"/{p}\" (RFC 6901)"
                ));
            }
        }
        if self.status.is_none() && self.components.is_none() {
            problems.push(format!(
                "{at}.body: set status (a pointer to the overall status, like \"/status\") \
                 or components (a pointer to a list or map of components)"
            ));
        }
        if self.healthy.is_empty() {
            problems.push(format!(
                "{at}.body.healthy: list the status values that count as healthy, like [\"ok\", \"healthy\"]"
            ));
        }
        if self.max_latency.is_some() && self.component_latency.is_none() {
            problems.push(format!(
                "{at}.body.max_latency: needs component_latency, the pointer to each component's latency"
            ));
        }
        if self.components.is_none()
            && (self.component_latency.is_some() || self.max_latency.is_some())
        {
            problems.push(format!(
                "{at}.body: component_latency and max_latency need components"
            ));
        }
    }

    /// A few words for plans and tables: what the body must say.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(status) = &self.status {
            parts.push(format!("{status} healthy"));
        }
        if let Some(components) = &self.components {
            let mut c = format!("components at {components}");
            if let Some(max) = self.max_latency {
                c.push_str(&format!(" under {}", duration::format(max)));
            }
            parts.push(c);
        }
        parts.join(", ")
    }

    /// Judges a body: `Err` says why the answer as a whole is unhealthy
    /// (not JSON, a field missing, the overall status not accepted);
    /// `Ok` holds the components (empty when none are configured).
    pub fn judge(&self, body: &[u8]) -> Result<Vec<Component>, Unhealthy> {
        let value: Value = serde_json::from_slice(body).map_err(|e| Unhealthy::NotJson {
            error: e.to_string(),
            excerpt: excerpt(body),
        })?;
        if let Some(pointer) = &self.status {
            let Some(found) = value.pointer(pointer) else {
                return Err(Unhealthy::Missing {
                    pointer: pointer.clone(),
                    key: "body.status",
                });
            };
            if !self.accepts(found) {
                return Err(Unhealthy::Status {
                    pointer: pointer.clone(),
                    found: text(found),
                    healthy: self.healthy.join(", "),
                });
            }
        }
        let Some(pointer) = &self.components else {
            return Ok(Vec::new());
        };
        let named: Vec<(String, &Value)> = match value.pointer(pointer) {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = v
                        .pointer(&self.component_name)
                        .map(text)
                        .unwrap_or_else(|| format!("#{i}"));
                    (name, v)
                })
                .collect(),
            Some(other) => {
                return Err(Unhealthy::NotComponents {
                    pointer: pointer.clone(),
                    kind: kind(other),
                })
            }
            None => {
                return Err(Unhealthy::Missing {
                    pointer: pointer.clone(),
                    key: "body.components",
                })
            }
        };
        if named.is_empty() {
            return Err(Unhealthy::NoComponents {
                pointer: pointer.clone(),
            });
        }
        Ok(named
            .into_iter()
            .map(|(name, v)| self.component(name, v))
            .collect())
    }

    fn component(&self, name: String, v: &Value) -> Component {
        let mut reasons = Vec::new();
        let status = if self.component_status.is_empty() {
            None
        } else {
            match v.pointer(&self.component_status) {
                // A component given as a bare value ("openai": "ok") is its status.
                None if !v.is_object() && self.component_status == "/status" => Some(v),
                None => {
                    reasons.push(format!(
                        "no {} (body.component_status)",
                        self.component_status
                    ));
                    None
                }
                found => found,
            }
        };
        if let Some(s) = status.filter(|s| !self.accepts(s)) {
            reasons.push(format!("status {}", text(s)));
        }
        let latency = self.component_latency.as_ref().and_then(|pointer| {
            let seconds =
                v.pointer(pointer)
                    .and_then(Value::as_f64)
                    .map(|n| match self.latency_unit {
                        LatencyUnit::Ms => n / 1000.0,
                        LatencyUnit::S => n,
                    });
            // Negative, NaN or too large for a Duration: beyond any limit,
            // and said as what it is.
            match seconds.map(Duration::try_from_secs_f64) {
                Some(Ok(d)) => Some(d),
                Some(Err(_)) => {
                    let raw = v.pointer(pointer).map(Value::to_string).unwrap_or_default();
                    let why = if seconds.is_some_and(|s| s < 0.0) {
                        "negative"
                    } else {
                        "too large"
                    };
                    reasons.push(format!(
                        "latency {raw} at {pointer} is {why}: not a time the component took (body.component_latency)"
                    ));
                    None
                }
                _ if self.max_latency.is_some() => {
                    reasons.push(format!("no latency at {pointer} (body.component_latency)"));
                    None
                }
                _ => None,
            }
        });
        if let (Some(took), Some(max)) = (latency, self.max_latency) {
            if took > max {
                reasons.push(format!(
                    "{} ms, over {} (body.max_latency)",
                    took.as_millis(),
                    duration::format(max)
                ));
            }
        }
        Component {
            name,
            healthy: reasons.is_empty(),
            status: status.map(text),
            latency_ms: latency
                .filter(|d| *d != Duration::MAX)
                .map(|d| d.as_secs_f64() * 1000.0),
            reason: reasons.join("; "),
        }
    }

    fn accepts(&self, v: &Value) -> bool {
        let t = text(v);
        self.healthy.iter().any(|h| h.eq_ignore_ascii_case(&t))
    }
}

/// One component of a health answer and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub name: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A JSON value as it may be shown: strings without quotes, the rest as
/// JSON, redacted and cut short.
fn text(v: &Value) -> String {
    let t = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    crate::secret::shown(&t, 60)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The start of a body for an error message, on one line.
fn excerpt(body: &[u8]) -> String {
    match crate::secret::shown(&String::from_utf8_lossy(body), 60) {
        line if line.is_empty() => "(empty)".into(),
        line => format!("{line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external() -> BodyCheck {
        BodyCheck::with_components("/services")
    }

    #[test]
    fn a_map_of_components_is_judged_one_by_one() {
        let body = br#"{"status":"degraded","services":{"openai":{"status":"healthy"},"sendgrid":{"status":"down"},"firebase":"ok"}}"#;
        let components = external().judge(body).unwrap();
        let verdicts: Vec<_> = components
            .iter()
            .map(|c| (c.name.as_str(), c.healthy, c.reason.as_str()))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("firebase", true, ""),
                ("openai", true, ""),
                ("sendgrid", false, "status down")
            ]
        );
    }

    #[test]
    fn a_list_of_components_is_named_by_its_name_field() {
        let check = BodyCheck {
            component_latency: Some("/latency".into()),
            latency_unit: LatencyUnit::S,
            max_latency: Some(Duration::from_secs(5)),
            ..BodyCheck::with_components("/checks")
        };
        let body =
            br#"{"checks":[{"name":"db","status":"UP","latency":0.2},{"status":"up","latency":6}]}"#;
        let c = check.judge(body).unwrap();
        assert_eq!(c[0].name, "db");
        assert!(c[0].healthy);
        assert_eq!(c[0].latency_ms, Some(200.0));
        assert_eq!(c[1].name, "#1");
        assert!(!c[1].healthy);
        assert_eq!(c[1].reason, "6000 ms, over 5s (body.max_latency)");
    }

    #[test]
    fn a_body_that_is_not_json_or_lacks_the_field_says_which() {
        let e = external()
            .judge(b"<html>Bad Gateway</html>")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the body is not JSON"), "{e}");
        assert!(e.contains("\"<html>Bad Gateway</html>\""), "{e}");
        let e = external()
            .judge(br#"{"status":"ok"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the body has no /services (body.components)");
        let e = external()
            .judge(br#"{"services":[]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/services lists no components (body.components)");
        let e = external()
            .judge(br#"{"services":"fine"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/services is a string, not a list or map of components (body.components)"
        );
    }

    #[test]
    fn the_overall_status_is_compared_without_case() {
        let check = BodyCheck {
            status: Some("/status".into()),
            components: None,
            ..external()
        };
        assert_eq!(check.judge(br#"{"status":"OK"}"#), Ok(vec![]));
        assert_eq!(check.judge(br#"{"status":true}"#), Ok(vec![]));
        assert_eq!(
            check
                .judge(br#"{"status":"degraded"}"#)
                .unwrap_err()
                .to_string(),
            "/status is degraded (healthy: ok, healthy, up, pass, true)"
        );
        assert_eq!(
            check.judge(br#"{"state":"ok"}"#).unwrap_err().to_string(),
            "the body has no /status (body.status)"
        );
    }

    #[test]
    fn a_latency_too_large_or_negative_fails_without_a_panic() {
        let check = BodyCheck {
            component_latency: Some("/ms".into()),
            max_latency: Some(Duration::from_secs(5)),
            ..external()
        };
        // Once: a negative latency was described as "over 5s".
        for (value, why) in [
            ("1e300", "at /ms is too large"),
            ("-1", "-1 at /ms is negative"),
            ("1.7976931348623157e308", "at /ms is too large"),
        ] {
            let body = format!(r#"{{"services":{{"a":{{"status":"ok","ms":{value}}}}}}}"#);
            let c = &check.judge(body.as_bytes()).unwrap()[0];
            assert!(!c.healthy, "{value}");
            assert!(
                c.reason.contains(why) && c.reason.contains("not a time the component took"),
                "{value}: {}",
                c.reason
            );
        }
    }

    #[test]
    fn what_a_body_says_is_redacted_before_it_is_shown() {
        let e = external()
            .judge(b"<pre>connect postgres://app:hunter2@db failed</pre>")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let c = external()
            .judge(br#"{"services":{"db":{"status":"down: password=hunter2"}}}"#)
            .unwrap();
        assert_eq!(c[0].reason, "status down: password=***");
    }

    #[test]
    fn a_missing_latency_fails_only_when_a_limit_is_set() {
        let mut check = BodyCheck {
            component_latency: Some("/ms".into()),
            ..external()
        };
        let body = br#"{"services":{"a":{"status":"ok"}}}"#;
        assert!(check.judge(body).unwrap()[0].healthy);
        check.max_latency = Some(Duration::from_secs(5));
        assert_eq!(
            check.judge(body).unwrap()[0].reason,
            "no latency at /ms (body.component_latency)"
        );
    }

    #[test]
    fn unusable_settings_are_named() {
        let mut problems = Vec::new();
        BodyCheck {
            status: Some("status".into()),
            components: None,
            max_latency: Some(Duration::from_secs(1)),
            healthy: vec![],
            ..external()
        }
        .validate("verify.phases[0].endpoints[1]", &mut problems);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with(
            "verify.phases[0].endpoints[1].body.status: \"status\" is not a JSON Pointer; write it like \"/status\""
        ));
    }
}
