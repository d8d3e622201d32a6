//! A string that never shows up in logs or `Debug` output: API tokens,
//! passwords, webhook URLs and keys.
//!
//! A leaf: it depends on nothing else in rollbackd, so every subsystem's
//! configuration can hold one. It must never implement `Display` or
//! `Serialize`, so a secret cannot slip into a log line or an API answer; the
//! only way to the value is [`Secret::expose`], at the point of use.

use std::fmt;

use serde::Deserialize;

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
