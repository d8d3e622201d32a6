//! The composition root: builds the engine and its provider, database and
//! notifiers from the configuration. The only place that knows both the
//! configuration's shape and how the parts are put together.

use std::sync::Arc;

use crate::config::Config;
use crate::engine::{DbSetup, Engine, EngineError, EngineSetup};
use crate::provider::config::ProviderConfig;
use crate::provider::{command::CommandProvider, railway::Railway, DeployProvider};
use crate::state::config::Backend;
use crate::state::postgres::PgStore;
use crate::state::{Doc, FileStore, StateDir, StateStore};

/// Builds the configured provider.
pub fn provider(config: &Config) -> Result<Arc<dyn DeployProvider>, EngineError> {
    match &config.provider {
        None => Err(EngineError::NoProvider),
        Some(ProviderConfig::Railway(r)) => Ok(Arc::new(
            Railway::new(r).map_err(|e| EngineError::Provider(e.into()))?,
        )),
        Some(ProviderConfig::Command(c)) => Ok(Arc::new(CommandProvider::new(c))),
        Some(ProviderConfig::Argocd(a)) => Ok(Arc::new(
            crate::provider::argocd::Argocd::new(a).map_err(|e| EngineError::Provider(e.into()))?,
        )),
    }
}

/// The engine with the configured provider.
pub fn engine(config: &Config) -> Result<Engine, EngineError> {
    engine_with(config, provider(config)?, None)
}

/// The engine of `rollbackd watch`: beside several replicas sharing
/// PostgreSQL, it takes part in leader election and acts only while it leads.
pub fn daemon_engine(config: &Config) -> Result<Engine, EngineError> {
    let leadership = state(config)?.1.map(|pg| {
        pg.elect(
            &replica_name(),
            config.state.leader_check,
            service_identity(config).as_deref(),
        )
    });
    engine_with(config, provider(config)?, leadership)
}

/// What identifies the deployed service across configurations: Railway's
/// service and environment ids, else `service.name` and
/// `service.environment`. Replicas of one service that share it never both
/// lead, whatever `state.schema` each was given.
fn service_identity(config: &Config) -> Option<String> {
    if let Some(ProviderConfig::Argocd(a)) = &config.provider {
        return Some(format!(
            "argocd:{}:{}:{}",
            a.server.trim_end_matches('/'),
            a.app_namespace.as_deref().unwrap_or_default(),
            a.application
        ));
    }
    if let Some(ProviderConfig::Railway(r)) = &config.provider {
        if let Ok(service) = r.service_id() {
            return Some(format!(
                "railway:{service}:{}",
                r.environment_id().unwrap_or_default()
            ));
        }
    }
    let name = config.service.name.as_deref()?;
    Some(format!(
        "service:{name}:{}",
        config.service.environment.as_deref().unwrap_or_default()
    ))
}

/// Who this replica is, for `GET /api/v1/leader` and the leader row.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "rollbackd".into());
    format!("{host} (pid {})", std::process::id())
}

/// The engine with `provider`.
pub fn engine_with(
    config: &Config,
    provider: Arc<dyn DeployProvider>,
    leadership: Option<crate::state::postgres::Leadership>,
) -> Result<Engine, EngineError> {
    let dir = StateDir::new(&config.engine.state_dir);
    let state = state(config)?.0;
    let db = match &config.database {
        None => None,
        Some(db) => {
            let database = crate::db::Database::from_config(db)
                .map_err(|e| EngineError::Database(e.into()))?;
            Some(DbSetup {
                config: db.clone(),
                tool: migration_tool(config),
                revisions: crate::db::revisions::RevisionStore::new(Doc::new(
                    state.clone(),
                    StateDir::REVISIONS,
                )),
                backup_dir: db.backup_dir.clone().unwrap_or_else(|| dir.backups()),
                store: match &db.backup_store {
                    None => None,
                    Some(store) => Some(Arc::new(
                        crate::db::store::BackupStore::open(
                            store,
                            db.keep_backups,
                            database.store_folder(),
                        )
                        .map_err(|e| EngineError::Database(e.into()))?,
                    )),
                },
                database,
            })
        }
    };
    let notifiers = if config.notifiers.is_empty() {
        None
    } else {
        Some(
            crate::notify::Notifiers::from_config(&config.notifiers, &config.service)
                .map_err(|e| EngineError::Notifiers(e.into()))?,
        )
    };
    Engine::new(
        EngineSetup {
            config: config.engine.clone(),
            verify: config.verify.clone(),
            retention: config.provider.as_ref().and_then(ProviderConfig::retention),
            base_url: config.service.base_url.clone(),
            db,
            notifiers,
            gitops: match config.gitops.as_ref().filter(|g| g.enabled) {
                None => None,
                Some(g) => Some(Arc::new(
                    crate::gitops::Gitops::new(g, &config.engine.state_dir)
                        .map_err(|e| EngineError::Gitops(e.to_string()))?,
                )),
            },
            state: Some(state),
            leadership,
        },
        provider,
    )
}

/// The state store and, with the postgres backend, the store itself (for
/// leader election). One per process: every caller shares its connections.
type Shared = (Arc<dyn StateStore>, Option<Arc<PgStore>>);

/// Where the state lives, as configured.
pub fn state(config: &Config) -> Result<Shared, EngineError> {
    static PG: std::sync::OnceLock<Arc<PgStore>> = std::sync::OnceLock::new();
    match config.state.backend {
        Backend::File => Ok((
            Arc::new(FileStore::new(StateDir::new(&config.engine.state_dir))),
            None,
        )),
        Backend::Postgres => {
            if let Some(pg) = PG.get() {
                return Ok((pg.clone() as Arc<dyn StateStore>, Some(pg.clone())));
            }
            let url = config
                .state
                .url
                .clone()
                .or_else(|| config.database.as_ref().and_then(|d| d.url.clone()))
                .or_else(|| {
                    std::env::var("DATABASE_URL")
                        .ok()
                        .filter(|u| !u.is_empty())
                        .map(crate::secret::Secret::new)
                })
                .ok_or_else(|| {
                    EngineError::State(
                        "state.backend = \"postgres\" needs state.url (or database.url, or DATABASE_URL)"
                            .into(),
                    )
                })?;
            let database = crate::db::Database::new(url)
                .map_err(|e| EngineError::State(format!("state.url: {e}")))?;
            let pg = PG
                .get_or_init(|| Arc::new(PgStore::new(database, &config.state.schema)))
                .clone();
            Ok((pg.clone() as Arc<dyn StateStore>, Some(pg)))
        }
    }
}

/// The migration tool `[migrations]` describes, if any.
pub fn migration_tool(config: &Config) -> Option<Arc<dyn crate::db::migrate::MigrationTool>> {
    config.migrations.as_ref().map(|m| {
        Arc::new(crate::db::migrate::Alembic {
            command: m.command.clone(),
            config: m.config.clone(),
            working_dir: m.working_dir.clone(),
            timeout: m.timeout,
            driver: m.sqlalchemy_driver.clone(),
        }) as Arc<dyn crate::db::migrate::MigrationTool>
    })
}

/// The engines of staging drills: production's configuration with the
/// drill's own provider, base URL and database, its state in the directory
/// given (a file store of its own), no notifiers and no drills.
pub fn staging_engines(config: &Config) -> crate::drill::StagingEngines {
    let base = config.clone();
    Arc::new(move |drill, dir| {
        let staging =
            drill
                .staging
                .as_ref()
                .ok_or_else(|| crate::drill::DrillSetupError::NoStaging {
                    drill: drill.name.clone(),
                })?;
        let mut c = base.clone();
        c.provider = Some(staging.provider.clone());
        c.service.base_url = Some(staging.base_url.clone());
        c.database = staging.database.clone();
        c.migrations = staging.migrations.clone();
        c.engine.state_dir = dir.to_path_buf();
        c.state = Default::default();
        c.notifiers = Vec::new();
        c.alertmanager = None;
        c.drills = Vec::new();
        c.gitops = None;
        Ok(engine(&c).map(Engine::quiet)?)
    })
}
