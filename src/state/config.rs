//! `[state]`: where rollbackd keeps its state.
//!
//! ```toml
//! [state]
//! backend = "postgres"        # default "file": engine.state_dir
//! url = "postgres://…"        # default: database.url, then DATABASE_URL
//! schema = "rollbackd"        # default
//! leader_check = "1s"         # how often the leader checks its session and followers try to lead
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The state directory: one instance.
    #[default]
    File,
    /// PostgreSQL, shared by the rollbackd beside every replica.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: Backend,
    pub url: Option<Secret>,
    pub schema: String,
    #[serde(with = "duration::serde_str")]
    pub leader_check: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::File,
            url: None,
            schema: "rollbackd".into(),
            leader_check: Duration::from_secs(1),
        }
    }
}

impl StateConfig {
    pub fn validate(&self, problems: &mut Vec<String>) {
        let s = &self.schema;
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            problems.push(format!(
                "state.schema: {s:?} is not a plain PostgreSQL name (lowercase letters, digits and _, not starting with a digit, at most 63)"
            ));
        }
        // A leader stops acting within 2 x leader_check of losing its
        // session; PostgreSQL frees its lock after about 10 s: the first must
        // come first.
        if self.leader_check < Duration::from_millis(100)
            || self.leader_check > Duration::from_secs(4)
        {
            problems.push(format!(
                "state.leader_check: {} is out of range (100ms to 4s: a leader that lost its session must stop acting before PostgreSQL, after about 10 s, lets another take over)",
                duration::format(self.leader_check)
            ));
        }
        if self.backend == Backend::File && self.url.is_some() {
            problems.push("state.url: set only with backend = \"postgres\"".into());
        }
    }
}
