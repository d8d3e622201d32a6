//! rollbackd's configuration: built-in defaults, then the file named by
//! `--config` (TOML, or YAML by extension), then `ROLLBACKD_SECTION__KEY`
//! environment variables. Unknown keys are errors. `DATABASE_URL` alone
//! enables `[database]` with its defaults.
//!
//! This module only assembles: each subsystem owns its section's type and
//! checks (`source::config`, `watch::config`, `api::config`,
//! `notify::config`, `db::config`, `provider::config`, `verify::config`),
//! and this module reports where a bad value came from. Loading never starts
//! anything; [`Config::validate`] is pure and reports every problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::api::config::{AlertmanagerConfig, ServerConfig};
use crate::db::config::MigrationsConfig;
use crate::notify::config::NotifierConfig;
use crate::service::ServiceConfig;
use crate::source::config::PrometheusConfig;
use crate::watch::config::WatchConfig;

use crate::db::config::DatabaseConfig;
use crate::engine::config::EngineConfig;
use crate::provider::config::ProviderConfig;
use crate::verify::config::VerifyConfig;

mod yaml;

#[cfg(test)]
mod reference;

/// `ROLLBACKD_*` variables that are not configuration: the command line's
/// own, and those rollbackd sets for the commands it runs (a provider script
/// that calls `rollbackd` inherits them). Any other `ROLLBACKD_*` variable
/// must be a config key, so a typo in one is still an error.
const NOT_CONFIG_ENV: [&str; 7] = [
    "config",
    "log_format",
    "log_level",
    "limit",
    "deployment_id",
    "target_git_sha",
    "run_id",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub prometheus: PrometheusConfig,
    pub watch: WatchConfig,
    pub server: ServerConfig,
    pub service: ServiceConfig,
    /// Extra template variables for rule files.
    pub variables: BTreeMap<String, String>,
    /// Where deployments are listed and rolled back; none means rollbackd
    /// can watch but not roll back.
    pub provider: Option<ProviderConfig>,
    pub engine: EngineConfig,
    /// Whether the live deployment is to blame before rolling it back (`[blame]`).
    pub blame: crate::blame::config::BlameConfig,
    pub verify: VerifyConfig,
    /// The service's database; without it the database phase is skipped.
    pub database: Option<DatabaseConfig>,
    /// The migration tool; without it the database is backed up but not downgraded.
    pub migrations: Option<MigrationsConfig>,
    /// Where to tell people (`[[notifiers]]`).
    pub notifiers: Vec<NotifierConfig>,
    /// Alertmanager as a trigger source (`POST /api/v1/alertmanager`).
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Where the state lives (`[state]`): the state directory, or PostgreSQL.
    pub state: crate::state::config::StateConfig,
    /// Rollback drills on a schedule (`[[drills]]`).
    pub drills: Vec<crate::drill::config::DrillConfig>,
    /// A pull request in git after a verified rollback (`[gitops]`).
    pub gitops: Option<crate::gitops::config::GitopsConfig>,
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
                    figment.merge(yaml::YamlFile::new(path))
                } else {
                    figment.merge(Toml::file_exact(path))
                };
            }
            None => figment = figment.merge(Toml::file("rollbackd.toml")),
        }
        let figment =
            figment.merge(Env::prefixed("ROLLBACKD_").split("__").filter(|key| {
                !NOT_CONFIG_ENV.contains(&key.as_str().to_ascii_lowercase().as_str())
            }));
        let mut config: Config = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(describe_figment_error).collect();
            ConfigError::Parse(messages.join("\n"))
        })?;
        // DATABASE_URL alone turns the database side on (backups, the
        // downgrade), as the section would; `[database] enabled = false`
        // keeps it off.
        match &config.database {
            Some(db) if !db.enabled => config.database = None,
            // Only a PostgreSQL URL: platforms set DATABASE_URL for other
            // databases too, which rollbackd leaves alone.
            None if std::env::var("DATABASE_URL")
                .is_ok_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://")) =>
            {
                config.database = Some(DatabaseConfig::default());
            }
            _ => {}
        }
        // The seed's scripts read the service URL from ROLLBACK_BASE_URL.
        if config.service.base_url.is_none() {
            if let Ok(url) = std::env::var("ROLLBACK_BASE_URL") {
                config.service.base_url = Some(url);
            }
        }
        config.validate().map_err(|e| match e {
            ConfigError::Invalid(problems) => {
                ConfigError::Invalid(problems.iter().map(|p| located(&figment, p)).collect())
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks values against each other; no I/O. Each section checks
    /// itself; only what spans sections is checked here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.prometheus.validate(&mut problems);
        self.watch.validate(&mut problems);
        self.server.validate(&mut problems);
        self.service.validate(&mut problems);
        self.engine.validate(&mut problems);
        self.blame.validate(&mut problems);
        self.verify.validate(&mut problems);
        self.state.validate(&mut problems);
        crate::drill::config::validate_all(&self.drills, &mut problems);
        if let Some(gitops) = &self.gitops {
            gitops.validate(self.engine.budgets.post_rollback, &mut problems);
        }
        if !self.drills.is_empty() && self.provider.is_none() {
            problems.push(
                "drills: a drill checks the rollback path, which needs a [provider] (and rollbackd can only watch without one)"
                    .into(),
            );
        }
        if let Some(provider) = &self.provider {
            provider.validate(&mut problems);
            let application = self.engine.budgets.application;
            if self
                .verify
                .startup_logs
                .window
                .is_some_and(|w| w >= application / 2)
            {
                problems.push(format!(
                    "verify.startup_logs.window: must be under half of engine.budgets.application ({}): \
                     the application phase waits for it after the deployment is live",
                    crate::duration::format(application)
                ));
            }
            if self.verify.startup_logs.enabled == Some(true) && !provider.reads_logs() {
                problems.push(
                    "verify.startup_logs.enabled: the command provider has no logs command; \
                     set provider.logs (it prints a deployment's log lines) or enabled = false"
                        .into(),
                );
            }
        }
        if let Some(db) = &self.database {
            db.validate(&mut problems);
        }
        if let Some(m) = &self.migrations {
            m.validate(&mut problems);
            if self.database.is_none() {
                problems.push(
                    "migrations: needs a [database] section (its url, or DATABASE_URL)".into(),
                );
            }
        }
        for (i, n) in self.notifiers.iter().enumerate() {
            n.validate(i, &mut problems);
        }
        if let Some(am) = &self.alertmanager {
            am.validate(&mut problems);
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
    // A syntax error quotes the offending line, which may hold a secret:
    // the line and column are kept, the quoted text is not.
    // A type error would quote the value, which may be a secret (a token
    // given as a number, a webhook URL where a table belongs, under a
    // tagged section whose key is not named): the kind of value is said,
    // not the value.
    use figment::error::Kind;
    let kind = match &e.kind {
        Kind::InvalidType(actual, expected) => {
            format!(
                "invalid type: found {}, expected {expected}",
                kind_of(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value: found {}, expected {expected}",
                kind_of(actual)
            )
        }
        other => other
            .to_string()
            .lines()
            .filter(|line| !is_quoted_source(line))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let kind = crate::secret::redact_url(kind.trim());
    if key.is_empty() {
        format!("{from}: {kind}")
    } else {
        format!("{from}: key {key}: {kind}")
    }
}

/// `problem` (`"engine.cooldown: …"`) prefixed with where its key was set:
/// the file, or the environment variable (unchanged when neither set it).
fn located(figment: &Figment, problem: &str) -> String {
    let key = problem.split(':').next().unwrap_or_default();
    if key.is_empty() || key.contains(' ') {
        return problem.to_string();
    }
    // `notifiers[0].delivery.attempts` was set with `notifiers`.
    let lookup = key.split('[').next().unwrap_or(key);
    let from = match figment.find_metadata(lookup) {
        Some(m) if m.name.contains("environment") => format!(
            "environment variable ROLLBACKD_{}",
            lookup.to_uppercase().replace('.', "__")
        ),
        Some(m) => match &m.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            _ => m.name.to_string(),
        },
        None => return problem.to_string(),
    };
    format!("{from}: {problem}")
}

/// What kind of value was found, without the value.
fn kind_of(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a bool".into(),
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer".into(),
        Actual::Float(_) => "a float".into(),
        Actual::Char(_) => "a character".into(),
        Actual::Str(_) => "a string".into(),
        Actual::Bytes(_) => "bytes".into(),
        Actual::Other(_) => "a value".into(),
        // The rest name a shape (sequence, map…) and hold no value.
        shape => shape.to_string(),
    }
}

/// A line of a parser's error snippet: `  |`, `3 | text`, `  |   ^`.
fn is_quoted_source(line: &str) -> bool {
    let t = line.trim_start();
    let t = t.trim_start_matches(|c: char| c.is_ascii_digit());
    t.trim_start().starts_with('|')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

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
        config.prometheus.max_queries_per_request = 0;
        config.prometheus.bearer_token = Some(Secret::new("a"));
        config.prometheus.bearer_token_file = Some("/tmp/x".into());
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("prometheus.url"), "{text}");
        assert!(text.contains("watch.max_concurrent_queries"), "{text}");
        assert!(
            text.contains("prometheus.max_queries_per_request"),
            "{text}"
        );
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

    #[test]
    fn a_yaml_config_with_a_type_error_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        std::fs::write(&path, "prometheus:\n  timeout: [1]\n").unwrap();
        let text = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("prometheus.timeout"), "{text}");
    }

    #[test]
    fn a_yaml_config_is_read_like_a_toml_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yml");
        std::fs::write(
            &path,
            "# comments are fine\nprometheus:\n  url: http://prom:9090\n  timeout: 3s\nwatch:\n  max_concurrent_queries: 2\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.prometheus.url, "http://prom:9090");
        assert_eq!(config.prometheus.timeout, std::time::Duration::from_secs(3));
        assert_eq!(config.watch.max_concurrent_queries, 2);
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "# nothing set\n").unwrap();
        Config::load(Some(&empty)).unwrap();
    }
}
