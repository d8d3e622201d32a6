//! Migration tools behind one small trait. Alembic first: the current
//! revision is read from `alembic_version`, the downgrade SQL is obtained
//! offline (`alembic downgrade CURRENT:TARGET --sql`, which touches nothing)
//! and judged statement by statement (`classify.rs`), and the downgrade itself runs
//! with `DATABASE_URL`, a statement timeout (`PGOPTIONS`) and
//! `ROLLBACKD_HOLDS_MIGRATION_LOCK=1`, so the application's `env.py` can skip
//! taking the shared advisory lock that rollbackd already holds.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{describe, Database, DbError};

/// A schema migration tool.
pub trait MigrationTool: Send + Sync {
    /// The revision the database is at (`None`: not under migration control).
    fn current<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, Result<Option<String>, DbError>>;

    /// The SQL that downgrading `from` → `to` would run, without running it.
    fn downgrade_sql<'a>(
        &'a self,
        db: &'a Database,
        from: &'a str,
        to: &'a str,
    ) -> BoxFuture<'a, Result<String, DbError>>;

    /// Downgrades to `to`.
    fn downgrade<'a>(
        &'a self,
        db: &'a Database,
        to: &'a str,
        statement_timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DbError>>;
}

/// Alembic, run as a command.
#[derive(Debug, Clone)]
pub struct Alembic {
    /// argv prefix, like `["alembic"]` or `[".venv/bin/alembic"]`.
    pub command: Vec<String>,
    /// `-c` config file.
    pub config: Option<PathBuf>,
    pub working_dir: Option<PathBuf>,
    pub timeout: Duration,
}

impl Alembic {
    async fn run(
        &self,
        db: &Database,
        args: &[&str],
        extra_env: &[(&str, String)],
    ) -> Result<String, DbError> {
        let (program, prefix) = self
            .command
            .split_first()
            .ok_or_else(|| DbError::Tool("migrations.command is empty".into()))?;
        let mut cmd = crate::child::command(program);
        cmd.args(prefix);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args(args).env("DATABASE_URL", db.url());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        let what = format!("alembic {}", args.join(" "));
        let output = crate::child::output(&mut cmd, Some(self.timeout))
            .await
            .map_err(|e| match e {
                crate::child::ChildError::Timeout(_) => DbError::Tool(format!("{what} {e}")),
                e => DbError::Tool(format!(
                    "cannot run {program:?}: {e} (set migrations.command)"
                )),
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.trim().lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(DbError::Tool(format!(
                "{what} failed ({}): {}",
                output.status,
                tail.join(" | ")
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl MigrationTool for Alembic {
    fn current<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, Result<Option<String>, DbError>> {
        Box::pin(async move {
            let client = db.connect(Duration::from_secs(10)).await?;
            let exists = client
                .query_one("SELECT to_regclass('alembic_version') IS NOT NULL", &[])
                .await
                .map_err(|e| DbError::Query(describe(&e)))?;
            if !exists.get::<_, bool>(0) {
                return Ok(None);
            }
            let rows = client
                .query("SELECT version_num FROM alembic_version", &[])
                .await
                .map_err(|e| DbError::Query(describe(&e)))?;
            match rows.len() {
                0 => Ok(None),
                1 => Ok(Some(rows[0].get::<_, String>(0))),
                n => Err(DbError::Tool(format!(
                    "alembic_version has {n} rows (several heads); rollbackd only downgrades a single head"
                ))),
            }
        })
    }

    fn downgrade_sql<'a>(
        &'a self,
        db: &'a Database,
        from: &'a str,
        to: &'a str,
    ) -> BoxFuture<'a, Result<String, DbError>> {
        Box::pin(async move {
            self.run(db, &["downgrade", &format!("{from}:{to}"), "--sql"], &[])
                .await
        })
    }

    fn downgrade<'a>(
        &'a self,
        db: &'a Database,
        to: &'a str,
        statement_timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move {
            let env = [
                (
                    "PGOPTIONS",
                    format!("-c statement_timeout={}", statement_timeout.as_millis()),
                ),
                ("ROLLBACKD_HOLDS_MIGRATION_LOCK", "1".to_string()),
            ];
            self.run(db, &["downgrade", to], &env).await.map(|_| ())
        })
    }
}

pub use super::classify::destructive_statements;
