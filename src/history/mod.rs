//! The audit trail: every rollback rollbackd ran, and every one its guards
//! refused, in the seed scripts' JSON format (`events` + `last_known_good`),
//! extended with rules, values, policy and per-phase durations.
//!
//! It must never lose data: writes are atomic, fields it does not know are
//! kept as they were, and a file it cannot parse is reported and never
//! overwritten.

use std::path::PathBuf;

use crate::record::{blame, revert, Detection};
use crate::state::Doc;

mod retention;
pub use retention::Retention;

use serde::{Deserialize, Serialize};

/// The whole history file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<LastKnownGood>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One entry. The seed wrote `type`, `timestamp`, `target_deployment_id`,
/// `git_sha`, `git_branch`, `trigger`, `reason`, `duration_seconds` and
/// `success`; the rest is rollbackd's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_deployment_id: Option<String>,
    /// The deployment that was live before, the one rolled back from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_deployment_id: Option<String>,
    /// The deployment the rollback created on the platform (the redeploy of
    /// the target), so a later incident never rolls back rollbackd's own work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    #[serde(default)]
    pub trigger: TriggerKind,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub duration_seconds: f64,
    #[serde(default)]
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleTrigger>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How fast the incident was detected and recovered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
    /// Whether the live deployment was judged to blame, and the evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<blame::Judgement>,
    /// The pull request `[gitops]` opened after a verified rollback, or
    /// why none was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<revert::RevertRecord>,
    /// A drill's checks (`type: drill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRecord>,
    /// The emergency backup pre-validation took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::db::backup::Backup>,
    /// Why there is no backup, or no copy of it off this machine, when
    /// neither was required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_warning: Option<String>,
    /// A restarted rollbackd finished the run, from this phase on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at_phase: Option<String>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What a drill checked: each check in order, with its result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    pub name: String,
    pub kind: DrillKind,
    pub checks: Vec<DrillCheck>,
}

/// What a drill does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillKind {
    /// Checks every part of the rollback path without changing production.
    #[default]
    Readiness,
    /// A full rollback of another environment (`[drills.staging]`).
    Staging,
}

impl DrillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Readiness => "readiness",
            DrillKind::Staging => "staging",
        }
    }
}

/// How a drill's check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    #[default]
    Passed,
    Failed,
    /// Nothing to check (no database configured, say).
    Skipped,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Passed => "passed",
            CheckResult::Failed => "failed",
            CheckResult::Skipped => "skipped",
        }
    }
}

/// One check of a drill.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillCheck {
    pub name: String,
    pub result: CheckResult,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A rule that caused a rollback, with what it saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleTrigger {
    pub group: String,
    pub rule: String,
    pub value: Option<f64>,
    pub condition: String,
}

/// One phase of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseRecord {
    pub name: PhaseName,
    pub result: PhaseResult,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Why it failed or was skipped, as a small fixed label
    /// (`platform_refused`, `skip_db`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LastKnownGood {
    pub deployment_id: String,
    pub timestamp: String,
}

/// Defines an enum written as one of a fixed set of strings, that keeps any
/// other string it reads (a file written by a newer rollbackd, or by hand) as
/// `Other` and writes it back unchanged: the history never loses a value.
macro_rules! recorded_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value this version does not know, kept as it was.
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(text) => text,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match text.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(text),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                match value {
                    $name::Other(text) => text,
                    known => known.as_str().to_string(),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, so tables can give it a width.
                f.pad(self.as_str())
            }
        }
    };
}

recorded_enum! {
    /// What an entry records (`type`).
    EventKind {
        /// A rollback ran (whatever its result).
        Rollback = "rollback",
        /// The guards refused a rollback; nothing was changed.
        Blocked = "blocked",
        /// rollbackd stopped (killed, or SIGTERM) during a rollback before
        /// anything reached production; settled when it started again. Not
        /// counted as a rollback by the guards.
        Interrupted = "interrupted",
        /// A rollback drill (`drill`): the rollback path checked, production
        /// unchanged. Never counted as a rollback.
        Drill = "drill",
    }
}

recorded_enum! {
    /// What started a rollback (`trigger`).
    TriggerKind {
        /// An operator, from the CLI or the API.
        Manual = "manual",
        /// rollbackd's own rules.
        Rule = "rule",
        /// Alerts delivered by Alertmanager.
        Alertmanager = "alertmanager",
    }
}

recorded_enum! {
    /// How a phase ended (`result`).
    PhaseResult {
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
    }
}

recorded_enum! {
    /// Which phase a record is about (`name`).
    PhaseName {
        PreValidation = "pre_validation",
        Database = "database",
        Application = "application",
        Verification = "verification",
        PostRollback = "post_rollback",
    }
}

// Written out: the variants come from a macro, which cannot mark one `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for EventKind {
    fn default() -> Self {
        EventKind::Rollback
    }
}

/// A missing `trigger` (hand-written files) counts as automatic, as before.
impl Default for TriggerKind {
    fn default() -> Self {
        TriggerKind::Other(String::new())
    }
}

impl Event {
    pub fn is_rollback(&self) -> bool {
        self.kind == EventKind::Rollback
    }

    /// A successful or failed rollback that rollbackd started on its own.
    pub fn is_automatic_rollback(&self) -> bool {
        self.is_rollback() && self.trigger != TriggerKind::Manual
    }

    /// The run reached the platform: its application phase ran (whatever
    /// its result). Guards count only these; a run refused before touching
    /// anything does not use up a rollback.
    pub fn touched_production(&self) -> bool {
        self.phases
            .iter()
            .any(|p| p.name == PhaseName::Application && p.result != PhaseResult::Skipped)
    }

    pub fn time(&self) -> Option<std::time::SystemTime> {
        crate::clock::parse(&self.timestamp)
    }
}

/// Why the history file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read history file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "history file {} is not valid: {message}. rollbackd will not overwrite it: \
         fix it, or move it aside to start a new one",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write history file {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// The history file on disk.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    doc: Doc,
    retention: Retention,
}

impl HistoryStore {
    /// The history in `doc`, kept to the default [`Retention`].
    pub fn new(doc: Doc) -> Self {
        HistoryStore {
            doc,
            retention: Retention::default(),
        }
    }

    /// Kept to `retention` instead (`[engine.history]`).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Where it is (a path, or the table and key), for messages.
    pub fn path(&self) -> PathBuf {
        self.doc.path()
    }

    /// Reads the file; a missing file is an empty history.
    pub fn load(&self) -> Result<History, HistoryError> {
        let text = match self.doc.read().and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
            Err(source) => {
                return Err(HistoryError::Read {
                    path: self.path(),
                    cause: source,
                })
            }
        };
        if text.trim().is_empty() {
            return Err(HistoryError::Corrupt {
                path: self.path(),
                message: "the file is empty".into(),
            });
        }
        serde_json::from_str(&text).map_err(|e| HistoryError::Corrupt {
            path: self.path(),
            message: e.to_string(),
        })
    }

    /// Adds `event` (and, when given, a new last-known-good deployment).
    /// Callers hold the rollback lock, so read-modify-write cannot race.
    pub fn append(
        &self,
        event: Event,
        last_known_good: Option<LastKnownGood>,
    ) -> Result<(), HistoryError> {
        let mut history = self.load()?;
        // As of the new entry's own time: the same entries go whatever
        // clock the caller runs on.
        let now = event.time().unwrap_or_else(std::time::SystemTime::now);
        history.events.push(event);
        if last_known_good.is_some() {
            history.last_known_good = last_known_good;
        }
        let dropped = self.retention.prune(&mut history, now);
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "history entries past [engine.history]'s limits dropped"
            );
        }
        self.save(&history)
    }

    /// Writes the whole history (atomically, as every state document).
    fn save(&self, history: &History) -> Result<(), HistoryError> {
        let bytes = serde_json::to_vec_pretty(history).map_err(|e| HistoryError::Write {
            path: self.path(),
            cause: std::io::Error::other(e),
        })?;
        self.doc
            .write(&bytes)
            .map_err(|source| HistoryError::Write {
                path: self.path(),
                cause: source,
            })
    }

    /// Adds `rule` to the rules of the recorded run `id`, when it is there
    /// and lacks it: a rule that joined an incident after its run was
    /// recorded. Whether the entry was found.
    pub fn add_rule(&self, id: &str, rule: &RuleTrigger) -> Result<bool, HistoryError> {
        let mut history = self.load()?;
        let Some(event) = history
            .events
            .iter_mut()
            .rev()
            .find(|e| e.id.as_deref() == Some(id))
        else {
            return Ok(false);
        };
        if event
            .rules
            .iter()
            .any(|r| r.group == rule.group && r.rule == rule.rule)
        {
            return Ok(true);
        }
        event.rules.push(rule.clone());
        self.save(&history)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"events":[{"type":"rollback","timestamp":"2025-01-15T10:30:00Z","target_deployment_id":"abc123","git_sha":"1a2b3c4","git_branch":"main","trigger":"manual","reason":"bad deploy","duration_seconds":285.3,"success":true,"operator":"alice"}],"last_known_good":{"deployment_id":"abc123","timestamp":"2025-01-15T10:35:00Z"},"schema":"seed-v1"}"#;

    #[test]
    fn reads_the_seed_format_and_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::new(crate::state::Doc::file(dir.path().join("history.json")));
        std::fs::write(store.path(), SEED).unwrap();
        let h = store.load().unwrap();
        assert_eq!(h.events[0].target_deployment_id.as_deref(), Some("abc123"));
        assert_eq!(h.events[0].duration_seconds, 285.3);
        store
            .append(
                Event {
                    kind: EventKind::Rollback,
                    timestamp: "2025-01-16T00:00:00Z".into(),
                    trigger: TriggerKind::Rule,
                    ..Event::default()
                },
                None,
            )
            .unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"operator\": \"alice\""), "{text}");
        assert!(text.contains("\"schema\": \"seed-v1\""), "{text}");
        let h = store.load().unwrap();
        assert_eq!(h.events.len(), 2);
        assert_eq!(h.last_known_good.unwrap().deployment_id, "abc123");
    }

    #[test]
    fn a_corrupt_file_is_reported_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::new(crate::state::Doc::file(dir.path().join("history.json")));
        std::fs::write(store.path(), "{\"events\": [").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(
            e.contains("history.json is not valid") && e.contains("will not overwrite"),
            "{e}"
        );
        assert!(store.append(Event::default(), None).is_err());
        assert_eq!(
            std::fs::read_to_string(store.path()).unwrap(),
            "{\"events\": ["
        );
    }

    #[test]
    fn values_this_version_does_not_know_are_kept_as_they_were() {
        let text = r#"{"events":[{"type":"canary","timestamp":"2025-01-15T10:30:00Z","trigger":"schedule","reason":"","duration_seconds":0.0,"success":false,"phases":[{"name":"resume","result":"unknown","duration_seconds":1.0,"journal":"j-1"}]}]}"#;
        let h: History = serde_json::from_str(text).unwrap();
        let e = &h.events[0];
        assert_eq!(e.kind, EventKind::Other("canary".into()));
        assert!(!e.is_rollback());
        assert_eq!(e.trigger, TriggerKind::Other("schedule".into()));
        assert_eq!(e.phases[0].name, PhaseName::Other("resume".into()));
        let back: serde_json::Value = serde_json::to_value(&h).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn known_values_are_written_as_the_seed_wrote_them() {
        let e = Event {
            kind: EventKind::Blocked,
            trigger: TriggerKind::Manual,
            timestamp: "2025-01-15T10:30:00Z".into(),
            ..Event::default()
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "blocked");
        assert_eq!(v["trigger"], "manual");
    }
}
