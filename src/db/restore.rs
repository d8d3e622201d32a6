//! `rollbackd backup restore`: a verified backup into a **new** database by
//! default, so nothing that exists is touched. `--replace` then swaps it in
//! for the live one by renaming: the live database is kept, renamed
//! `<name>_replaced_<time>`, and the restored one takes its name. Unlike
//! `pg_restore --clean` over a newer schema, nothing the dump does not
//! contain survives in the database that now has the live name, and
//! nothing is dropped.
//!
//! With `[state] backend = "postgres"` in the same database, `--replace`
//! brings rollbackd's own history, breaker and journals back to the dump's
//! time too: say so to whoever runs it (the README does).

use std::time::{Duration, SystemTime};

use super::backup::{verify, BackupError, Tools};
use super::{describe, Database, DbError};

/// Why a restore stopped; what was done so far is said.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0:?} is not a plain database name (letters, digits and _, at most 63, not starting with a digit)")]
    BadName(String),
    #[error("database {0:?} already exists; give --dbname a new name")]
    Exists(String),
    #[error("pg_restore into {dbname} failed: {message}; the new database {dbname} holds what was restored so far (drop it with `DROP DATABASE {dbname}`), nothing else was changed")]
    Restore { dbname: String, message: String },
    #[error("cannot swap {restored} in for {live}: {message}; {restored} holds the restored data and {live} is unchanged")]
    Swap {
        live: String,
        restored: String,
        message: String,
    },
}

/// What a restore did.
#[derive(Debug)]
pub(crate) struct Restored {
    /// The database the dump went into (the live name after `--replace`).
    pub dbname: String,
    /// With `--replace`: the name the live database is kept under.
    pub kept_as: Option<String>,
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `name` as a quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// At most `bytes` bytes of `name`, cut at a character boundary.
fn prefix(name: &str, bytes: usize) -> &str {
    let mut end = name.len().min(bytes);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn stamp() -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    t.chars().filter(char::is_ascii_digit).collect()
}

/// Restores `path` (verified first) into `dbname`, or a new
/// `<live>_restored_<time>`; with `replace`, swaps it in for the live one.
pub(crate) async fn restore(
    db: &Database,
    tools: &Tools,
    path: &std::path::Path,
    dbname: Option<String>,
    replace: bool,
) -> Result<Restored, RestoreError> {
    verify(path, tools).await?;
    let admin = db.connect(Duration::from_secs(10)).await?;
    let query = |e: tokio_postgres::Error| DbError::Query(describe(&e));
    // The live database as the server names it (the URL may not).
    let row = admin
        .query_one(
            "SELECT current_database(), pg_encoding_to_char(encoding), datcollate, datctype \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(query)?;
    let (live, encoding, collate, ctype): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    // Names fit PostgreSQL's 63 bytes: 38 + "_restored_" (10) + 14 digits.
    let target = dbname.unwrap_or_else(|| format!("{}_restored_{}", prefix(&live, 38), stamp()));
    if !plain_name(&target) {
        return Err(RestoreError::BadName(target));
    }
    let exists = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&target],
        )
        .await
        .map_err(|e| DbError::Query(describe(&e)))?;
    if exists.get::<_, i64>(0) > 0 {
        return Err(RestoreError::Exists(target));
    }
    // As pg_restore advises: from template0, with the live one's encoding
    // and locale.
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {target} TEMPLATE template0 ENCODING '{}' LC_COLLATE '{}' LC_CTYPE '{}'",
            encoding.replace('\'', "''"),
            collate.replace('\'', "''"),
            ctype.replace('\'', "''")
        ))
        .await
        .map_err(query)?;
    let mut restore = crate::child::command(&tools.pg_restore);
    restore
        .args(["--no-owner", "--exit-on-error", "--no-password", "--dbname"])
        .arg(&target)
        .arg(path)
        .envs(db.libpq_env().iter().map(|(k, v)| (*k, v.as_str())))
        .env("PGDATABASE", &target);
    let output = crate::child::output(&mut restore, None)
        .await
        .map_err(|e| RestoreError::Restore {
            dbname: target.clone(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(RestoreError::Restore {
            dbname: target.clone(),
            message: String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_string(),
        });
    }
    if !replace {
        return Ok(Restored {
            dbname: target,
            kept_as: None,
        });
    }
    // The swap runs from the maintenance database: a database cannot be
    // renamed from a session inside it.
    let kept_as = format!("{}_replaced_{}", prefix(&live, 38), stamp());
    drop(admin);
    let swap = async {
        let maintenance = db.connect_to("postgres", Duration::from_secs(10)).await?;
        // The application's sessions are ended to rename its database; one
        // that reconnects at once makes the rename fail (55006, in use), so
        // that alone is retried.
        let mut attempt = 0;
        loop {
            maintenance
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&live],
                )
                .await
                .map_err(query)?;
            match maintenance
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    ident(&live),
                    ident(&kept_as)
                ))
                .await
            {
                Ok(()) => break,
                Err(e)
                    if attempt < 5
                        && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(query(e)),
            }
        }
        if let Err(e) = maintenance
            .batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(&target),
                ident(&live)
            ))
            .await
        {
            // Put the live database back under its name.
            let _ = maintenance
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    ident(&kept_as),
                    ident(&live)
                ))
                .await;
            return Err(query(e));
        }
        Ok(())
    };
    swap.await.map_err(|e| RestoreError::Swap {
        live: live.clone(),
        restored: target.clone(),
        message: e.to_string(),
    })?;
    Ok(Restored {
        dbname: live,
        kept_as: Some(kept_as),
    })
}
