//! The emergency backup taken before a rollback touches the database:
//! `pg_dump` in custom format, a SHA-256 checksum beside it, verified (the
//! checksum re-read and `pg_restore --list` succeeding) before the engine goes
//! on, metadata kept with it, and only the newest N kept.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::Database;

/// A verified backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backup {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    pub created_at: String,
    pub database: String,
    pub deployment_id: String,
    pub reason: String,
    /// How to put it back.
    pub restore_command: String,
    /// Seconds spent in pg_dump, and in verification.
    pub dump_seconds: f64,
    pub verify_seconds: f64,
    /// The copy in `[database.backup_store]`, once uploaded and read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
}

/// Why a backup could not be taken or checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    /// The backup directory cannot be created.
    #[error("cannot create the backup directory {}: {cause}", dir.display())]
    CreateDir { dir: PathBuf, cause: std::io::Error },
    /// The backup directory cannot be made absolute.
    #[error("backup directory {}: {cause}", dir.display())]
    Absolute { dir: PathBuf, cause: std::io::Error },
    /// pg_dump or pg_restore could not be started.
    #[error("cannot run {what}: {cause} (is the PostgreSQL client installed?)")]
    Spawn { what: String, cause: std::io::Error },
    /// pg_dump or pg_restore ran and failed.
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The finished dump cannot be renamed to its final name.
    #[error("cannot move the dump into place: {0}")]
    Rename(std::io::Error),
    /// A file cannot be read while hashing it.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The hashing task ended abnormally.
    #[error("checksum task failed: {0}")]
    HashTask(tokio::task::JoinError),
    /// The checksum file cannot be written.
    #[error("cannot write the checksum: {0}")]
    WriteChecksum(std::io::Error),
    /// The metadata cannot be turned into JSON.
    #[error(transparent)]
    Encode(serde_json::Error),
    /// The metadata file cannot be written.
    #[error("cannot write the backup metadata: {0}")]
    WriteMetadata(std::io::Error),
    /// The checksum file beside a backup cannot be read.
    #[error("backup {}: cannot read its checksum file: {cause}", path.display())]
    ReadChecksum {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The backup's bytes do not match its checksum file.
    #[error("backup {} is corrupt: its SHA-256 is {actual}, the checksum file says {recorded}", path.display())]
    Corrupt {
        path: PathBuf,
        actual: String,
        recorded: String,
    },
    /// `pg_restore --list` cannot read the backup.
    #[error("backup {} cannot be read back: {cause}", path.display())]
    Unreadable {
        path: PathBuf,
        cause: Box<BackupError>,
    },
}

/// The programs used, and how hard pg_dump compresses.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub pg_dump: String,
    pub pg_restore: String,
    /// gzip level, 0 to 9 (`pg_dump --compress`).
    pub compress: u8,
}

impl Tools {
    pub(crate) fn new(config: &super::config::DatabaseConfig) -> Tools {
        Tools {
            pg_dump: config.pg_dump.clone(),
            pg_restore: config.pg_restore.clone(),
            compress: config.compress,
        }
    }
}

/// Takes, checksums and verifies a backup of `db` into `dir`.
pub(crate) async fn create(
    db: &Database,
    tools: &Tools,
    dir: &Path,
    rollback_id: &str,
    deployment_id: &str,
    reason: &str,
) -> Result<Backup, BackupError> {
    std::fs::create_dir_all(dir).map_err(|source| BackupError::CreateDir {
        dir: dir.to_path_buf(),
        cause: source,
    })?;
    // Absolute, so the restore command works from anywhere.
    let dir = &std::path::absolute(dir).map_err(|source| BackupError::Absolute {
        dir: dir.to_path_buf(),
        cause: source,
    })?;
    let path = dir.join(file_name(SystemTime::now(), rollback_id));
    // pg_dump writes beside the final name; only a complete dump is renamed
    // into place, so a killed or failed dump never looks like a backup.
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    // The dump holds the whole database: readable by rollbackd's user only.
    // pg_dump truncates the file it is given and keeps its mode.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|source| BackupError::CreateDir {
                dir: partial.clone(),
                cause: source,
            })?;
    }
    let started = Instant::now();
    let dumped = run(
        crate::child::command(&tools.pg_dump)
            .args(["--format=custom", "--no-password"])
            .arg(format!("--compress={}", tools.compress))
            .arg("--file")
            .arg(&partial)
            .envs(db.libpq_env().iter().map(|(k, v)| (*k, v.as_str()))),
        "pg_dump",
    )
    .await
    .and_then(|()| std::fs::rename(&partial, &path).map_err(BackupError::Rename));
    if let Err(e) = dumped {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let dump_seconds = started.elapsed().as_secs_f64();
    let verify_started = Instant::now();
    let sha256 = sha256_off_thread(&path).await?;
    let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    crate::state::write_atomic(
        &checksum_path(&path),
        format!("{sha256}  {name}\n").as_bytes(),
    )
    .map_err(BackupError::WriteChecksum)?;
    let mut backup = Backup {
        restore_command: format!("rollbackd backup restore {}", path.display()),
        path,
        sha256,
        size_bytes,
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        database: db.target.clone(),
        deployment_id: deployment_id.to_string(),
        reason: reason.to_string(),
        dump_seconds,
        verify_seconds: 0.0,
        remote_url: None,
    };
    verify(&backup.path, tools).await?;
    backup.verify_seconds = verify_started.elapsed().as_secs_f64();
    let meta = serde_json::to_vec_pretty(&backup).map_err(BackupError::Encode)?;
    crate::state::write_atomic(&metadata_path(&backup.path), &meta)
        .map_err(BackupError::WriteMetadata)?;
    Ok(backup)
}

/// Checks a backup: its checksum file matches its bytes, and `pg_restore
/// --list` can read it.
pub(crate) async fn verify(path: &Path, tools: &Tools) -> Result<(), BackupError> {
    let recorded = std::fs::read_to_string(checksum_path(path)).map_err(|source| {
        BackupError::ReadChecksum {
            path: path.to_path_buf(),
            cause: source,
        }
    })?;
    let recorded = recorded.split_whitespace().next().unwrap_or("").to_string();
    let actual = sha256_off_thread(path).await?;
    if recorded != actual {
        return Err(BackupError::Corrupt {
            path: path.to_path_buf(),
            actual,
            recorded,
        });
    }
    run(
        crate::child::command(&tools.pg_restore)
            .arg("--list")
            .arg(path),
        "pg_restore --list",
    )
    .await
    .map_err(|e| BackupError::Unreadable {
        path: path.to_path_buf(),
        cause: Box::new(e),
    })
}

/// `rollbackd-<stamp>-<rollback id>.dump`. The stamp is UTC to the
/// nanosecond (`20250102T030405.123456789Z`): with whole seconds, backups
/// taken in the same second were told apart only by their random ids.
/// The id prefix of manual backups (`rollbackd backup create`).
pub(crate) const MANUAL_PREFIX: &str = "bk";

fn file_name(at: SystemTime, rollback_id: &str) -> String {
    let stamp = humantime::format_rfc3339_nanos(at)
        .to_string()
        .replace([':', '-'], "");
    format!("rollbackd-{stamp}-{rollback_id}.dump")
}

/// When a backup was taken, from its file name: the stamp in the name (to
/// the nanosecond; older names carry whole seconds), then the file's
/// modification time for names from the same second, then the name, so
/// the order is total. Sort by this, never by the name alone.
pub(crate) fn chronological_key(path: &Path) -> Chronology {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    chronology(name, modified)
}

/// A backup's place in time: the stamp in its name, then when it was
/// written, then the name.
pub(crate) type Chronology = (Option<SystemTime>, Option<SystemTime>, String);

/// The order of a backup named `name`, written at `modified` (a file's
/// modification time, or a store's last-modified).
pub(crate) fn chronology(name: &str, modified: Option<SystemTime>) -> Chronology {
    let stamp = name
        .strip_prefix("rollbackd-")
        .and_then(|n| n.split('-').next())
        .and_then(parse_stamp);
    (stamp, modified, name.to_string())
}

/// `rollbackd-<stamp>-<id>.dump`: a name rollbackd gave a backup. Other
/// files, `rollbackd-before-migration.dump` among them, are never pruned.
pub(crate) fn is_dump_name(name: &str) -> bool {
    name.ends_with(".dump") && chronology(name, None).0.is_some()
}

/// Of `names`, oldest first, the ones beyond the newest `keep` of each
/// kind. Manual backups (`rollbackd backup create`, ids `bk-…`) and the
/// emergency ones taken by rollbacks are kept `keep` each: a manual backup
/// never prunes the last emergency dump.
pub(crate) fn excess<T: AsRef<str>>(names: Vec<T>, keep: usize) -> Vec<T> {
    let manual_id = format!("-{MANUAL_PREFIX}-");
    let (manual, emergency): (Vec<T>, Vec<T>) = names.into_iter().partition(|n| {
        let name = n.as_ref().rsplit('/').next().unwrap_or_default();
        name.contains(&manual_id)
    });
    let mut excess = Vec::new();
    for kind in [manual, emergency] {
        let over = kind.len().saturating_sub(keep.max(1));
        excess.extend(kind.into_iter().take(over));
    }
    excess
}

/// `20250102T030405Z` or `20250102T030405.123456789Z` back to a time.
fn parse_stamp(stamp: &str) -> Option<SystemTime> {
    let (date, time) = stamp.split_once('T')?;
    if date.len() != 8 || time.len() < 7 || !date.is_ascii() || !time.is_ascii() {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}",
        &date[..4],
        &date[4..6],
        &date[6..],
        &time[..2],
        &time[2..4],
        &time[4..]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// Deletes all but the newest `keep` backups (and their checksum and metadata files).
pub(crate) fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dumps: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_dump_name)
        })
        .collect();
    dumps.sort_by_cached_key(|p| chronological_key(p));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.to_string_lossy().ends_with(".dump.partial") {
                let _ = std::fs::remove_file(&p);
            }
            // A download of a store's copy that a killed `backup verify`
            // or `restore` left behind (an hour old: not one in progress).
            let stale = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
            let download = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".download-"));
            if download && stale {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let names: Vec<String> = dumps.iter().map(|p| p.display().to_string()).collect();
    let removed: Vec<PathBuf> = excess(names, keep).into_iter().map(PathBuf::from).collect();
    for p in &removed {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(checksum_path(p));
        let _ = std::fs::remove_file(metadata_path(p));
    }
    removed
}

pub(crate) fn checksum_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sha256", path.display()))
}

pub(crate) fn metadata_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.json", path.display()))
}

/// Hashes on a blocking thread: a large dump must not stall the watcher or
/// the health endpoints while it is read.
async fn sha256_off_thread(path: &Path) -> Result<String, BackupError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(BackupError::HashTask)?
}

fn sha256_file(path: &Path) -> Result<String, BackupError> {
    let read_error = |source| BackupError::Read {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

async fn run(cmd: &mut Command, what: &str) -> Result<(), BackupError> {
    let output = crate::child::output(cmd, None)
        .await
        .map_err(|e| BackupError::Spawn {
            what: what.to_string(),
            cause: match e {
                crate::child::ChildError::Spawn(e) | crate::child::ChildError::Wait(e) => e,
                timeout => std::io::Error::other(timeout.to_string()),
            },
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BackupError::Failed {
            what: what.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_backups_never_prune_the_emergency_ones() {
        let dir = tempfile::tempdir().unwrap();
        // Once: three manual backups after a rollback pruned its dump.
        for (stamp, id) in [
            ("20250101T000000Z", "rb-1"),
            ("20250102T000000Z", "bk-1"),
            ("20250103T000000Z", "bk-2"),
            ("20250104T000000Z", "bk-3"),
        ] {
            std::fs::write(
                dir.path().join(format!("rollbackd-{stamp}-{id}.dump")),
                b"x",
            )
            .unwrap();
        }
        let removed = prune(dir.path(), 2);
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].to_str().unwrap().contains("bk-1"), "{removed:?}");
        assert!(dir
            .path()
            .join("rollbackd-20250101T000000Z-rb-1.dump")
            .exists());
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["20250101T000000Z", "20250102T000000Z", "20250103T000000Z"] {
            let p = dir.path().join(format!("rollbackd-{stamp}-rb-1.dump"));
            std::fs::write(&p, b"x").unwrap();
            std::fs::write(checksum_path(&p), b"x").unwrap();
        }
        std::fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        // Named like a backup by hand: not rollbackd's to prune.
        std::fs::write(dir.path().join("rollbackd-before-migration.dump"), b"x").unwrap();
        let removed = prune(dir.path(), 2);
        assert_eq!(removed.len(), 1);
        assert!(removed[0].to_str().unwrap().contains("20250101"));
        assert!(!checksum_path(&removed[0]).exists());
        assert!(dir.path().join("unrelated.txt").exists());
        assert!(dir.path().join("rollbackd-before-migration.dump").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
    }

    #[test]
    fn sha256_matches_the_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn dump(dir: &Path, name: &str, written: SystemTime) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(written)
            .unwrap();
        p
    }

    #[test]
    fn backups_taken_in_the_same_second_are_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let second = humantime::parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
        // The earlier backup has the id that sorts last.
        let first = file_name(second + std::time::Duration::from_millis(100), "rb-zz");
        let second_one = file_name(second + std::time::Duration::from_millis(900), "rb-aa");
        dump(dir.path(), &first, SystemTime::now());
        dump(dir.path(), &second_one, SystemTime::now());
        let removed = prune(dir.path(), 1);
        assert_eq!(removed, vec![dir.path().join(&first)]);
        assert!(dir.path().join(&second_one).exists());
    }

    #[test]
    fn old_backup_names_from_the_same_second_are_pruned_in_the_order_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = humantime::parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
        let later = earlier + std::time::Duration::from_millis(400);
        let older = dump(dir.path(), "rollbackd-20250101T000000Z-rb-zz.dump", earlier);
        let newer = dump(dir.path(), "rollbackd-20250101T000000Z-rb-aa.dump", later);
        // A new-style name from a later second is newer than both.
        let newest = dump(
            dir.path(),
            &file_name(earlier + std::time::Duration::from_secs(1), "rb-0"),
            earlier,
        );
        assert_eq!(prune(dir.path(), 2), vec![older]);
        assert!(newer.exists() && newest.exists());
    }

    #[test]
    fn backup_names_keep_their_time_to_the_nanosecond() {
        let at = humantime::parse_rfc3339("2025-01-02T03:04:05.123456789Z").unwrap();
        let name = file_name(at, "rb-1");
        assert_eq!(name, "rollbackd-20250102T030405.123456789Z-rb-1.dump");
        let (stamp, _, _) = chronological_key(Path::new(&name));
        assert_eq!(stamp, Some(at));
        let (old, _, _) = chronological_key(Path::new("rollbackd-20250102T030405Z-rb-1.dump"));
        assert_eq!(old, humantime::parse_rfc3339("2025-01-02T03:04:05Z").ok());
    }

    #[tokio::test]
    async fn a_backup_that_does_not_match_its_checksum_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rollbackd-20250101T000000Z-rb-1.dump");
        std::fs::write(&p, b"abc").unwrap();
        std::fs::write(checksum_path(&p), b"0000  x.dump\n").unwrap();
        let tools = Tools {
            pg_dump: "pg_dump".into(),
            pg_restore: "pg_restore".into(),
            compress: 9,
        };
        let e = verify(&p, &tools).await.unwrap_err();
        assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "backup {} is corrupt: its SHA-256 is \
                 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad, \
                 the checksum file says 0000",
                p.display()
            )
        );
    }
}
