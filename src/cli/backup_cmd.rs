//! `rollbackd backup`: create, list, verify and restore the database
//! backups, on their own (a rollback takes its emergency backup itself).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::engine_cmd::print_json;
use super::{BackupCommand, CliError, Exit};
use crate::config::Config;
use crate::db::config::DatabaseConfig;
use crate::db::store::{self, BackupStore};
use crate::engine;
use crate::state::StateDir;

pub(super) async fn backup(config: &Config, cmd: BackupCommand) -> Exit {
    let Some(db_config) = &config.database else {
        return Err(CliError::Usage(
            "no database is configured: set DATABASE_URL (or database.url); `[database] enabled = false` turns it off".into(),
        ));
    };
    let backups = Backups {
        config: db_config,
        dir: db_config
            .backup_dir
            .clone()
            .unwrap_or_else(|| StateDir::new(&config.engine.state_dir).backups()),
        tools: crate::db::backup::Tools::new(db_config),
    };
    match cmd {
        BackupCommand::Create { reason } => backups.create(&reason).await,
        BackupCommand::List { json } => list(&backups.dir, backups.store()?.as_ref(), json).await,
        BackupCommand::Restore {
            path,
            dbname,
            replace,
            yes,
        } => backups.restore(&path, dbname, replace, yes).await,
        BackupCommand::Verify { path } => backups.verify(&path).await,
    }
}

/// The configured database's backups: where they are and the tools that
/// make and read them.
struct Backups<'a> {
    config: &'a DatabaseConfig,
    dir: PathBuf,
    tools: crate::db::backup::Tools,
}

impl Backups<'_> {
    /// The configured store. Only `create` and `list` use it: a broken one
    /// never blocks verifying or restoring a file (or a URL, opened on its
    /// own).
    fn store(&self) -> Result<Option<BackupStore>, CliError> {
        let Some(c) = &self.config.backup_store else {
            return Ok(None);
        };
        let folder = crate::db::Database::from_config(self.config)
            .map_err(CliError::usage)?
            .store_folder()
            .to_string();
        BackupStore::open(c, self.config.keep_backups, &folder)
            .map(Some)
            .map_err(|e| CliError::Usage(format!("database.backup_store: {e}")))
    }

    async fn create(&self, reason: &str) -> Exit {
        let store = self.store()?;
        let db = crate::db::Database::from_config(self.config).map_err(CliError::usage)?;
        let id = engine::new_id(crate::db::backup::MANUAL_PREFIX);
        let mut b = crate::db::backup::create(&db, &self.tools, &self.dir, &id, "-", reason)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        crate::db::backup::prune(&self.dir, self.config.keep_backups);
        println!("backup {} verified", b.path.display());
        println!("  size {} bytes, sha256 {}", b.size_bytes, b.sha256);
        println!(
            "  pg_dump {:.2}s, verification {:.2}s",
            b.dump_seconds, b.verify_seconds
        );
        let exit = match &store {
            Some(store) => upload(store, &mut b).await,
            None => Ok(()),
        };
        println!("  restore with: {}", b.restore_command);
        exit
    }

    async fn restore(&self, path: &Path, dbname: Option<String>, replace: bool, yes: bool) -> Exit {
        let db = crate::db::Database::from_config(self.config).map_err(CliError::usage)?;
        // Asked before anything is downloaded or created: a restore writes
        // a whole database on the live server.
        if !yes {
            confirm_restore(&db, path, dbname.as_deref(), replace)?;
        }
        let fetched = Fetched::new(path, &self.dir).await?;
        let done = crate::db::restore::restore(&db, &self.tools, &fetched.path, dbname, replace)
            .await
            .map_err(|e| CliError::Failed(fetched.name_in(&e.to_string())))?;
        match &done.kept_as {
            None => println!(
                "restored {} into the new database {}; the live database is unchanged",
                path.display(),
                done.dbname
            ),
            Some(kept) => println!(
                "restored {} as {}; the database it replaced is kept as {kept} (drop it when you no longer need it)",
                path.display(),
                done.dbname
            ),
        }
        Ok(())
    }

    async fn verify(&self, path: &Path) -> Exit {
        let fetched = Fetched::new(path, &self.dir).await?;
        crate::db::backup::verify(&fetched.path, &self.tools)
            .await
            .map_err(|e| CliError::Failed(fetched.name_in(&e.to_string())))?;
        println!(
            "backup {} is intact (checksum matches, pg_restore can read it)",
            path.display()
        );
        Ok(())
    }
}

/// Copies a new backup into the store and reads it back; a failure keeps
/// it on this machine only, and says so.
async fn upload(store: &BackupStore, b: &mut crate::db::backup::Backup) -> Exit {
    match tokio::time::timeout(store.timeout, store.upload(b)).await {
        Ok(Ok(up)) => {
            println!(
                "  copied to {} and read back (sha256 matches) in {:.2}s",
                up.url, up.seconds
            );
            for url in up.pruned {
                println!("  pruned {url} (database.backup_store.keep)");
            }
            if let Some(e) = up.prune_error {
                eprintln!("rollbackd: warning: old copies in the store were not pruned: {e}");
            }
            Ok(())
        }
        Ok(Err(e)) => {
            eprintln!("rollbackd: the backup is kept on this machine only: {e}");
            Err(CliError::Reported)
        }
        Err(_) => {
            eprintln!(
                "rollbackd: the backup is kept on this machine only: the upload to {} did not finish within {} (database.backup_store.timeout)",
                store.url(),
                crate::duration::format(store.timeout)
            );
            Err(CliError::Reported)
        }
    }
}

/// Asks on the terminal before a restore; off a terminal, `--yes` is needed.
fn confirm_restore(
    db: &crate::db::Database,
    path: &Path,
    dbname: Option<&str>,
    replace: bool,
) -> Exit {
    let into = dbname.map_or_else(
        || "a new database (<live>_restored_<time>)".to_string(),
        |name| format!("a new database {name}"),
    );
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(if replace {
            format!(
                "--replace swaps the restored database in for {} and ends its sessions; pass --yes to confirm",
                db.target
            )
        } else {
            format!(
                "a restore writes {into} on {}, beside the live one; pass --yes to confirm",
                db.target
            )
        }));
    }
    if replace {
        eprint!(
            "Replace {} with the restore of {}? Its sessions are ended; it is kept under another name. [y/N] ",
            db.target,
            path.display()
        );
    } else {
        eprint!(
            "Restore {} into {into} on {}? The live database is not touched. [y/N] ",
            path.display(),
            db.target
        );
    }
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        eprintln!("nothing was changed");
        Err(CliError::Reported)
    }
}

/// A backup to work on: a local file as it is, or a store URL downloaded
/// into a directory of its own beside the backups, removed afterwards.
struct Fetched {
    path: PathBuf,
    /// The download's directory and the URL it came from.
    download: Option<(PathBuf, String)>,
}

impl Fetched {
    async fn new(arg: &Path, backups: &Path) -> Result<Fetched, CliError> {
        if !store::is_url(arg) {
            return Ok(Fetched {
                path: arg.to_path_buf(),
                download: None,
            });
        }
        let url = arg.display().to_string();
        // Refused before anything is printed or created: a URL with a
        // credential in it is never echoed whole.
        store::Location::parse(&url).map_err(|e| CliError::Usage(e.to_string()))?;
        let dir = backups.join(format!(".download-{}", engine::new_id("dl")));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        let mut fetched = Fetched {
            path: dir.clone(),
            download: Some((dir.clone(), url.clone())),
        };
        eprintln!("downloading {}", store::redact(&url));
        // On an error `fetched` is dropped, and the directory with it.
        fetched.path = store::download(&url, &dir)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        Ok(fetched)
    }

    /// A message about the downloaded file, naming the URL instead.
    fn name_in(&self, message: &str) -> String {
        match &self.download {
            Some((_, url)) => message.replace(&self.path.display().to_string(), url),
            None => message.to_string(),
        }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if let Some((dir, _)) = &self.download {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The backups on this machine and, with a store, the copies in it, newest first.
async fn list(dir: &Path, store: Option<&BackupStore>, json: bool) -> Exit {
    let mut local: Vec<crate::db::backup::Backup> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".dump.json"))
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect();
    local.sort_by_cached_key(|b| std::cmp::Reverse(crate::db::backup::chronological_key(&b.path)));
    let (remote, failed) = match store {
        None => (Vec::new(), None),
        Some(s) => match s.list().await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
    };
    let printed = if json {
        let tagged = |location: &str, v: serde_json::Value| {
            let mut v = v;
            v["location"] = location.into();
            v
        };
        let mut all: Vec<serde_json::Value> = local
            .iter()
            .map(|b| tagged("local", serde_json::to_value(b).unwrap_or_default()))
            .collect();
        all.extend(
            remote
                .iter()
                .map(|r| tagged("remote", serde_json::to_value(r).unwrap_or_default())),
        );
        print_json(&all)
    } else {
        if local.is_empty() {
            println!("no backups in {}", dir.display());
        }
        for b in &local {
            println!(
                "local   {}  {} bytes  {}  deployment {}  {}{}",
                b.created_at,
                b.size_bytes,
                b.path.display(),
                b.deployment_id,
                b.reason,
                if b.remote_url.is_some() {
                    "  (copied)"
                } else {
                    ""
                }
            );
        }
        if let Some(store) = store {
            if remote.is_empty() && failed.is_none() {
                println!("no copies in {}", store.url());
            }
        }
        for r in &remote {
            println!(
                "remote  {}  {} bytes  {}{}",
                r.modified,
                r.size_bytes,
                r.url,
                if r.has_checksum {
                    ""
                } else {
                    "  (no .sha256 beside it: cannot be verified)"
                }
            );
        }
        Ok(())
    };
    match failed {
        Some(e) => Err(CliError::Failed(e.to_string())),
        None => printed,
    }
}
