//! The watched service: name, environment, base URL.
//!
//! A leaf shared by configuration, rule templates, health verification and
//! notifications. It only holds what the operator said about the service and
//! must never reach out to it.

use serde::Deserialize;

/// The service rollbackd watches; its fields are also template variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub name: Option<String>,
    pub environment: Option<String>,
    pub base_url: Option<String>,
}

impl ServiceConfig {
    /// Adds a message per unusable value to `problems`; no I/O.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.base_url {
            if reqwest::Url::parse(url).is_err() {
                problems.push(format!(
                    "service.base_url: {url:?} is not a URL; set it like \"http://127.0.0.1:8000\""
                ));
            }
        }
    }
}
