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
use serde::{Deserialize, Serialize};

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
    /// Where deployments are listed and rolled back; none means rollbackd
    /// can watch but not roll back.
    pub provider: Option<ProviderConfig>,
    pub engine: EngineConfig,
    pub verify: VerifyConfig,
    /// The service's database; without it the database phase is skipped.
    pub database: Option<DatabaseConfig>,
    /// The migration tool; without it the database is backed up but not downgraded.
    pub migrations: Option<MigrationsConfig>,
    /// Where to tell people (`[[notifiers]]`).
    pub notifiers: Vec<NotifierConfig>,
    /// Alertmanager as a trigger source (`POST /api/v1/alertmanager`).
    pub alertmanager: Option<AlertmanagerConfig>,
}

/// One notification destination, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NotifierConfig {
    Slack(SlackConfig),
    Pagerduty(PagerDutyConfig),
    Webhook(WebhookConfig),
}

/// Retries: `attempts` in all, doubling `backoff` between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub attempts: u32,
    #[serde(with = "duration::serde_str")]
    pub backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (a secret: it is never logged).
    pub url: Secret,
    /// Which events (default: all).
    pub events: Option<Vec<crate::notify::NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    #[serde(default = "pagerduty_url")]
    pub url: String,
    /// Default: rollback_pending, rollback_failed, rollback_succeeded, rollback_rejected.
    pub events: Option<Vec<crate::notify::NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Secret,
    pub events: Option<Vec<crate::notify::NotifyEvent>>,
    #[serde(default)]
    pub delivery: Delivery,
}

/// Alerts from Alertmanager that may trigger a rollback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Label values an alert must carry, like `{ rollback = "true" }`.
    pub matchers: BTreeMap<String, String>,
    /// The policy for alerts that match.
    pub policy: crate::rules::Policy,
    /// How long a delivered alert is remembered, to recognise redeliveries.
    #[serde(with = "duration::serde_str")]
    pub dedupe_for: Duration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            matchers: BTreeMap::from([("rollback".to_string(), "true".to_string())]),
            policy: crate::rules::Policy::DryRun,
            dedupe_for: Duration::from_secs(3600),
        }
    }
}

/// The service's PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:pass@host:5432/db`; default `DATABASE_URL`.
    pub url: Option<Secret>,
    /// Default `<engine.state_dir>/backups`.
    pub backup_dir: Option<PathBuf>,
    /// Backups kept (the newest).
    pub keep_backups: usize,
    /// Stop the rollback when the backup fails (default: record a warning and go on, as the seed did).
    pub backup_required: bool,
    pub pg_dump: String,
    pub pg_restore: String,
    /// The advisory lock key migrations share (the application's own
    /// migration runs should take the same key).
    pub lock_key: i64,
    /// Statement timeout for the downgrade's SQL.
    #[serde(with = "duration::serde_str")]
    pub statement_timeout: Duration,
    /// Run downgrades that drop tables or columns, truncate or delete.
    pub allow_destructive: bool,
    /// When the database rollback is skipped as destructive, still roll the
    /// application back (the seed's behaviour); false stops the run instead.
    pub app_only_if_skipped: bool,
    /// How often `rollbackd watch` records the live deployment's schema revision.
    #[serde(with = "duration::serde_str")]
    pub revision_check_interval: Duration,
}

/// The advisory lock key rollbackd takes around a downgrade: `rollback` in ASCII.
pub const DEFAULT_MIGRATION_LOCK_KEY: i64 = 0x726f_6c6c_6261_636b;

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            backup_dir: None,
            keep_backups: 5,
            backup_required: false,
            pg_dump: "pg_dump".into(),
            pg_restore: "pg_restore".into(),
            lock_key: DEFAULT_MIGRATION_LOCK_KEY,
            statement_timeout: Duration::from_secs(60),
            allow_destructive: false,
            app_only_if_skipped: true,
            revision_check_interval: Duration::from_secs(30),
        }
    }
}

/// The migration tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationsConfig {
    /// Only `alembic` for now.
    pub tool: MigrationToolKind,
    /// The command, as a list: `["alembic"]`, `[".venv/bin/alembic"]`.
    pub command: Vec<String>,
    /// Passed as `-c`.
    pub config: Option<PathBuf>,
    /// Where the command runs (where alembic.ini lives).
    pub working_dir: Option<PathBuf>,
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationToolKind {
    Alembic,
}

impl Default for MigrationsConfig {
    fn default() -> Self {
        MigrationsConfig {
            tool: MigrationToolKind::Alembic,
            command: vec!["alembic".into()],
            config: None,
            working_dir: None,
            timeout: Duration::from_secs(120),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prometheus: PrometheusConfig::default(),
            watch: WatchConfig::default(),
            server: ServerConfig::default(),
            service: ServiceConfig::default(),
            variables: BTreeMap::new(),
            provider: None,
            engine: EngineConfig::default(),
            verify: VerifyConfig::default(),
            database: None,
            migrations: None,
            notifiers: Vec::new(),
            alertmanager: None,
        }
    }
}

/// The deploy platform, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProviderConfig {
    Railway(RailwayConfig),
    Command(CommandConfig),
}

impl ProviderConfig {
    /// How old a deployment may be and still be a rollback target.
    pub fn retention(&self) -> Option<Duration> {
        match self {
            ProviderConfig::Railway(r) => Some(r.retention),
            ProviderConfig::Command(c) => c.retention,
        }
    }
}

/// Railway's public GraphQL API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RailwayConfig {
    pub endpoint: String,
    /// The token; without it RAILWAY_TOKEN (a project token) or
    /// RAILWAY_API_TOKEN (an account or team token) is read.
    pub token: Option<Secret>,
    pub token_kind: Option<TokenKind>,
    /// Default RAILWAY_PROJECT_ID.
    pub project_id: Option<String>,
    /// Default RAILWAY_SERVICE_ID.
    pub service_id: Option<String>,
    /// Default RAILWAY_ENVIRONMENT_ID.
    pub environment_id: Option<String>,
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Railway cannot roll back to deployments older than about two weeks.
    #[serde(with = "duration::serde_str")]
    pub retention: Duration,
}

impl Default for RailwayConfig {
    fn default() -> Self {
        RailwayConfig {
            endpoint: "https://backboard.railway.com/graphql/v2".into(),
            token: None,
            token_kind: None,
            project_id: None,
            service_id: None,
            environment_id: None,
            timeout: Duration::from_secs(15),
            retention: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// How a Railway token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `project-access-token: <token>`
    Project,
    /// `Authorization: Bearer <token>`
    Account,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl RailwayConfig {
    pub fn token(&self) -> Result<(TokenKind, String), String> {
        if let Some(token) = &self.token {
            return Ok((
                self.token_kind.unwrap_or(TokenKind::Project),
                token.expose().to_string(),
            ));
        }
        if let Some(token) = env_nonempty("RAILWAY_TOKEN") {
            return Ok((self.token_kind.unwrap_or(TokenKind::Project), token));
        }
        if let Some(token) = env_nonempty("RAILWAY_API_TOKEN") {
            return Ok((self.token_kind.unwrap_or(TokenKind::Account), token));
        }
        Err("provider.token: no Railway token; set provider.token, RAILWAY_TOKEN (a project token) \
             or RAILWAY_API_TOKEN (an account or team token)"
            .into())
    }

    pub fn project_id(&self) -> Result<String, String> {
        self.project_id
            .clone()
            .or_else(|| env_nonempty("RAILWAY_PROJECT_ID"))
            .ok_or_else(|| "provider.project_id: not set (or set RAILWAY_PROJECT_ID)".into())
    }

    pub fn service_id(&self) -> Result<String, String> {
        self.service_id
            .clone()
            .or_else(|| env_nonempty("RAILWAY_SERVICE_ID"))
            .ok_or_else(|| "provider.service_id: not set (or set RAILWAY_SERVICE_ID)".into())
    }

    pub fn environment_id(&self) -> Option<String> {
        self.environment_id
            .clone()
            .or_else(|| env_nonempty("RAILWAY_ENVIRONMENT_ID"))
    }
}

/// Operator commands for list / status / rollback (see `provider::command`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub list: Vec<String>,
    pub status: Vec<String>,
    pub rollback: Vec<String>,
    #[serde(with = "duration::serde_str", default = "command_timeout")]
    pub timeout: Duration,
    #[serde(with = "duration::opt_serde_str", default)]
    pub retention: Option<Duration>,
}

fn command_timeout() -> Duration {
    crate::provider::command::DEFAULT_TIMEOUT
}

/// What `confirm` does when nobody answers in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmDefault {
    Reject,
    Approve,
}

/// The rollback engine: state, guards and phase budgets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// History, breaker state and the rollback lock live here.
    pub state_dir: PathBuf,
    /// Least time between two automatic rollbacks.
    #[serde(with = "duration::serde_str")]
    pub cooldown: Duration,
    /// At most this many automatic rollbacks per `auto_window`.
    pub max_auto_rollbacks: u32,
    #[serde(with = "duration::serde_str")]
    pub auto_window: Duration,
    /// Roll back automatically only when the live deployment is younger than
    /// this: an older one cannot be blamed for a new regression.
    #[serde(with = "duration::serde_str")]
    pub max_deploy_age: Duration,
    /// How long a `confirm` rollback waits for an operator.
    #[serde(with = "duration::serde_str")]
    pub confirm_timeout: Duration,
    pub confirm_default: ConfirmDefault,
    /// The breaker goes from OPEN to HALF_OPEN this long after a successful rollback…
    #[serde(with = "duration::serde_str")]
    pub half_open_after: Duration,
    /// …and to CLOSED once no rule has been pending or firing for this long.
    #[serde(with = "duration::serde_str")]
    pub close_after: Duration,
    /// Rules firing within this window make one rollback.
    #[serde(with = "duration::serde_str")]
    pub coalesce: Duration,
    /// How often a rollback in progress asks the platform for news.
    #[serde(with = "duration::serde_str")]
    pub poll_interval: Duration,
    pub budgets: Budgets,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            state_dir: PathBuf::from("state"),
            cooldown: Duration::from_secs(15 * 60),
            max_auto_rollbacks: 3,
            auto_window: Duration::from_secs(3600),
            max_deploy_age: Duration::from_secs(2 * 3600),
            confirm_timeout: Duration::from_secs(15 * 60),
            confirm_default: ConfirmDefault::Reject,
            half_open_after: Duration::from_secs(5 * 60),
            close_after: Duration::from_secs(5 * 60),
            coalesce: Duration::from_secs(2),
            poll_interval: Duration::from_secs(3),
            budgets: Budgets::default(),
        }
    }
}

/// Each phase's maximum time (the seed's budgets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budgets {
    #[serde(with = "duration::serde_str")]
    pub pre_validation: Duration,
    #[serde(with = "duration::serde_str")]
    pub database: Duration,
    #[serde(with = "duration::serde_str")]
    pub application: Duration,
    #[serde(with = "duration::serde_str")]
    pub verification: Duration,
    #[serde(with = "duration::serde_str")]
    pub post_rollback: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            pre_validation: Duration::from_secs(90),
            database: Duration::from_secs(120),
            application: Duration::from_secs(180),
            verification: Duration::from_secs(120),
            post_rollback: Duration::from_secs(60),
        }
    }
}

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
    /// How many of a group's queries go to Prometheus in one request
    /// (combined with `or`, each answer told apart by a label); 1 sends each
    /// query on its own.
    pub max_queries_per_request: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(10),
            max_queries_per_request: 20,
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
    /// Address of rollbackd's own HTTP server (`/metrics`, `/healthz`, `/readyz`, `/api/v1`).
    pub listen: SocketAddr,
    /// Bearer token for the API's mutating calls (approve, reject, breaker
    /// reset). Without it those calls are refused.
    pub api_token: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            api_token: None,
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
        if self.prometheus.max_queries_per_request == 0 {
            problems.push(
                "prometheus.max_queries_per_request: must be at least 1 (1 sends every query on its own)"
                    .into(),
            );
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
        self.validate_engine(&mut problems);
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

    fn validate_engine(&self, problems: &mut Vec<String>) {
        let b = &self.engine.budgets;
        for (name, d) in [
            ("pre_validation", b.pre_validation),
            ("database", b.database),
            ("application", b.application),
            ("verification", b.verification),
            ("post_rollback", b.post_rollback),
        ] {
            if d.is_zero() {
                problems.push(format!("engine.budgets.{name}: must be greater than 0s"));
            }
        }
        if self.engine.poll_interval.is_zero() {
            problems.push("engine.poll_interval: must be greater than 0s".into());
        }
        if self.verify.check_timeout.is_zero() {
            problems.push("verify.check_timeout: must be greater than 0s".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, phase) in self.verify.phases.iter().enumerate() {
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
        if let Some(ProviderConfig::Command(c)) = &self.provider {
            for (name, argv) in [
                ("list", &c.list),
                ("status", &c.status),
                ("rollback", &c.rollback),
            ] {
                if argv.is_empty() {
                    problems.push(format!(
                        "provider.{name}: give the command as a list, like [\"./deploy.sh\", \"{name}\"]"
                    ));
                }
            }
        }
        if let Some(db) = &self.database {
            if let Some(url) = &db.url {
                if let Err(e) = crate::db::Database::new(url.clone()) {
                    problems.push(e);
                }
            }
            if db.keep_backups == 0 {
                problems.push("database.keep_backups: keep at least 1".into());
            }
        }
        if let Some(m) = &self.migrations {
            if m.command.is_empty() {
                problems.push(
                    "migrations.command: give the command as a list, like [\"alembic\"]".into(),
                );
            }
            if self.database.is_none() {
                problems.push(
                    "migrations: needs a [database] section (its url, or DATABASE_URL)".into(),
                );
            }
        }
        for (i, n) in self.notifiers.iter().enumerate() {
            let (url, delivery) = match n {
                NotifierConfig::Slack(c) => (Some(c.url.expose()), &c.delivery),
                NotifierConfig::Pagerduty(c) => (Some(c.url.as_str()), &c.delivery),
                NotifierConfig::Webhook(c) => (Some(c.url.expose()), &c.delivery),
            };
            if url.is_some_and(|u| {
                !matches!(
                    reqwest::Url::parse(u)
                        .map(|u| u.scheme().to_string())
                        .as_deref(),
                    Ok("http" | "https")
                )
            }) {
                problems.push(format!("notifiers[{i}].url: not an http(s) URL"));
            }
            if delivery.attempts == 0 || delivery.attempts > 10 {
                problems.push(format!(
                    "notifiers[{i}].delivery.attempts: between 1 and 10"
                ));
            }
        }
        if let Some(am) = &self.alertmanager {
            if am.matchers.is_empty() {
                problems.push(
                    "alertmanager.matchers: give at least one label, like { rollback = \"true\" }, so only alerts meant for rollbackd can roll back"
                        .into(),
                );
            }
        }
        if let Some(ProviderConfig::Railway(r)) = &self.provider {
            if reqwest::Url::parse(&r.endpoint).is_err() {
                problems.push(format!("provider.endpoint: {:?} is not a URL", r.endpoint));
            }
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
}
