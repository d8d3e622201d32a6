//! `[database]` and `[migrations]`: the service's PostgreSQL database, where
//! backups go, and the migration tool. Data and its checks only; nothing here
//! connects or runs a program.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

/// The service's PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `false` turns the database side off even when `DATABASE_URL` is set.
    pub enabled: bool,
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
    /// When the database or the migration tool cannot be used at planning
    /// (its revision unreadable, the downgrade SQL not produced): `stop`
    /// the rollback (default), or roll back the application alone
    /// (`app_only`, the seed's behaviour).
    pub on_failure: OnFailure,
    /// How often `rollbackd watch` records the live deployment's schema revision.
    #[serde(with = "duration::serde_str")]
    pub revision_check_interval: Duration,
    /// gzip level of the custom-format dump, 0 (none) to 9 (the seed's
    /// `pg_dump --compress=9`).
    pub compress: u8,
    /// Where a copy of every backup goes off this machine.
    pub backup_store: Option<BackupStoreConfig>,
}

/// `[database.backup_store]`: an object store that receives a copy of each
/// backup, with its checksum and metadata. Credentials come from the
/// environment the store's own tools read (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`,
/// `AWS_ENDPOINT_URL` for S3-compatible stores), never from this file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStoreConfig {
    /// `s3://bucket/prefix` or `file:///mounted/path`.
    pub url: String,
    /// Copies kept in the store, per kind (emergency and manual), the newest
    /// first; default `database.keep_backups`.
    pub keep: Option<usize>,
    /// How long an upload (and its read-back) may take; a rollback's
    /// backup still ends within two thirds of the pre-validation budget.
    #[serde(with = "duration::serde_str", default = "upload_timeout")]
    pub timeout: Duration,
}

fn upload_timeout() -> Duration {
    Duration::from_secs(300)
}

/// What a rollback does when the database side cannot be used at planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    Stop,
    AppOnly,
}

/// The advisory lock key rollbackd takes around a downgrade: `rollback` in ASCII.
pub(crate) const DEFAULT_MIGRATION_LOCK_KEY: i64 = 0x726f_6c6c_6261_636b;

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            enabled: true,
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
            on_failure: OnFailure::Stop,
            revision_check_interval: Duration::from_secs(30),
            compress: 9,
            backup_store: None,
        }
    }
}

impl DatabaseConfig {
    /// Adds a message per unusable value to `problems`; no I/O (the URL is
    /// parsed, not dialled).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.url {
            if let Err(e) = super::Database::new(url.clone()) {
                problems.push(e.to_string());
            }
        }
        if !(1..=1000).contains(&self.keep_backups) {
            problems.push("database.keep_backups: keep between 1 and 1000".into());
        }
        if self.compress > 9 {
            problems.push(format!(
                "database.compress: {} is not a gzip level; use 0 (none) to 9 (smallest, the default)",
                self.compress
            ));
        }
        if let Some(store) = &self.backup_store {
            if let Err(e) = super::store::Location::parse(&store.url) {
                problems.push(format!("database.backup_store.url: {e}"));
            }
            if store.keep.is_some_and(|k| !(1..=1000).contains(&k)) {
                problems.push("database.backup_store.keep: keep between 1 and 1000".into());
            }
            if store.timeout.is_zero() {
                problems.push(
                    "database.backup_store.timeout: give the upload some time, like \"5m\"".into(),
                );
            }
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
    /// The SQLAlchemy driver in `ROLLBACKD_SQLALCHEMY_URL`
    /// (`postgresql+<driver>://…`): `psycopg2` or `psycopg` (3).
    pub sqlalchemy_driver: String,
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
            sqlalchemy_driver: "psycopg2".into(),
        }
    }
}

impl MigrationsConfig {
    /// Adds a message per unusable value to `problems`; no I/O. That
    /// migrations need a `[database]` is checked where both are assembled.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !["psycopg2", "psycopg", "pg8000", "asyncpg"].contains(&self.sqlalchemy_driver.as_str())
        {
            problems.push(format!(
                "migrations.sqlalchemy_driver: {:?} is not a PostgreSQL driver SQLAlchemy knows; use \"psycopg2\" or \"psycopg\"",
                self.sqlalchemy_driver
            ));
        }
        if self.command.is_empty() {
            problems
                .push("migrations.command: give the command as a list, like [\"alembic\"]".into());
        }
    }
}
