//! The probes of `rollbackd check` (skipped with `--offline`): what a
//! rollback will need, tried now rather than found missing at 3 a.m.
//! Prometheus answers one query through `watch`'s client; pg_dump and
//! pg_restore answer `--version`, the database answers and says its
//! revision and how its session is protected, Alembic, through its own
//! configuration, names the same revision, the backup store lists its
//! copies; the state opens and every unfinished journal reads. Nothing is
//! changed, except that the PostgreSQL state's tables are created if they
//! are missing, as `watch` would.

use std::time::Duration;

use super::{CliError, Exit};
use crate::config::Config;

/// Asks Prometheus once, through the client `watch` builds (TLS, headers,
/// credentials, SigV4). A setting Prometheus or its TLS refuses fails the
/// check, naming the key; a Prometheus that is not up is a warning (`watch`
/// holds every rule until it answers).
pub(super) async fn prometheus(config: &Config) -> Exit {
    use crate::source::{MetricsSource, SourceError};
    let url = crate::secret::redact_url(&config.prometheus.url);
    let client =
        crate::source::prometheus::Prometheus::new(&config.prometheus).map_err(CliError::usage)?;
    let mut how = Vec::new();
    if config.prometheus.url.starts_with("https:") {
        how.push(if config.prometheus.tls.cert_file.is_some() {
            "TLS with a client certificate".to_string()
        } else {
            "TLS".to_string()
        });
    }
    if let Some(key) = config.prometheus.auth_key() {
        how.push(key.trim_start_matches("prometheus.").replace('_', " "));
    }
    if !config.prometheus.headers.is_empty() {
        let names: Vec<&str> = config
            .prometheus
            .headers
            .keys()
            .map(String::as_str)
            .collect();
        how.push(format!("headers {}", names.join(", ")));
    }
    let how = if how.is_empty() {
        String::new()
    } else {
        format!(" ({})", how.join("; "))
    };
    match client
        .query("vector(1)", std::time::SystemTime::now())
        .await
    {
        Ok(_) => {
            println!("prometheus OK: {url} answers{how}");
            Ok(())
        }
        Err(e) => {
            let text = e.to_string();
            let unreachable =
                matches!(e, SourceError::Connect { .. } | SourceError::Timeout { .. })
                    && ![
                        "certificate",
                        "TLS",
                        "tls",
                        "handshake",
                        "alert",
                        "sigv4",
                        "AWS",
                    ]
                    .iter()
                    .any(|w| text.contains(w));
            if unreachable {
                println!("prometheus WARNING: {text} (`watch` holds every rule until it answers)");
                Ok(())
            } else {
                Err(CliError::Failed(format!("prometheus: {text}")))
            }
        }
    }
}

/// Probes the database side; `Err(CliError::Reported)` when anything it will need is
/// missing, each problem named with its key and what to do.
pub(super) async fn database(config: &Config) -> Exit {
    let Some(db_config) = &config.database else {
        return Ok(());
    };
    let db = crate::db::Database::from_config(db_config).map_err(CliError::usage)?;
    let mut problems = Vec::new();
    for (key, program) in [
        ("database.pg_dump", &db_config.pg_dump),
        ("database.pg_restore", &db_config.pg_restore),
    ] {
        let mut cmd = crate::child::command(program);
        cmd.arg("--version");
        match crate::child::output(&mut cmd, Some(Duration::from_secs(10))).await {
            Ok(out) if out.status.success() => {
                println!("{key} OK: {}", String::from_utf8_lossy(&out.stdout).trim())
            }
            Ok(out) => problems.push(format!(
                "{key}: `{program} --version` failed ({})",
                out.status
            )),
            Err(e) => problems.push(format!(
                "{key}: cannot run {program:?}: {e} (install the PostgreSQL client, or set {key})"
            )),
        }
    }
    let revision = match crate::cli::wiring::migration_tool(config) {
        None => match db.connect(Duration::from_secs(10)).await {
            Ok(_) => {
                println!("database OK: {} answers", db.target);
                None
            }
            Err(e) => {
                problems.push(format!("database: {e}"));
                None
            }
        },
        Some(tool) => match tool.current(&db).await {
            Ok(revision) => {
                println!(
                    "database OK: {} answers, at revision {}",
                    db.target,
                    revision.as_deref().unwrap_or("none (no alembic_version)")
                );
                Some((tool, revision))
            }
            Err(e) => {
                problems.push(format!("database: {e}"));
                None
            }
        },
    };
    if problems.is_empty() {
        transport(&db).await;
    }
    if let Some((tool, revision)) = revision {
        match tool.tool_current(&db).await {
            Ok(seen) if seen == revision => println!(
                "migrations OK: `alembic current` names {}",
                seen.as_deref().unwrap_or("no revision")
            ),
            Ok(seen) => problems.push(format!(
                "migrations: `alembic current` names {}, but {} is at {}: Alembic's env.py reaches another database \
                 (read ROLLBACKD_SQLALCHEMY_URL or DATABASE_URL in env.py, not alembic.ini's sqlalchemy.url)",
                seen.as_deref().unwrap_or("no revision"),
                db.target,
                revision.as_deref().unwrap_or("no revision")
            )),
            Err(e) => problems.push(format!(
                "migrations: {e} (check migrations.command, migrations.working_dir and migrations.config)"
            )),
        }
    }
    if let Some(store_config) = &db_config.backup_store {
        // Listing reads nothing but names: the credentials and the bucket
        // are tried without writing.
        let listed = match crate::db::store::BackupStore::open(
            store_config,
            db_config.keep_backups,
            db.store_folder(),
        ) {
            Ok(store) => match tokio::time::timeout(Duration::from_secs(30), store.list()).await {
                Ok(Ok(copies)) => Ok(format!(
                    "database.backup_store OK: {} answers, {} copies",
                    store.url(),
                    copies.len()
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("{} did not answer within 30s", store.url())),
            },
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(line) => println!("{line}"),
            Err(e) => problems.push(format!(
                "database.backup_store: {e} (check the bucket and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL)"
            )),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("rollbackd: {p}");
    }
    eprintln!("(`rollbackd check --offline` checks the config and rules only)");
    Err(CliError::Reported)
}

/// Says how the database session is protected: TLS and what it verifies,
/// or plain text (a warning: nothing else is wrong with it).
async fn transport(db: &crate::db::Database) {
    let Ok(client) = db.connect(Duration::from_secs(10)).await else {
        return;
    };
    match db.transport(&client).await {
        Ok(Some(version)) => println!("database TLS OK: {version}, {}", db.tls.describe()),
        Ok(None) if db.target.starts_with('/') || db.target.starts_with("local socket") => {
            println!("database TLS: none (a local socket)")
        }
        Ok(None) => println!(
            "database TLS WARNING: the session is plain text ({}); set sslmode=verify-full and sslrootcert \
             in the URL to require TLS",
            db.tls.describe()
        ),
        Err(e) => println!("database TLS: unknown ({e})"),
    }
}

/// Opens the state `watch` would use and reads every journal left by an
/// unfinished rollback, as `watch` does at start: an unreachable PostgreSQL
/// state or a journal that cannot be read fails here, not at the restart.
pub(super) async fn state(config: &Config) -> Exit {
    let (store, _) = crate::cli::wiring::state(config).map_err(CliError::usage)?;
    let backend = match config.state.backend {
        crate::state::config::Backend::File => {
            format!("directory {}", config.engine.state_dir.display())
        }
        crate::state::config::Backend::Postgres => {
            format!("postgres (schema {})", config.state.schema)
        }
    };
    let journals = crate::engine::journal::JournalStore::new(store);
    match journals.unfinished() {
        Ok(left) => {
            println!(
                "state OK: {backend}, {} unfinished rollback journal(s)",
                left.len()
            );
            Ok(())
        }
        Err(e) => Err(CliError::Failed(format!("state: {e}"))),
    }
}

/// The provider, when it is Argo CD: the application answers the token, and
/// whether rollbackd holds its automated sync off. A refusal (a token that
/// is wrong, an application it may not read) fails the check; a server that
/// cannot be reached is a warning, as for Prometheus.
pub(super) async fn provider(config: &Config) -> Exit {
    let Some(crate::provider::config::ProviderConfig::Argocd(argocd)) = &config.provider else {
        return Ok(());
    };
    let provider = match super::wiring::provider(config) {
        Ok(p) => p,
        Err(e) => {
            return Err(CliError::Failed(format!("provider: {e}")));
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), provider.list(50)).await {
        Ok(Ok(list)) => println!(
            "provider OK: Argo CD application {} answers; {} history entries, the newest {}",
            argocd.application,
            list.len(),
            list.first().map_or("none", |d| d.id.as_str())
        ),
        Ok(Err(
            e @ crate::provider::ProviderError::Http {
                status: 400..=499, ..
            },
        )) => {
            return Err(CliError::Failed(format!("provider: {e}")));
        }
        Ok(Err(e)) => eprintln!("rollbackd: WARNING: provider: {e}"),
        Err(_) => eprintln!(
            "rollbackd: WARNING: provider: {} did not answer within 30s",
            argocd.server
        ),
    }
    if let Ok(Ok(Some(held))) = tokio::time::timeout(Duration::from_secs(30), provider.held()).await
    {
        println!("WARNING: {held}");
    }
    Ok(())
}

/// `[gitops]`: git reaches the repository's base branch, and GitHub lets the
/// token push and open pull requests there. Any refusal fails the check:
/// the pull request is opened after a rollback, when nobody is there to fix
/// a token.
pub(super) async fn gitops(config: &Config) -> Exit {
    let Some(g) = config.gitops.as_ref().filter(|g| g.enabled) else {
        return Ok(());
    };
    let gitops = match crate::gitops::Gitops::new(g, &config.engine.state_dir) {
        Ok(gitops) => gitops,
        Err(e) => {
            return Err(CliError::Failed(format!("gitops: {e}")));
        }
    };
    match gitops.check().await {
        Ok(said) => {
            println!("gitops OK: {said}");
            Ok(())
        }
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}
