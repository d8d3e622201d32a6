//! The run journal: one file per run in `state/runs/`, rewritten whole and
//! atomically before every step that changes the world (breaker opened,
//! backup taken, downgrade started and finished, platform call about to be
//! made and answered, verification started) and after every phase. It holds
//! the history entry as it stands, so the entry post-rollback records is the
//! journal's, and what a restarted rollbackd settles from (`recovery.rs`).
//! The file is removed once the history holds the run.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::breaker::BreakerRecord;
use super::plan::Plan;
use crate::history::Event;
use crate::state::StateStore;

/// The journal format's version; a newer one is refused, never rewritten.
pub(crate) const VERSION: u32 = 1;

/// A step that changes the world, or says how far one got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The run holds the lock and has a plan.
    Started,
    BreakerOpened,
    BackupTaken,
    /// Alembic was started; until `DowngradeFinished` the schema's state is unknown.
    DowngradeStarted,
    DowngradeFinished,
    /// The platform is about to be asked to roll back: from here on it may have been.
    PlatformCallStarted,
    /// The platform answered (`detail`: what it created, or why it refused).
    PlatformCallAnswered,
    VerificationStarted,
    /// rollbackd was asked to stop (SIGTERM) and stopped between phases.
    Stopped,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Started => "started",
            Step::BreakerOpened => "breaker_opened",
            Step::BackupTaken => "backup_taken",
            Step::DowngradeStarted => "downgrade_started",
            Step::DowngradeFinished => "downgrade_finished",
            Step::PlatformCallStarted => "platform_call_started",
            Step::PlatformCallAnswered => "platform_call_answered",
            Step::VerificationStarted => "verification_started",
            Step::Stopped => "stopped",
        }
    }
}

/// One journaled step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub step: Step,
    /// RFC 3339.
    pub at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What a request carried that the history entry does not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub skip_db: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_target: Option<super::request::DbTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
}

/// A run's journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub id: String,
    /// The process that ran it.
    pub pid: u32,
    pub steps: Vec<Mark>,
    /// The breaker before the run opened it (`None`: there was no breaker
    /// file), restored when the run is settled as interrupted.
    pub breaker_before: Option<BreakerRecord>,
    pub plan: Option<Plan>,
    /// The deployments the platform listed just before the rollback call, so
    /// the one the call created can be found when its answer was lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_deployments: Vec<String>,
    pub request: RequestRecord,
    /// The history entry as it stands.
    pub event: Event,
}

impl Journal {
    pub fn has(&self, step: Step) -> bool {
        self.steps.iter().any(|m| m.step == step)
    }
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the run journal directory {}: {cause}", path.display())]
    Dir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "run journal {} cannot be read: {message}. rollbackd does not know how far that \
         rollback got and will not overwrite the file: check the service, the database \
         and the platform, then move the file out of the state directory",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    /// The state store cannot be reached now (PostgreSQL down): nothing is
    /// known about the journals, which is not the same as one that is broken.
    #[error("cannot reach the run journals at {}: {cause}", path.display())]
    Unreachable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write the run journal {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Whether `e` says the state store cannot be reached (rather than that
/// what it holds is wrong).
fn unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        NotConnected
            | TimedOut
            | ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | BrokenPipe
    )
}

impl JournalError {
    /// The store could not be reached: the journals may be fine.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, JournalError::Unreachable { .. })
    }
}

/// A journal by name, read or not.
pub(crate) type Listed = (String, Result<Journal, JournalError>);

/// The journals, `runs/<id>.json` in the state store.
#[derive(Debug, Clone)]
pub(crate) struct JournalStore {
    store: Arc<dyn StateStore>,
}

const DIR: &str = "runs";
/// Where `rollbackd state quarantine` moves a journal: out of every
/// replica's sight, kept for the post-mortem.
const QUARANTINE: &str = "quarantine";

impl JournalStore {
    pub(crate) fn new(store: Arc<dyn StateStore>) -> JournalStore {
        JournalStore { store }
    }

    fn name(id: &str) -> String {
        format!("{DIR}/{id}.json")
    }

    /// Where a run's journal is, for messages.
    pub(crate) fn path(&self, id: &str) -> PathBuf {
        self.store.location(&Self::name(id))
    }

    pub(crate) fn write(&self, journal: &Journal) -> Result<(), JournalError> {
        let path = self.path(&journal.id);
        let bytes = serde_json::to_vec_pretty(journal).map_err(|e| JournalError::Write {
            path: path.clone(),
            cause: std::io::Error::other(e),
        })?;
        self.store
            .write(&Self::name(&journal.id), &bytes)
            .map_err(|source| JournalError::Write {
                path,
                cause: source,
            })
    }

    /// Removes a settled run's journal.
    pub(crate) fn remove(&self, id: &str) -> Result<(), JournalError> {
        match self.store.remove(&Self::name(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Write {
                path: self.path(id),
                cause: source,
            }),
        }
    }

    /// The names in the journals' directory.
    fn names(&self) -> Result<Vec<String>, JournalError> {
        self.store.list(DIR).map_err(|source| {
            let path = self.store.location(DIR);
            match unreachable(&source) {
                true => JournalError::Unreachable {
                    path,
                    cause: source,
                },
                false => JournalError::Dir {
                    path,
                    cause: source,
                },
            }
        })
    }

    /// Every journal left, oldest first. Any that cannot be read is an
    /// error naming it.
    pub(crate) fn unfinished(&self) -> Result<Vec<Journal>, JournalError> {
        let names = self.names()?;
        let mut journals = names
            .iter()
            .filter(|n| n.ends_with(".json"))
            .map(|n| self.read(n))
            .collect::<Result<Vec<_>, _>>()?;
        journals.sort_by(|a, b| a.event.timestamp.cmp(&b.event.timestamp));
        Ok(journals)
    }

    /// Every journal, each read on its own, by name (`runs/<id>.json`):
    /// one that cannot be read does not hide the others.
    pub(crate) fn each(&self) -> Result<Vec<Listed>, JournalError> {
        let names = self.names()?;
        Ok(names
            .into_iter()
            .filter(|n| n.ends_with(".json"))
            .map(|n| {
                let read = self.read(&n);
                (n, read)
            })
            .collect())
    }

    /// Moves journal `id` (`rb-…`, `rb-….json` or `runs/rb-….json`) out of
    /// the way, whole, to `quarantine/<id>-<stamp>.json`: written there
    /// first, then removed here, so nothing is lost if this stops midway.
    /// Returns where it went.
    pub(crate) fn quarantine(&self, id: &str, stamp: &str) -> Result<PathBuf, JournalError> {
        let id = id
            .trim_start_matches("runs/")
            .trim_end_matches(".json")
            .to_string();
        let name = format!("{DIR}/{id}.json");
        let bytes = self
            .store
            .read(&name)
            .map_err(|source| JournalError::Write {
                path: self.store.location(&name),
                cause: source,
            })?;
        let aside = format!("{QUARANTINE}/{id}-{stamp}.json");
        self.store
            .write(&aside, &bytes)
            .map_err(|source| JournalError::Write {
                path: self.store.location(&aside),
                cause: source,
            })?;
        self.store
            .remove(&name)
            .map_err(|source| JournalError::Write {
                path: self.store.location(&name),
                cause: source,
            })?;
        Ok(self.store.location(&aside))
    }

    fn read(&self, name: &str) -> Result<Journal, JournalError> {
        let corrupt = |message: String| JournalError::Corrupt {
            path: self.store.location(name),
            message,
        };
        let bytes = self.store.read(name).map_err(|e| match unreachable(&e) {
            true => JournalError::Unreachable {
                path: self.store.location(name),
                cause: e,
            },
            false => corrupt(e.to_string()),
        })?;
        let journal: Journal =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if journal.version > VERSION {
            return Err(corrupt(format!(
                "it was written by a newer rollbackd (journal version {}, this one reads {VERSION})",
                journal.version
            )));
        }
        Ok(journal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path) -> Arc<dyn StateStore> {
        Arc::new(crate::state::FileStore::new(crate::state::StateDir::new(
            dir,
        )))
    }

    fn journal(id: &str, timestamp: &str) -> Journal {
        Journal {
            version: VERSION,
            id: id.into(),
            pid: 1,
            steps: vec![Mark {
                step: Step::Started,
                at: "2026-01-01T00:00:00Z".into(),
                detail: String::new(),
            }],
            breaker_before: None,
            plan: None,
            known_deployments: vec![],
            request: RequestRecord::default(),
            event: Event {
                id: Some(id.into()),
                timestamp: timestamp.into(),
                ..Event::default()
            },
        }
    }

    #[test]
    fn journals_are_written_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::new(files(dir.path()));
        assert!(
            store.unfinished().unwrap().is_empty(),
            "no directory, no journal"
        );
        store
            .write(&journal("rb-2", "2026-01-01T00:00:02Z"))
            .unwrap();
        store
            .write(&journal("rb-1", "2026-01-01T00:00:01Z"))
            .unwrap();
        std::fs::write(dir.path().join("runs/.rb-3.json.77.tmp"), "{").unwrap();
        let found = store.unfinished().unwrap();
        assert_eq!(
            found.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["rb-1", "rb-2"],
            "oldest first; temporary files ignored"
        );
        assert!(found[0].has(Step::Started) && !found[0].has(Step::BreakerOpened));
        store.remove("rb-1").unwrap();
        store.remove("rb-1").unwrap();
        assert_eq!(store.unfinished().unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_or_newer_journal_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::new(files(dir.path()));
        let path = store.path("rb-1");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"version\": 1, \"id\": \"rb-").unwrap();
        let err = store.unfinished().unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("will not overwrite"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"version\": 1, \"id\": \"rb-"
        );
        let mut newer = journal("rb-1", "2026-01-01T00:00:01Z");
        newer.version = VERSION + 1;
        store.write(&newer).unwrap();
        let err = store.unfinished().unwrap_err().to_string();
        assert!(err.contains("newer rollbackd"), "{err}");
    }

    /// A store that cannot be reached now (PostgreSQL stopped).
    #[derive(Debug)]
    struct Down(Arc<dyn StateStore>, std::sync::atomic::AtomicBool);

    impl Down {
        fn gone(&self) -> std::io::Result<()> {
            match self.1.load(std::sync::atomic::Ordering::SeqCst) {
                true => Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "connection refused",
                )),
                false => Ok(()),
            }
        }
    }

    impl StateStore for Down {
        fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
            self.gone()?;
            self.0.read(name)
        }
        fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.gone()?;
            self.0.write(name, bytes)
        }
        fn remove(&self, name: &str) -> std::io::Result<()> {
            self.0.remove(name)
        }
        fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
            self.gone()?;
            self.0.list(dir)
        }
        fn location(&self, name: &str) -> std::path::PathBuf {
            self.0.location(name)
        }
        fn try_lock(&self) -> std::io::Result<Option<crate::state::StateLock>> {
            self.0.try_lock()
        }
    }

    #[test]
    fn a_store_that_cannot_be_reached_is_not_a_broken_journal() {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(Down(files(dir.path()), Default::default()));
        let store = JournalStore::new(down.clone());
        store
            .write(&journal("rb-1", "2026-01-01T00:00:00Z"))
            .unwrap();
        down.1.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = store.unfinished().unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(
            err.to_string().starts_with("cannot reach the run journals"),
            "{err}"
        );
        down.1.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(store.unfinished().unwrap().len(), 1);
    }
}
