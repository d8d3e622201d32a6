//! Durable state files: written whole to a temporary file, fsynced, renamed
//! over the old one, and the directory fsynced, so a crash leaves either the
//! old file or the new one, never half of either. Also the process lock that
//! makes "one rollback at a time" hold across processes (the daemon and the
//! CLI).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The rollback lock, released on drop: an exclusive lock on a file in the
/// state directory, or what another backend holds (a PostgreSQL session).
#[derive(Debug)]
pub struct StateLock {
    _held: Box<dyn std::fmt::Debug + Send + Sync>,
    pub path: PathBuf,
}

impl StateLock {
    /// A lock `held` keeps until it is dropped; `path` says where, for messages.
    pub fn held(held: impl std::fmt::Debug + Send + Sync + 'static, path: PathBuf) -> StateLock {
        StateLock {
            _held: Box::new(held),
            path,
        }
    }

    /// Takes the lock if it is free; `Ok(None)` when another process or task holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<StateLock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StateLock::held(file, path.to_path_buf()))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/history.json");
        write_atomic(&path, b"{\"a\":1}").unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollback.lock");
        let first = StateLock::try_acquire(&path).unwrap();
        assert!(first.is_some());
        assert!(StateLock::try_acquire(&path).unwrap().is_none());
        drop(first);
        assert!(StateLock::try_acquire(&path).unwrap().is_some());
    }
}
