//! What a killed drill left behind, removed when `watch` starts: the
//! scratch database (only one rollbackd recorded before creating it, so a
//! database someone else named `rollbackd_drill_…` is never touched), the
//! drill's dump directory and a staging drill's state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::Engine;

/// Where scratch databases are recorded before they are created, one file
/// per database, removed once it is dropped.
fn marks(state_dir: &Path) -> PathBuf {
    state_dir.join("drills").join("scratch")
}

/// Records `name` before the drill creates it.
pub(crate) fn mark(state_dir: &Path, name: &str) -> std::io::Result<()> {
    let dir = marks(state_dir);
    std::fs::create_dir_all(&dir)?;
    crate::state::write_atomic(&dir.join(name), name.as_bytes())
}

/// `name` is gone (dropped, or never created by the drill).
pub(crate) fn unmark(state_dir: &Path, name: &str) {
    let _ = std::fs::remove_file(marks(state_dir).join(name));
}

/// A name the drill makes: `rollbackd_drill_` and lowercase letters and
/// digits (it is quoted in SQL, so nothing else may pass).
fn is_scratch_name(name: &str) -> bool {
    name.strip_prefix("rollbackd_drill_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

/// Removes what stopped drills left; returns what was removed, for the log.
/// Run at start, before any drill can run.
pub(crate) async fn sweep(engine: &Engine) -> Vec<String> {
    let state_dir = &engine.config.state_dir;
    let mut removed = Vec::new();
    let recorded: Vec<String> = std::fs::read_dir(marks(state_dir))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_scratch_name(n))
        .collect();
    if let (Some(db), false) = (&engine.db, recorded.is_empty()) {
        match db.database.connect(Duration::from_secs(10)).await {
            Ok(admin) => {
                for name in recorded {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    match admin.batch_execute(&drop).await {
                        Ok(()) => {
                            unmark(state_dir, &name);
                            removed.push(format!("database {name}"));
                        }
                        Err(e) => tracing::warn!(
                            database = %name,
                            error = %crate::db::describe(&e),
                            "a stopped drill's scratch database could not be dropped; it is tried again at the next start"
                        ),
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot reach the database to drop a stopped drill's scratch database; it is tried again at the next start"
            ),
        }
    }
    // Dump directories (`drill-<id>` in the backup directory) and staging
    // state directories (`drills/<id>`): both made by drills alone.
    let mut dirs = Vec::new();
    if let Some(db) = &engine.db {
        dirs.extend(dirs_named(&db.backup_dir, "drill-drill-"));
    }
    dirs.extend(dirs_named(&state_dir.join("drills"), "drill-"));
    for dir in dirs {
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir.display().to_string());
        }
    }
    if !removed.is_empty() {
        tracing::warn!(removed = ?removed, "removed what stopped drills left behind");
    }
    removed
}

/// The directories in `dir` whose names start with `prefix`.
fn dirs_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_drill_makes_are_swept() {
        assert!(is_scratch_name("rollbackd_drill_drill17337x9"));
        for name in [
            "rollbackd_drill_",
            "rollbackd_drill_X",
            "rollbackd_drill_a\"; DROP DATABASE app; --",
            "app",
            "rollbackd_drills",
        ] {
            assert!(!is_scratch_name(name), "{name}");
        }
    }
}
