//! The database side of a rollback: the emergency backup (`backup`), which
//! schema revision each deployment ran (`revisions`), and undoing migrations
//! when that is safe (`migrate`). Nothing here decides whether to act; the
//! engine's phases do, from what these functions report.
//!
//! It must never lose data: a destructive downgrade is refused unless an
//! operator explicitly allowed it, a downgrade runs only under the migration
//! advisory lock, and its result is verified.

pub(crate) mod backup;
pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod migrate;
pub(crate) mod restore;
pub(crate) mod revisions;
pub(crate) mod store;

use std::time::{Duration, Instant};

pub use crate::pg::{describe, tls, Database, DbError, UrlError};
use crate::secret::Secret;
use config::DatabaseConfig;

impl Database {
    /// From `database.url`, else `DATABASE_URL`.
    pub fn from_config(config: &DatabaseConfig) -> Result<Database, DbError> {
        let url = config
            .url
            .clone()
            .or_else(|| {
                std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .map(Secret::new)
            })
            .ok_or(DbError::NoUrl)?;
        Database::new(url)
    }
}

/// Holds PostgreSQL's session advisory lock until dropped or released.
pub struct MigrationLock {
    client: tokio_postgres::Client,
    key: i64,
}

impl MigrationLock {
    /// Tries every 200 ms until `wait` runs out.
    pub async fn acquire(
        db: &Database,
        key: i64,
        wait: Duration,
    ) -> Result<MigrationLock, DbError> {
        let client = db.connect(Duration::from_secs(10)).await?;
        let started = Instant::now();
        loop {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(|e| DbError::Query(describe(&e)))?;
            if row.get::<_, bool>(0) {
                return Ok(MigrationLock { client, key });
            }
            if started.elapsed() + Duration::from_millis(200) > wait {
                return Err(DbError::LockBusy {
                    key,
                    waited: Duration::from_millis(started.elapsed().as_millis() as u64),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether another session waits on this lock now: a migration run
    /// (an `env.py` that forgot `ROLLBACKD_HOLDS_MIGRATION_LOCK`) queued
    /// behind rollbackd's own hold.
    pub async fn has_waiters(&self) -> bool {
        // A bigint advisory key is stored as classid (high half) and objid
        // (low half), objsubid 1.
        let (high, low) = ((self.key >> 32) as u32, self.key as u32);
        self.client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&i64::from(high), &i64::from(low)],
            )
            .await
            .is_ok_and(|row| row.get::<_, i64>(0) > 0)
    }

    pub async fn release(self) {
        let _ = self
            .client
            .query_one("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlalchemy_gets_its_own_url_form_and_a_socket_as_host_parameter() {
        use super::migrate::sqlalchemy_url;
        assert_eq!(
            sqlalchemy_url("postgres://u:p@db:5432/app?sslmode=require", "psycopg2"),
            "postgresql+psycopg2://u:p@db:5432/app?sslmode=require"
        );
        // SQLAlchemy does not decode a host: once it dialled "%2Frun%2Fpostgresql".
        assert_eq!(
            sqlalchemy_url("postgres://u@%2Frun%2Fpostgresql:5433/app", "psycopg"),
            "postgresql+psycopg://u@/app?host=/run/postgresql&port=5433"
        );
        assert_eq!(
            sqlalchemy_url("postgres:///app?host=/run/postgresql", "psycopg2"),
            "postgresql+psycopg2:///app?host=/run/postgresql"
        );
    }
}
