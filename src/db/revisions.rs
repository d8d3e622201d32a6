//! Which schema revision each deployment ran, recorded as rollbackd sees
//! deployments go live, so a rollback knows the revision its target expects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::state::Doc;

/// Why the revision file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file is not the JSON rollbackd writes.
    #[error("{} is not valid: {cause} (fix or remove it)", path.display())]
    Invalid {
        path: PathBuf,
        cause: serde_json::Error,
    },
    /// The revisions could not be turned into JSON.
    #[error(transparent)]
    Encode(serde_json::Error),
    /// The file cannot be written.
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Revisions {
    #[serde(default)]
    pub deployments: BTreeMap<String, SeenRevision>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenRevision {
    pub revision: String,
    pub seen_at: String,
}

/// `state/revisions.json`.
#[derive(Debug, Clone)]
pub struct RevisionStore {
    doc: Doc,
}

impl RevisionStore {
    pub fn new(doc: Doc) -> Self {
        RevisionStore { doc }
    }

    pub fn load(&self) -> Result<Revisions, RevisionError> {
        match self.doc.read() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revisions::default()),
            Err(source) => Err(RevisionError::Read {
                path: self.doc.path(),
                cause: source,
            }),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RevisionError::Invalid {
                path: self.doc.path(),
                cause: source,
            }),
        }
    }

    pub fn get(&self, deployment_id: &str) -> Option<String> {
        self.load()
            .ok()?
            .deployments
            .get(deployment_id)
            .map(|r| r.revision.clone())
    }

    /// Records that `deployment_id` runs at `revision`. The first sighting
    /// wins: a later migration (say, a pre-deploy step of the next release)
    /// must not rewrite what this deployment ran.
    pub fn record(&self, deployment_id: &str, revision: &str) -> Result<bool, RevisionError> {
        let mut all = self.load()?;
        if all.deployments.contains_key(deployment_id) {
            return Ok(false);
        }
        all.deployments.insert(
            deployment_id.to_string(),
            SeenRevision {
                revision: revision.to_string(),
                seen_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            },
        );
        let bytes = serde_json::to_vec_pretty(&all).map_err(RevisionError::Encode)?;
        self.doc
            .write(&bytes)
            .map_err(|source| RevisionError::Write {
                path: self.doc.path(),
                cause: source,
            })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sighting_of_a_deployment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = RevisionStore::new(Doc::file(dir.path().join("revisions.json")));
        assert!(store.record("d2", "b").unwrap());
        // The next release's migration ran while d2 was still live.
        assert!(!store.record("d2", "c").unwrap());
        assert_eq!(store.get("d2").as_deref(), Some("b"));
        assert!(store.record("d3", "c").unwrap());
        assert_eq!(store.get("d3").as_deref(), Some("c"));
    }

    #[test]
    fn a_broken_revision_file_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revisions.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = RevisionStore::new(Doc::file(&path)).load().unwrap_err();
        assert!(matches!(e, RevisionError::Invalid { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{} is not valid: ", path.display())),
            "{text}"
        );
        assert!(text.ends_with("(fix or remove it)"), "{text}");
    }
}
