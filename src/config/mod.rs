//! rollbackd's configuration: built-in defaults, then the file named by
//! `--config` (TOML, or YAML by extension), then `ROLLBACKD_SECTION__KEY`
//! environment variables. Unknown keys are errors. Loading never starts
//! anything; [`Config::validate`] is pure and reports every problem at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml, Yaml};
use figment::Figment;
use serde::Deserialize;

use crate::rules::duration;

/// Environment variables that belong to the command line, not to the config.
const CLI_ENV: [&str; 3] = ["config", "log_format", "log_level"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub prometheus: PrometheusConfig,
    pub watch: WatchConfig,
    pub server: ServerConfig,
    pub service: ServiceConfig,
    /// Extra template variables for rule files.
    pub variables: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prometheus: PrometheusConfig::default(),
            watch: WatchConfig::default(),
            server: ServerConfig::default(),
            service: ServiceConfig::default(),
            variables: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL of Prometheus (a path prefix such as `/prometheus` is kept).
    pub url: String,
    /// Per-query timeout, also passed to Prometheus so it stops working too.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(10),
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
        }
    }
}

/// Credentials for Prometheus, resolved from config.
pub enum PrometheusAuth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl PrometheusConfig {
    /// The credentials to send, reading `bearer_token_file` if set.
    pub fn auth(&self) -> Result<Option<PrometheusAuth>, String> {
        if let Some(token) = &self.bearer_token {
            return Ok(Some(PrometheusAuth::Bearer(token.expose().to_string())));
        }
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("prometheus.bearer_token_file {}: {e}", path.display()))?;
            return Ok(Some(PrometheusAuth::Bearer(token.trim().to_string())));
        }
        Ok(self.basic_auth.as_ref().map(|b| PrometheusAuth::Basic {
            username: b.username.clone(),
            password: b.password.expose().to_string(),
        }))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Interval for groups that set none.
    #[serde(with = "duration::serde_str")]
    pub evaluation_interval: Duration,
    /// Rule files or directories of `*.yml` / `*.yaml`.
    pub rule_paths: Vec<PathBuf>,
    /// How often rule files are checked for changes; `0s` turns polling off
    /// (SIGHUP still reloads).
    #[serde(with = "duration::serde_str")]
    pub reload_interval: Duration,
    /// Queries in flight at once per group.
    pub max_concurrent_queries: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            evaluation_interval: Duration::from_secs(15),
            rule_paths: vec![PathBuf::from("rules")],
            reload_interval: Duration::from_secs(5),
            max_concurrent_queries: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of rollbackd's own HTTP server (`/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// The service rollbackd watches; its fields are also template variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub name: Option<String>,
    pub environment: Option<String>,
    pub base_url: Option<String>,
}

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist.
    #[error("config file {} does not exist (pass an existing file to --config, or leave --config out to use defaults)", .0.display())]
    Missing(PathBuf),
    /// Syntax, type or unknown-key errors, with the key and where it came from.
    #[error("{0}")]
    Parse(String),
    /// Values that parse but make no sense together.
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads defaults, then `path` (or `rollbackd.toml` in the working
    /// directory when it exists and no path is given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        match path {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Missing(path.to_path_buf()));
                }
                let is_yaml = matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                );
                figment = if is_yaml {
                    figment.merge(Yaml::file_exact(path))
                } else {
                    figment.merge(Toml::file_exact(path))
                };
            }
            None => figment = figment.merge(Toml::file("rollbackd.toml")),
        }
        let figment = figment.merge(
            Env::prefixed("ROLLBACKD_")
                .split("__")
                .filter(|key| !CLI_ENV.contains(&key.as_str())),
        );
        let mut config: Config = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(describe_figment_error).collect();
            ConfigError::Parse(messages.join("\n"))
        })?;
        // The seed's scripts read the service URL from ROLLBACK_BASE_URL.
        if config.service.base_url.is_none() {
            if let Ok(url) = std::env::var("ROLLBACK_BASE_URL") {
                config.service.base_url = Some(url);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values against each other; no I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.prometheus.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => problems.push(format!(
                "prometheus.url: {:?} is not an http(s) URL; set it like \"http://prometheus:9090\"",
                self.prometheus.url
            )),
        }
        if self.prometheus.timeout.is_zero() {
            problems.push("prometheus.timeout: must be greater than 0s".into());
        }
        let auths = [
            self.prometheus.bearer_token.is_some(),
            self.prometheus.bearer_token_file.is_some(),
            self.prometheus.basic_auth.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            problems.push(
                "prometheus: set only one of bearer_token, bearer_token_file and basic_auth".into(),
            );
        }
        if self.watch.evaluation_interval.is_zero() {
            problems.push("watch.evaluation_interval: must be greater than 0s".into());
        }
        if self.watch.rule_paths.is_empty() {
            problems.push("watch.rule_paths: name at least one rule file or directory".into());
        }
        if self.watch.max_concurrent_queries == 0 {
            problems.push("watch.max_concurrent_queries: must be at least 1".into());
        }
        if let Some(url) = &self.service.base_url {
            if reqwest::Url::parse(url).is_err() {
                problems.push(format!(
                    "service.base_url: {url:?} is not a URL; set it like \"http://127.0.0.1:8000\""
                ));
            }
        }
        for key in self.variables.keys() {
            if ["service", "environment", "base_url"].contains(&key.as_str()) {
                problems.push(format!(
                    "variables.{key}: set this under [service] instead; it is filled from there"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Template variables for rule files: `[service]` fields plus `[variables]`.
    pub fn template_variables(&self) -> BTreeMap<String, String> {
        let mut vars = self.variables.clone();
        let service = [
            ("service", &self.service.name),
            ("environment", &self.service.environment),
            ("base_url", &self.service.base_url),
        ];
        for (key, value) in service {
            if let Some(value) = value {
                let value = if key == "base_url" {
                    value.trim_end_matches('/').to_string()
                } else {
                    value.clone()
                };
                vars.insert(key.to_string(), value);
            }
        }
        vars
    }
}

/// Names the key and where its value came from: the file, or the exact
/// environment variable to fix.
fn describe_figment_error(e: figment::Error) -> String {
    let key = e.path.join(".");
    let from = match &e.metadata {
        Some(m) if m.name.contains("environment") => format!(
            "environment variable ROLLBACKD_{}",
            e.path
                .iter()
                .map(|p| p.to_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        ),
        Some(m) => match &m.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            _ => m.name.to_string(),
        },
        None => "config".to_string(),
    };
    if key.is_empty() {
        format!("{from}: {}", e.kind)
    } else {
        format!("{from}: key {key}: {}", e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut config = Config::default();
        config.prometheus.bearer_token = Some(Secret::new("s3cr3t-token"));
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn validation_lists_every_problem() {
        let mut config = Config::default();
        config.prometheus.url = "not a url".into();
        config.watch.max_concurrent_queries = 0;
        config.prometheus.bearer_token = Some(Secret::new("a"));
        config.prometheus.bearer_token_file = Some("/tmp/x".into());
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("prometheus.url"), "{text}");
        assert!(text.contains("watch.max_concurrent_queries"), "{text}");
        assert!(text.contains("only one of bearer_token"), "{text}");
    }

    #[test]
    fn service_fields_become_template_variables() {
        let mut config = Config::default();
        config.service.name = Some("web".into());
        config.service.base_url = Some("http://127.0.0.1:8000/".into());
        let vars = config.template_variables();
        assert_eq!(vars["service"], "web");
        assert_eq!(vars["base_url"], "http://127.0.0.1:8000");
    }
}
