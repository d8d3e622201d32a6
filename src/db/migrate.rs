//! Migration tools behind one small trait. Alembic first: the current
//! revision is read from `alembic_version`, the downgrade SQL is obtained
//! offline (`alembic downgrade CURRENT:TARGET --sql`, which touches nothing)
//! and judged statement by statement (`classify.rs`). Before the downgrade,
//! `alembic current` must name the revision rollbackd read itself: another
//! answer means Alembic's `env.py` reaches another database. Every command
//! gets `DATABASE_URL` as given and `ROLLBACKD_SQLALCHEMY_URL` in the form
//! SQLAlchemy wants (`postgresql+psycopg2://…`); the downgrade also gets a
//! statement timeout (`PGOPTIONS`) and `ROLLBACKD_HOLDS_MIGRATION_LOCK=1`, so
//! the application's `env.py` can skip taking the shared advisory lock that
//! rollbackd already holds. A failure quotes the end of Alembic's stdout and
//! stderr.

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

    /// The revision the tool itself sees, through its own configuration
    /// (by default the one rollbackd reads).
    fn tool_current<'a>(
        &'a self,
        db: &'a Database,
    ) -> BoxFuture<'a, Result<Option<String>, DbError>> {
        self.current(db)
    }

    /// The revision `steps` downgrades below `revision` (`"base"` below the
    /// first), read from the migration scripts; the database is not touched.
    fn below<'a>(
        &'a self,
        db: &'a Database,
        revision: &'a str,
        steps: u32,
    ) -> BoxFuture<'a, Result<String, DbError>> {
        let _ = (db, steps);
        Box::pin(async move {
            Err(DbError::Tool(format!(
                "this migration tool cannot count steps below {revision}; name the revision with --db-target"
            )))
        })
    }

    /// The full revision id `revision` names (a prefix, or `base`), read
    /// from the migration scripts.
    fn resolve<'a>(
        &'a self,
        db: &'a Database,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<String, DbError>> {
        let _ = db;
        Box::pin(async move { Ok(revision.to_string()) })
    }

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
pub(crate) struct Alembic {
    /// argv prefix, like `["alembic"]` or `[".venv/bin/alembic"]`.
    pub command: Vec<String>,
    /// `-c` config file.
    pub config: Option<PathBuf>,
    pub working_dir: Option<PathBuf>,
    pub timeout: Duration,
    /// The SQLAlchemy driver for `ROLLBACKD_SQLALCHEMY_URL`.
    pub driver: String,
}

/// `url` in the form SQLAlchemy expects: `postgresql+<driver>://…`
/// (SQLAlchemy refuses `postgres://`, and reads a bare `postgresql://` as
/// whatever its version's default driver is).
///
/// A %-encoded socket directory in the host part moves to `?host=`, which
/// SQLAlchemy hands to libpq as it is (it does not decode a host).
pub(crate) fn sqlalchemy_url(url: &str, driver: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (host_port, None),
    };
    if !host.to_ascii_lowercase().starts_with("%2f") {
        return format!("postgresql+{driver}://{rest}");
    }
    let path = if tail.is_empty() { "/" } else { tail };
    let mut extra = format!("host={}", crate::pg::decode(host));
    if let Some(port) = port {
        extra.push_str(&format!("&port={port}"));
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("postgresql+{driver}://{userinfo}{path}{sep}{extra}")
}

/// The last lines of a command's output, on one line.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
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
        cmd.args(args).env("DATABASE_URL", db.url()).env(
            "ROLLBACKD_SQLALCHEMY_URL",
            sqlalchemy_url(db.url(), &self.driver),
        );
        // The TLS settings, as libpq variables: the URL's parameters
        // already reach psycopg, and these carry the ones rollbackd read
        // from its own environment or libpq's defaults.
        for (k, v) in db.tls.libpq_env().iter().chain(extra_env) {
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
            let said: Vec<String> = [("stdout", &output.stdout), ("stderr", &output.stderr)]
                .into_iter()
                .map(|(name, bytes)| (name, tail(bytes)))
                .filter(|(_, t)| !t.is_empty())
                .map(|(name, t)| format!("{name}: {}", crate::secret::redact_url(&t)))
                .collect();
            return Err(DbError::Tool(format!(
                "{what} failed ({}): {}",
                output.status,
                if said.is_empty() {
                    "it printed nothing".into()
                } else {
                    said.join("; ")
                }
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

    /// `alembic current`: run with the lock flag, since rollbackd may hold
    /// the migration lock when it asks.
    fn tool_current<'a>(
        &'a self,
        db: &'a Database,
    ) -> BoxFuture<'a, Result<Option<String>, DbError>> {
        Box::pin(async move {
            let out = self
                .run(
                    db,
                    &["current"],
                    &[("ROLLBACKD_HOLDS_MIGRATION_LOCK", "1".to_string())],
                )
                .await?;
            Ok(out
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("INFO"))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string))
        })
    }

    /// `alembic show REV`: its `Rev:` line.
    fn resolve<'a>(
        &'a self,
        db: &'a Database,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<String, DbError>> {
        Box::pin(async move {
            if revision == "base" {
                return Ok(revision.to_string());
            }
            let shown = self.run(db, &["show", revision], &[]).await?;
            header(&shown, "Rev:").ok_or_else(|| {
                DbError::Tool(format!(
                    "`alembic show {revision}` names no single revision"
                ))
            })
        })
    }

    /// `alembic show REV`, once per step: its `Parent:` line.
    fn below<'a>(
        &'a self,
        db: &'a Database,
        revision: &'a str,
        steps: u32,
    ) -> BoxFuture<'a, Result<String, DbError>> {
        Box::pin(async move {
            let mut at = revision.to_string();
            for step in 0..steps {
                if at == "base" {
                    return Err(DbError::Tool(format!(
                        "{revision} is only {step} step(s) above base; ask for at most {step}"
                    )));
                }
                let shown = self.run(db, &["show", &at], &[]).await?;
                at = parent(&shown).ok_or_else(|| {
                    DbError::Tool(format!(
                        "`alembic show {at}` names no single parent (a merge point?); name the revision with --db-target"
                    ))
                })?;
            }
            Ok(at)
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

pub(crate) use super::classify::destructive_statements;

/// The parent `alembic show` names: `Parent: b`, or `Parent: <base>` for
/// the first revision; `None` for a merge point (`Merges: a, b`).
fn parent(shown: &str) -> Option<String> {
    match header(shown, "Parent:")?.as_str() {
        "<base>" => Some("base".into()),
        p => Some(p.to_string()),
    }
}

/// A single-valued header line of `alembic show` (`Rev: c (head)` gives
/// `c`), read only above `Path:`: the docstring below may say anything.
fn header(shown: &str, name: &str) -> Option<String> {
    let value = shown
        .lines()
        .take_while(|l| !l.starts_with("Path:"))
        .find_map(|l| l.strip_prefix(name))?
        .trim();
    let first = value.split(" (").next().unwrap_or_default().trim();
    (!first.is_empty() && !first.contains([',', ' '])).then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::{header, parent};

    #[test]
    fn the_parent_is_read_from_alembic_show() {
        let shown = "Rev: c\nParent: b\nPath: versions/c.py\n\n    drop column\n";
        assert_eq!(parent(shown).as_deref(), Some("b"));
        assert_eq!(parent("Rev: a\nParent: <base>\n").as_deref(), Some("base"));
        assert_eq!(parent("Rev: m (head) (mergepoint)\nMerges: a, b\n"), None);
        assert_eq!(parent("Rev: x\nParent: a, b\n"), None);
        let merge =
            "Rev: m (head) (mergepoint)\nMerges: a, b\nPath: v/m.py\n\n    Parent: not this\n";
        assert_eq!(parent(merge), None, "the docstring is not read");
        assert_eq!(header(merge, "Rev:").as_deref(), Some("m"));
    }
}
