//! rollbackd's notion of "now", and the one way it writes and reads times.
//!
//! Everything that decides by wall time (guards, confirmation expiry, the
//! breaker) asks a [`Clock`] instead of `SystemTime::now()`, so the same code
//! runs on tokio's paused clock in tests: [`Clock::tokio`] is wall time that
//! advances with tokio's clock. Production uses [`Clock::system`]. Times are
//! written as RFC 3339 in UTC, and read back in the same forms.

use std::time::SystemTime;

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// A wall time and the tokio instant it corresponds to; `None` reads the
    /// system clock.
    anchor: Option<(SystemTime, tokio::time::Instant)>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { anchor: None }
    }

    /// Wall time that moves with tokio's clock, starting from the system's
    /// time now (tests pause tokio's clock and let it jump).
    pub fn tokio() -> Clock {
        Clock {
            anchor: Some((SystemTime::now(), tokio::time::Instant::now())),
        }
    }

    /// Wall time that moves with tokio's clock, starting from `wall` (a
    /// test that needs a given date: a daylight-saving change).
    pub fn tokio_at(wall: SystemTime) -> Clock {
        Clock {
            anchor: Some((wall, tokio::time::Instant::now())),
        }
    }

    pub fn now(&self) -> SystemTime {
        match self.anchor {
            None => SystemTime::now(),
            Some((wall, instant)) => wall + instant.elapsed(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// The last time RFC 3339 can write (9999-12-31T23:59:59Z); later times are
/// written as this one rather than failing.
fn writable(t: SystemTime) -> SystemTime {
    const LAST: u64 = 253_402_300_799;
    t.min(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(LAST))
}

/// `2025-01-15T10:30:00.123Z`: state files and logs.
pub(crate) fn millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(writable(t)).to_string()
}

/// `2025-01-15T10:30:00Z`: the history's timestamps (the seed's format).
pub(crate) fn seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(writable(t)).to_string()
}

/// Reads any RFC 3339 time rollbackd or the seed wrote (with or without
/// fractional seconds; `Z` or no offset).
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text))
        .ok()
}

/// `#[serde(with = "crate::clock::rfc3339")]`: a time written with milliseconds.
pub(crate) mod rfc3339 {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::millis(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "{text:?} is not a UTC RFC 3339 time like \"2025-01-15T10:30:00Z\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_with_paused_time() {
        let clock = Clock::tokio();
        let before = clock.now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let after = clock.now();
        assert_eq!(
            after.duration_since(before).unwrap(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn times_read_back_as_written() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_736_937_000_123);
        assert_eq!(parse(&millis(t)), Some(t));
        assert_eq!(seconds(t), "2025-01-15T10:30:00Z");
        assert_eq!(
            parse("2025-01-15T10:30:00Z"),
            Some(t - Duration::from_millis(123))
        );
        assert_eq!(parse("yesterday"), None);
    }

    /// Regression: a time past the year 9999 made formatting panic.
    #[test]
    fn times_past_the_year_9999_are_written_as_its_last_second() {
        let far = SystemTime::now() + Duration::from_secs(u64::MAX / 4);
        assert_eq!(seconds(far), "9999-12-31T23:59:59Z");
        assert_eq!(millis(far), "9999-12-31T23:59:59.000Z");
    }
}
