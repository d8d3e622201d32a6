//! Prometheus-style durations (`30s`, `1m30s`, `250ms`, `2h`, `0`): the one
//! duration syntax rollbackd reads, in rule files and config alike, so an
//! operator writes durations the same way in rollbackd and in Prometheus.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a duration: {reason} (write it like \"30s\", \"5m\", \"1h30m\" or \"250ms\")"
)]
pub(crate) struct DurationError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// The longest duration rollbackd accepts anywhere: longer ones are typos,
/// and would overflow the clock arithmetic they feed.
pub(crate) const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration the way Prometheus does: units `y w d h m s ms`, each at
/// most once and largest first; at most [`MAX`] (100y).
pub(crate) fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    let mut last_unit = None::<usize>;
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if start == pos {
            return Err(err("expected a number before each unit"));
        }
        let number: u64 = s[start..pos]
            .parse()
            .map_err(|_| err("the number is too large"))?;
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &s[unit_start..pos];
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(err(if unit.is_empty() {
                "a unit is missing"
            } else {
                "unknown unit (use y, w, d, h, m, s or ms)"
            }));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(err("units must each appear once, largest first"));
        }
        last_unit = Some(index);
        total_ms = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .filter(|&ms| ms <= MAX.as_millis() as u64)
            .ok_or_else(|| err("the duration is too large (at most 100y)"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the same syntax, shortest form (`90s` becomes `1m30s`).
pub(crate) fn format(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, size) in UNITS {
        if ms >= size {
            out.push_str(&format!("{}{}", ms / size, name));
            ms %= size;
        }
    }
    out
}

/// Display adapter so log lines and tables print durations as operators wrote them.
pub(crate) struct Pretty(pub Duration);

impl fmt::Display for Pretty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format(self.0))
    }
}

/// Serde support for config fields (`#[serde(with = "crate::duration::serde_str")]`).
pub(crate) mod serde_str {
    use super::*;
    use serde::{de, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string like \"15s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Serde support for optional durations.
pub(crate) mod opt_serde_str {
    use super::*;
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_units() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("1s500ms").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn refuses_what_prometheus_refuses() {
        for bad in ["", "5", "s", "5x", "1s1m", "1m1m", "-5s", "1.5s", "5 m"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_in_shortest_form() {
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(parse("1h5m").unwrap()), "1h5m");
    }
}
