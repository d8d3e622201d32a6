//! The composition root: builds the engine and its provider, database and
//! notifiers from the configuration. The only place that knows both the
//! configuration's shape and how the parts are put together.

use std::sync::Arc;

use crate::config::Config;
use crate::engine::{DbSetup, Engine, EngineError, EngineSetup};
use crate::provider::config::ProviderConfig;
use crate::provider::{command::CommandProvider, railway::Railway, DeployProvider};
use crate::state::{Doc, FileStore, StateDir, StateStore};

/// Builds the configured provider.
pub fn provider(config: &Config) -> Result<Arc<dyn DeployProvider>, EngineError> {
    match &config.provider {
        None => Err(EngineError::NoProvider),
        Some(ProviderConfig::Railway(r)) => Ok(Arc::new(
            Railway::new(r).map_err(|e| EngineError::Provider(e.into()))?,
        )),
        Some(ProviderConfig::Command(c)) => Ok(Arc::new(CommandProvider::new(c))),
    }
}

/// The engine with the configured provider.
pub fn engine(config: &Config) -> Result<Engine, EngineError> {
    engine_with(config, provider(config)?)
}

/// The engine with `provider`.
pub fn engine_with(
    config: &Config,
    provider: Arc<dyn DeployProvider>,
) -> Result<Engine, EngineError> {
    let dir = StateDir::new(&config.engine.state_dir);
    let state = state(config);
    let db = match &config.database {
        None => None,
        Some(db) => Some(DbSetup {
            database: crate::db::Database::from_config(db)
                .map_err(|e| EngineError::Database(e.into()))?,
            config: db.clone(),
            tool: config.migrations.as_ref().map(|m| {
                Arc::new(crate::db::migrate::Alembic {
                    command: m.command.clone(),
                    config: m.config.clone(),
                    working_dir: m.working_dir.clone(),
                    timeout: m.timeout,
                }) as Arc<dyn crate::db::migrate::MigrationTool>
            }),
            revisions: crate::db::revisions::RevisionStore::new(Doc::new(
                state.clone(),
                StateDir::REVISIONS,
            )),
            backup_dir: db.backup_dir.clone().unwrap_or_else(|| dir.backups()),
        }),
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
            state: Some(state),
        },
        provider,
    )
}

/// Where the state lives, as configured.
pub fn state(config: &Config) -> Arc<dyn StateStore> {
    Arc::new(FileStore::new(StateDir::new(&config.engine.state_dir)))
}
