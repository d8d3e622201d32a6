//! `rollbackd backup`: create, list, verify and restore the database
//! backups, on their own (a rollback takes its emergency backup itself).

use std::io::IsTerminal;

use super::engine_cmd::print_json;
use super::{BackupCommand, Exit};
use crate::config::Config;
use crate::engine;
use crate::state::StateDir;

pub async fn backup(config: &Config, cmd: BackupCommand) -> Exit {
    let Some(db_config) = &config.database else {
        return Exit::Usage(
            "no database is configured: set DATABASE_URL (or database.url); `[database] enabled = false` turns it off".into(),
        );
    };
    let dir = db_config
        .backup_dir
        .clone()
        .unwrap_or_else(|| StateDir::new(&config.engine.state_dir).backups());
    let tools = crate::db::backup::Tools {
        pg_dump: db_config.pg_dump.clone(),
        pg_restore: db_config.pg_restore.clone(),
    };
    match cmd {
        BackupCommand::Create { reason } => {
            let db = match crate::db::Database::from_config(db_config) {
                Ok(db) => db,
                Err(e) => return Exit::Usage(e.to_string()),
            };
            let id = engine::new_id(crate::db::backup::MANUAL_PREFIX);
            match crate::db::backup::create(&db, &tools, &dir, &id, "-", &reason).await {
                Ok(b) => {
                    crate::db::backup::prune(&dir, db_config.keep_backups);
                    println!("backup {} verified", b.path.display());
                    println!("  size {} bytes, sha256 {}", b.size_bytes, b.sha256);
                    println!(
                        "  pg_dump {:.2}s, verification {:.2}s",
                        b.dump_seconds, b.verify_seconds
                    );
                    println!("  restore with: {}", b.restore_command);
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("rollbackd: {e}");
                    Exit::Failed
                }
            }
        }
        BackupCommand::List { json } => {
            let mut backups: Vec<crate::db::backup::Backup> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".dump.json"))
                .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
                .collect();
            backups.sort_by_cached_key(|b| {
                std::cmp::Reverse(crate::db::backup::chronological_key(&b.path))
            });
            if json {
                return print_json(&backups);
            }
            if backups.is_empty() {
                println!("no backups in {}", dir.display());
            }
            for b in backups {
                println!(
                    "{}  {} bytes  {}  deployment {}  {}",
                    b.created_at,
                    b.size_bytes,
                    b.path.display(),
                    b.deployment_id,
                    b.reason
                );
            }
            Exit::Ok
        }
        BackupCommand::Restore {
            path,
            dbname,
            replace,
            yes,
        } => {
            let db = match crate::db::Database::from_config(db_config) {
                Ok(db) => db,
                Err(e) => return Exit::Usage(e.to_string()),
            };
            if replace && !yes {
                if !std::io::stdin().is_terminal() {
                    return Exit::Usage(format!(
                        "--replace swaps the restored database in for {} and ends its sessions; pass --yes to confirm",
                        db.target
                    ));
                }
                eprint!(
                    "Replace {} with the restore of {}? Its sessions are ended; it is kept under another name. [y/N] ",
                    db.target,
                    path.display()
                );
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    eprintln!("nothing was changed");
                    return Exit::Failed;
                }
            }
            match crate::db::restore::restore(&db, &tools, &path, dbname, replace).await {
                Ok(done) => {
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
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("rollbackd: {e}");
                    Exit::Failed
                }
            }
        }
        BackupCommand::Verify { path } => match crate::db::backup::verify(&path, &tools).await {
            Ok(()) => {
                println!(
                    "backup {} is intact (checksum matches, pg_restore can read it)",
                    path.display()
                );
                Exit::Ok
            }
            Err(e) => {
                eprintln!("rollbackd: {e}");
                Exit::Failed
            }
        },
    }
}
