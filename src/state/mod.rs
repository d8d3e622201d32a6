//! The state directory (`engine.state_dir`): the one place that knows what
//! rollbackd keeps there and under which names, and how a file there is
//! written (whole, atomically) and locked. Everything else asks for a path
//! here; nothing else spells a file name.
//!
//! ```text
//! state/
//!   history.json    the audit trail (history::HistoryStore)
//!   breaker.json    the deploy breaker (engine::breaker)
//!   revisions.json  each deployment's schema revision (db::revisions)
//!   rollback.lock   held while a rollback runs, by the daemon or the CLI
//!   runs/           one journal per rollback in progress (engine::journal)
//!   backups/        emergency backups, unless database.backup_dir is set
//! ```

pub mod config;
mod file;
pub mod postgres;
mod store;

use std::path::{Path, PathBuf};

pub use file::{write_atomic, StateLock};
pub use store::{Doc, FileStore, StateStore};

/// The state directory's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The documents' names, in any backend.
    pub const HISTORY: &str = "history.json";
    pub const BREAKER: &str = "breaker.json";
    pub const REVISIONS: &str = "revisions.json";
    pub const LOCK: &str = "rollback.lock";

    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn history(&self) -> PathBuf {
        self.root.join(Self::HISTORY)
    }

    pub fn breaker(&self) -> PathBuf {
        self.root.join(Self::BREAKER)
    }

    pub fn revisions(&self) -> PathBuf {
        self.root.join(Self::REVISIONS)
    }

    pub fn rollback_lock(&self) -> PathBuf {
        self.root.join(Self::LOCK)
    }

    /// The journals of rollbacks in progress.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Where backups go when `database.backup_dir` is not set.
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }
}
