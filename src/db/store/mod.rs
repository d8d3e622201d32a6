//! Off-machine copies of the backups (`[database.backup_store]`): after a
//! backup is written and verified locally it is uploaded with its `.sha256`
//! and metadata, read back and hashed, and the store is pruned as the local
//! directory is. `rollbackd backup verify|restore` take a store URL and
//! download the copy first.
//!
//! Credentials come from the environment the store's own tools read
//! (`AWS_*`); nothing here prints them, and store URLs carrying them are
//! refused.
//!
//! The store URL's parsing and the opening of its client are in
//! `location.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::backup::{self, Backup};

mod location;
use location::Scheme;
pub(crate) use location::{redact, Location};

/// Why a store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one rollbackd can use.
    #[error("{0}")]
    BadUrl(String),
    /// The store refused or failed an operation (its answer on one line:
    /// S3's XML errors span several).
    #[error("{what} {url}: {}", one_line(cause))]
    Store {
        what: &'static str,
        url: String,
        cause: object_store::Error,
    },
    /// A local file could not be read or written.
    #[error("{what} {}: {cause}", path.display())]
    Local {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// What was read back is not what was sent.
    #[error("the copy at {url} does not match the local backup: {found}, expected {expected}; it was removed")]
    Mismatch {
        url: String,
        found: String,
        expected: String,
    },
}

/// The configured store: where copies go and how many are kept.
pub struct BackupStore {
    /// Where this database's copies are: the configured URL's key with the
    /// database's folder under it.
    location: Location,
    /// The configured key (a file:// store's mount point).
    root: Key,
    store: Arc<dyn ObjectStore>,
    pub keep: usize,
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupStore")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

/// A copy in the store.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteBackup {
    pub url: String,
    pub name: String,
    pub size_bytes: u64,
    /// When the store last wrote it.
    pub modified: String,
    /// Its `.sha256` is beside it (a copy without one cannot be verified).
    pub has_checksum: bool,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub url: String,
    pub seconds: f64,
    /// Copies pruned from the store afterwards.
    pub pruned: Vec<String>,
    /// Why pruning failed (the copy itself is good).
    pub prune_error: Option<String>,
}

impl BackupStore {
    /// The store at `config.url`, holding one database's copies in
    /// `folder` under it ([`super::Database::store_folder`]).
    pub fn open(
        config: &super::config::BackupStoreConfig,
        keep_default: usize,
        folder: &str,
    ) -> Result<BackupStore, StoreError> {
        let mut location = Location::parse(&config.url)?;
        let root = location.key.clone();
        location.key = root.clone().join(folder);
        let store = location.open()?;
        Ok(BackupStore {
            location,
            root,
            store,
            keep: config.keep.unwrap_or(keep_default),
            timeout: config.timeout,
        })
    }

    /// The store's URL, safe to print.
    pub fn url(&self) -> String {
        self.location.url_of(&self.location.key)
    }

    /// A file:// store's directory must be there: object_store would
    /// create it, and an unmounted path would then fill the local disk.
    /// The database's folder in it is made here, owner-only.
    fn ready(&self) -> Result<(), StoreError> {
        if self.location.scheme == Scheme::File {
            let root = PathBuf::from(format!("/{}", self.root));
            if !root.is_dir() {
                return Err(StoreError::BadUrl(format!(
                    "{} is not a directory here; create or mount it",
                    self.location.url_of(&self.root)
                )));
            }
            let dir = PathBuf::from(format!("/{}", self.location.key));
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(StoreError::Local {
                        what: "cannot create the database's folder",
                        path: dir,
                        cause: source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Makes a file:// copy readable by its owner alone.
    fn restrict(&self, key: &Key) {
        use std::os::unix::fs::PermissionsExt;
        if self.location.scheme == Scheme::File {
            let path = PathBuf::from(format!("/{key}"));
            if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot make the backup copy private (0600)");
            }
        }
    }

    fn key(&self, name: &str) -> Key {
        self.location.key.clone().join(name)
    }

    fn failed(
        &self,
        what: &'static str,
        key: &Key,
    ) -> impl FnOnce(object_store::Error) -> StoreError {
        let url = self.location.url_of(key);
        move |cause| StoreError::Store { what, url, cause }
    }

    /// Uploads `backup` (its dump, `.sha256` and metadata), reads the dump
    /// back and checks its size and SHA-256, records the copy's URL in the
    /// local metadata, then prunes the store to `keep` per kind.
    pub async fn upload(&self, backup: &mut Backup) -> Result<Uploaded, StoreError> {
        let started = Instant::now();
        self.ready()?;
        let name = file_name(&backup.path);
        let key = self.key(&name);
        let url = self.location.url_of(&key);
        let mut file = tokio::fs::File::open(&backup.path)
            .await
            .map_err(|source| StoreError::Local {
                what: "cannot read the backup",
                path: backup.path.clone(),
                cause: source,
            })?;
        // Multipart for a large dump; an upload that fails midway is aborted
        // and never becomes visible under its name.
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key.clone());
        let upload_failed = |e: std::io::Error| StoreError::Store {
            what: "cannot upload the backup to",
            url: url.clone(),
            cause: object_store::Error::Generic {
                store: "backup store",
                source: Box::new(e),
            },
        };
        if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
            // Only before `shutdown`: BufWriter panics on an abort after it.
            let _ = writer.abort().await;
            return Err(upload_failed(e));
        }
        // A multipart upload that fails to complete leaves no object; its
        // parts are the store's to expire (a lifecycle rule on S3).
        writer.shutdown().await.map_err(upload_failed)?;
        // From here the dump is in the store: a copy that is not checked
        // and complete is removed again (best effort), never left to count
        // among the copies.
        let meta = match self.check_and_complete(backup, &name, &url).await {
            Ok(meta) => meta,
            Err(e) => {
                for key in [key.clone(), self.key(&format!("{name}.sha256"))] {
                    let _ = self.store.delete(&key).await;
                }
                return Err(e);
            }
        };
        // A file:// copy is as private as the local dump (0600), not the
        // umask's 0644: it holds the whole database.
        for key in [
            key.clone(),
            self.key(&format!("{name}.sha256")),
            self.key(&format!("{name}.json")),
        ] {
            self.restrict(&key);
        }
        backup.remote_url = Some(url.clone());
        // The local metadata names the copy too.
        crate::state::write_atomic(&backup::metadata_path(&backup.path), &meta).map_err(
            |source| StoreError::Local {
                what: "cannot write the backup metadata",
                path: backup::metadata_path(&backup.path),
                cause: source,
            },
        )?;
        // The copy is good whatever pruning does: a store that refuses
        // deletes (object lock, a write-only role) is a warning.
        let (pruned, prune_error) = match self.prune().await {
            Ok(pruned) => (pruned, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Ok(Uploaded {
            url,
            seconds: started.elapsed().as_secs_f64(),
            pruned,
            prune_error,
        })
    }

    /// Reads the uploaded dump back, checks it against `backup`, and puts
    /// its `.sha256` and metadata beside it; returns the metadata.
    async fn check_and_complete(
        &self,
        backup: &Backup,
        name: &str,
        url: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let (size, sha256) = self.read_back(&self.key(name)).await?;
        if size != backup.size_bytes || sha256 != backup.sha256 {
            return Err(StoreError::Mismatch {
                url: url.to_string(),
                found: format!("{size} bytes, sha256 {sha256}"),
                expected: format!("{} bytes, sha256 {}", backup.size_bytes, backup.sha256),
            });
        }
        let checksum = format!("{}  {name}\n", backup.sha256);
        let checksum_key = self.key(&format!("{name}.sha256"));
        self.store
            .put(&checksum_key, PutPayload::from(checksum))
            .await
            .map_err(self.failed("cannot upload the checksum to", &checksum_key))?;
        let mut described = backup.clone();
        described.remote_url = Some(url.to_string());
        let meta = serde_json::to_vec_pretty(&described).unwrap_or_default();
        let meta_key = self.key(&format!("{name}.json"));
        self.store
            .put(&meta_key, PutPayload::from(meta.clone()))
            .await
            .map_err(self.failed("cannot upload the metadata to", &meta_key))?;
        Ok(meta)
    }

    /// The object's size and SHA-256, hashed as it streams in.
    async fn read_back(&self, key: &Key) -> Result<(u64, String), StoreError> {
        let got = self
            .store
            .get(key)
            .await
            .map_err(self.failed("cannot read back", key))?;
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.failed("cannot read back", key))?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((size, hex(&hasher.finalize())))
    }

    /// Whether a backup could be stored now: a small object is written,
    /// read back and deleted (the copies are not touched), and the copies
    /// are listed. Says how many there are and the newest.
    pub async fn probe(&self, id: &str) -> Result<String, StoreError> {
        self.ready()?;
        let key = self.key(&format!(".rollbackd-probe-{id}"));
        let body = format!("rollbackd probe {id}\n");
        self.store
            .put(&key, PutPayload::from(body.clone()))
            .await
            .map_err(self.failed("cannot write to", &key))?;
        let read = self.read_back(&key).await;
        // Deleted whether or not it read back.
        let deleted = self.store.delete(&key).await;
        let (size, sha256) = read?;
        deleted.map_err(self.failed("cannot delete", &key))?;
        if size != body.len() as u64 || sha256 != hex(&Sha256::digest(body.as_bytes())) {
            return Err(StoreError::Mismatch {
                url: self.location.url_of(&key),
                found: format!("{size} bytes, sha256 {sha256}"),
                expected: format!("{} bytes", body.len()),
            });
        }
        let copies = self.list().await?;
        Ok(match copies.first() {
            None => format!(
                "{} takes a write, a read and a delete; no copies yet",
                self.url()
            ),
            Some(newest) => format!(
                "{} takes a write, a read and a delete; {} copies, the newest {}",
                self.url(),
                copies.len(),
                newest.name
            ),
        })
    }

    /// The copies in the store, newest first.
    pub async fn list(&self) -> Result<Vec<RemoteBackup>, StoreError> {
        self.ready()?;
        // The store's own level only: a prefix's sub-folders are someone
        // else's, and are not walked.
        let objects = self
            .store
            .list_with_delimiter(Some(&self.location.key))
            .await
            .map_err(self.failed("cannot list", &self.location.key))?
            .objects;
        let checksums: std::collections::BTreeSet<String> = objects
            .iter()
            .filter_map(|m| m.location.filename())
            .filter(|n| n.ends_with(".dump.sha256"))
            .map(str::to_string)
            .collect();
        let mut copies: Vec<(backup::Chronology, RemoteBackup)> = objects
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                backup::is_dump_name(&name).then(|| {
                    let modified = SystemTime::from(m.last_modified);
                    (
                        backup::chronology(&name, Some(modified)),
                        RemoteBackup {
                            url: self.location.url_of(&m.location),
                            has_checksum: checksums.contains(&format!("{name}.sha256")),
                            name,
                            size_bytes: m.size,
                            modified: humantime::format_rfc3339_seconds(modified).to_string(),
                        },
                    )
                })
            })
            .collect();
        copies.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(copies.into_iter().map(|(_, c)| c).collect())
    }

    /// Deletes all but the newest `keep` copies of each kind (emergency and
    /// manual), with their checksum and metadata. Returns their URLs.
    pub async fn prune(&self) -> Result<Vec<String>, StoreError> {
        // Only complete copies count: one without its `.sha256` (an upload
        // cut short) never pushes a verified one out.
        let copies: Vec<RemoteBackup> = self
            .list()
            .await?
            .into_iter()
            .filter(|c| c.has_checksum)
            .collect();
        let mut removed = Vec::new();
        for excess in backup::excess(
            copies.iter().rev().map(|c| c.name.clone()).collect(),
            self.keep,
        ) {
            for name in [
                excess.clone(),
                format!("{excess}.sha256"),
                format!("{excess}.json"),
            ] {
                let key = self.key(&name);
                match self.store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.failed("cannot delete", &key)(e)),
                }
            }
            removed.push(self.location.url_of(&self.key(&excess)));
        }
        Ok(removed)
    }
}

/// Whether `arg` names a copy in a store rather than a local file.
pub(crate) fn is_url(arg: &Path) -> bool {
    arg.to_str().is_some_and(|s| s.contains("://"))
}

/// Downloads the backup at `url` (and its `.sha256` and metadata, when
/// there) into `dir`, returning the local path. Nothing is verified here;
/// `backup::verify` does that on the result.
pub(crate) async fn download(url: &str, dir: &Path) -> Result<PathBuf, StoreError> {
    let location = Location::parse(url)?;
    let name = location
        .key
        .filename()
        .filter(|n| backup::is_dump_name(n))
        .ok_or_else(|| {
            StoreError::BadUrl(format!(
                "{:?} does not name a backup (rollbackd-….dump); `rollbackd backup list` shows them",
                redact(url)
            ))
        })?
        .to_string();
    let store = location.open()?;
    let local = dir.join(&name);
    let sidecars = [(".sha256", true), (".json", false)];
    fetch(&*store, &location, &location.key, &local).await?;
    let parent = location.key.parent().unwrap_or_default();
    for (suffix, needed) in sidecars {
        let key = parent.clone().join(format!("{name}{suffix}"));
        let path = PathBuf::from(format!("{}{suffix}", local.display()));
        match fetch(&*store, &location, &key, &path).await {
            Ok(()) => {}
            Err(StoreError::Store {
                cause: object_store::Error::NotFound { .. },
                ..
            }) if !needed => {}
            Err(e) => return Err(e),
        }
    }
    Ok(local)
}

/// Streams one object into `path` (readable by rollbackd's user only).
async fn fetch(
    store: &dyn ObjectStore,
    location: &Location,
    key: &Key,
    path: &Path,
) -> Result<(), StoreError> {
    let failed = |what| {
        let url = location.url_of(key);
        move |cause| StoreError::Store { what, url, cause }
    };
    let local = |source| StoreError::Local {
        what: "cannot write",
        path: path.to_path_buf(),
        cause: source,
    };
    let got = store.get(key).await.map_err(failed("cannot download"))?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(local)?;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed("cannot download"))?;
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.sync_all().await.map_err(local)
}

/// An error's text on one line, at most 600 characters, redacted.
fn one_line(e: &object_store::Error) -> String {
    crate::secret::shown(&e.to_string(), 600)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
