//! The deploy circuit breaker, persisted in the state directory so CI (via
//! `GET /api/v1/breaker`), the CLI and a restarted rollbackd all see it.
//!
//! OPEN while a rollback runs, and after one until it settles: a failed
//! rollback keeps it OPEN until an operator resets it; a successful one moves
//! it to HALF_OPEN after `half_open_after`, and rollbackd closes it once no
//! rule has been pending or firing for `close_after`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::state::Doc;

/// What CI and operators see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    /// Deploys may go ahead.
    Closed,
    /// A rollback succeeded a while ago; metrics are being watched.
    HalfOpen,
    /// A rollback is running, just finished, or failed: hold deploys.
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::HalfOpen => "HALF_OPEN",
            BreakerState::Open => "OPEN",
        }
    }

    /// The `rollbackd_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerRecord {
    pub open: bool,
    /// RFC 3339 time of the last change.
    pub since: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_id: Option<String>,
    /// When the rollback that opened it succeeded (starts the HALF_OPEN clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
    #[serde(default)]
    pub failed: bool,
}

impl BreakerRecord {
    /// The state at `now`.
    pub fn state(&self, now: SystemTime, half_open_after: Duration) -> BreakerState {
        if !self.open {
            return BreakerState::Closed;
        }
        match self.settled_at.as_deref().and_then(parse_time) {
            Some(settled)
                if !self.failed
                    && now.duration_since(settled).unwrap_or_default() >= half_open_after =>
            {
                BreakerState::HalfOpen
            }
            _ => BreakerState::Open,
        }
    }
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

pub(crate) fn now_text(now: SystemTime) -> String {
    humantime::format_rfc3339_millis(now).to_string()
}

/// The breaker file.
#[derive(Debug, Clone)]
pub struct BreakerStore {
    doc: Doc,
}

/// The breaker file exists but cannot be read; rollbackd then treats the
/// breaker as OPEN, the safe reading.
#[derive(Debug, thiserror::Error)]
#[error("breaker file {}: {message} (fix or remove it; until then the breaker counts as OPEN)", path.display())]
pub struct BreakerError {
    pub path: PathBuf,
    pub message: String,
}

impl BreakerStore {
    pub fn new(doc: Doc) -> Self {
        BreakerStore { doc }
    }

    /// Where it is (a path, or the table and key), for messages.
    pub fn path(&self) -> PathBuf {
        self.doc.path()
    }

    /// The record; a missing file is a closed breaker.
    pub fn load(&self) -> Result<BreakerRecord, BreakerError> {
        match self.doc.read() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BreakerRecord::default()),
            Err(e) => Err(BreakerError {
                path: self.path(),
                message: e.to_string(),
            }),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BreakerError {
                path: self.path(),
                message: e.to_string(),
            }),
        }
    }

    /// The state at `now`, OPEN when the file cannot be read.
    pub fn state(&self, now: SystemTime, half_open_after: Duration) -> BreakerState {
        self.load()
            .map(|r| r.state(now, half_open_after))
            .unwrap_or(BreakerState::Open)
    }

    pub fn save(&self, record: &BreakerRecord) -> Result<(), BreakerError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| BreakerError {
            path: self.path(),
            message: e.to_string(),
        })?;
        self.doc.write(&bytes).map_err(|e| BreakerError {
            path: self.path(),
            message: e.to_string(),
        })
    }

    pub fn open(
        &self,
        now: SystemTime,
        rollback_id: &str,
        reason: &str,
    ) -> Result<(), BreakerError> {
        self.save(&BreakerRecord {
            open: true,
            since: now_text(now),
            reason: reason.to_string(),
            rollback_id: Some(rollback_id.to_string()),
            settled_at: None,
            failed: false,
        })
    }

    /// The rollback that opened the breaker ended.
    pub fn settle(&self, now: SystemTime, success: bool) -> Result<(), BreakerError> {
        let mut record = self.load()?;
        record.settled_at = Some(now_text(now));
        record.failed = !success;
        let id = record.rollback_id.clone().unwrap_or_default();
        if success {
            record.reason =
                format!("rollback {id} succeeded; watching the rules before deploys resume");
        } else {
            record.reason = format!(
                "{}; the rollback failed: check the service, then `rollbackd breaker reset`",
                record.reason
            );
        }
        self.save(&record)
    }

    pub fn close(&self, now: SystemTime, reason: &str) -> Result<(), BreakerError> {
        self.save(&BreakerRecord {
            open: false,
            since: now_text(now),
            reason: reason.to_string(),
            ..BreakerRecord::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_then_half_open_after_a_successful_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let store = BreakerStore::new(Doc::file(dir.path().join("breaker.json")));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let five = Duration::from_secs(300);
        assert_eq!(store.state(t0, five), BreakerState::Closed);
        store.open(t0, "rb-1", "rollback rb-1").unwrap();
        assert_eq!(store.state(t0, five), BreakerState::Open);
        store.settle(t0 + Duration::from_secs(60), true).unwrap();
        assert_eq!(
            store.state(t0 + Duration::from_secs(200), five),
            BreakerState::Open
        );
        assert_eq!(
            store.state(t0 + Duration::from_secs(361), five),
            BreakerState::HalfOpen
        );
        store
            .close(t0 + Duration::from_secs(700), "stable")
            .unwrap();
        assert_eq!(
            store.state(t0 + Duration::from_secs(700), five),
            BreakerState::Closed
        );
    }

    #[test]
    fn a_failed_rollback_keeps_it_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = BreakerStore::new(Doc::file(dir.path().join("breaker.json")));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        store.open(t0, "rb-1", "rollback rb-1").unwrap();
        store.settle(t0, false).unwrap();
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(
            store.state(later, Duration::from_secs(300)),
            BreakerState::Open
        );
        assert!(store.load().unwrap().reason.contains("breaker reset"));
    }

    #[test]
    fn an_unreadable_file_counts_as_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = BreakerStore::new(Doc::file(dir.path().join("breaker.json")));
        std::fs::write(store.path(), "not json").unwrap();
        assert_eq!(
            store.state(SystemTime::now(), Duration::ZERO),
            BreakerState::Open
        );
        assert!(store
            .load()
            .unwrap_err()
            .to_string()
            .contains("counts as OPEN"));
    }

    #[test]
    fn states_read_as_ci_expects_and_gauge_in_order() {
        let all = [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            BreakerState::Open,
        ];
        assert_eq!(
            all.map(BreakerState::as_str),
            ["CLOSED", "HALF_OPEN", "OPEN"]
        );
        assert_eq!(all.map(BreakerState::gauge), [0.0, 1.0, 2.0]);
    }

    #[test]
    fn a_breaker_file_that_cannot_be_read_counts_as_open() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading fails, not "missing".
        let store = BreakerStore::new(Doc::file(dir.path().to_path_buf()));
        assert!(store.load().is_err());
        assert_eq!(
            store.state(SystemTime::now(), Duration::ZERO),
            BreakerState::Open
        );
    }

    #[test]
    fn closing_says_when() {
        let dir = tempfile::tempdir().unwrap();
        let store = BreakerStore::new(Doc::file(dir.path().join("breaker.json")));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        store.open(t0, "rb-1", "rollback rb-1").unwrap();
        store.close(t0 + Duration::from_secs(60), "stable").unwrap();
        let record = store.load().unwrap();
        assert!(!record.open);
        assert_eq!(
            crate::clock::parse(&record.since),
            Some(t0 + Duration::from_secs(60))
        );
    }
}
