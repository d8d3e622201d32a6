//! When Prometheus scrapes, so a rule group can be evaluated just after new
//! samples land instead of at a random point of the scrape interval.
//!
//! Prometheus evaluates its own rule groups at a fixed phase of their
//! interval, whatever the scrape phase; a sample that lands just after the
//! evaluation waits almost a whole interval. rollbackd reads the scrape
//! timing of the active targets (`/api/v1/targets?state=active`: each one's
//! `lastScrape`, `lastScrapeDuration` and `scrapeInterval`) and starts each
//! group's ticker a little after the targets' scrapes complete
//! (`watch.align_to_scrapes`, on by default). The interval, and so the load
//! on Prometheus, is unchanged; only the phase moves. When the targets'
//! scrapes are spread over the interval, or Prometheus does not say (a
//! remote-read proxy, an older version), the group keeps its own phase.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::prometheus::Prometheus;
use super::SourceError;

/// One active target's last scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScrapeTiming {
    /// When the last scrape began (its samples carry this time).
    pub last_scrape: SystemTime,
    /// How long it took; its samples are in the database after it.
    pub duration: Duration,
    pub interval: Duration,
    /// The target's `job` and `service` labels, when it has them.
    pub job: Option<String>,
    pub service: Option<String>,
}

impl ScrapeTiming {
    /// Whether the target belongs to the service named `name` (its `job`
    /// or `service` label).
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.job.as_deref() == Some(name) || self.service.as_deref() == Some(name)
    }
}

/// Slack after a scrape's end before its samples are read: the commit, and
/// the timer's and the clocks' jitter. (Prometheus's `lastScrapeDuration`
/// covers the scrape, the parse and the append; half of it again is left
/// for a scrape slower than the last one.)
const MARGIN: Duration = Duration::from_millis(10);

/// The scrapes' completion times may spread over at most this part of the
/// interval for one phase to be right for all of them.
const MAX_SPREAD_PARTS: u32 = 4;

/// The time of day (modulo `interval`) just after the scrapes that feed a
/// group evaluated every `interval` complete, or `None` when no such time
/// serves them all: no target is scraped at an interval that divides the
/// group's, or their scrapes are spread over more than a quarter of it.
/// The phase is an offset from the Unix epoch, modulo the scrape interval.
pub(crate) fn phase(targets: &[ScrapeTiming], interval: Duration) -> Option<(Duration, Duration)> {
    let matching: Vec<&ScrapeTiming> = targets
        .iter()
        .filter(|t| {
            !t.interval.is_zero()
                && t.last_scrape > UNIX_EPOCH
                && interval.as_millis().is_multiple_of(t.interval.as_millis())
        })
        .collect();
    // Every matching target must share one scrape interval (the shortest
    // is the period the phase repeats with).
    let period = matching.iter().map(|t| t.interval).min()?;
    if matching.iter().any(|t| t.interval != period) {
        return None;
    }
    let period_ms = period.as_millis() as u64;
    let mut ends: Vec<u64> = matching
        .iter()
        .map(|t| {
            let end = t.last_scrape + t.duration * 3 / 2 + MARGIN;
            let ms = end
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            ms % period_ms
        })
        .collect();
    ends.sort_unstable();
    // On a circle: the phases lie on the arc that follows the widest gap
    // between two neighbours; the phase is that arc's end.
    let n = ends.len();
    let (mut widest, mut after) = (0u64, 0usize);
    for i in 0..n {
        let next = ends[(i + 1) % n] + if i + 1 == n { period_ms } else { 0 };
        let gap = next - ends[i];
        if gap > widest {
            widest = gap;
            after = i;
        }
    }
    let spread = period_ms - widest;
    if n > 1 && spread > period_ms / u64::from(MAX_SPREAD_PARTS) {
        return None;
    }
    Some((Duration::from_millis(ends[after]), period))
}

/// How long to wait from `now` until the next time at `phase` (modulo `period`).
pub(crate) fn delay_until(phase: Duration, period: Duration, now: SystemTime) -> Duration {
    let period_ms = period.as_millis().max(1) as u64;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
        % period_ms;
    let phase_ms = phase.as_millis() as u64 % period_ms;
    Duration::from_millis((phase_ms + period_ms - now_ms) % period_ms)
}

#[derive(Deserialize)]
struct Answer {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "activeTargets", default)]
    active: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(rename = "lastScrape", default)]
    last_scrape: String,
    #[serde(rename = "lastScrapeDuration", default)]
    duration: f64,
    #[serde(rename = "scrapeInterval", default)]
    interval: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// An RFC 3339 time as Go writes it: nanoseconds, and `Z` or an offset.
fn parse_time(text: &str) -> Option<SystemTime> {
    let split = text
        .len()
        .checked_sub(6)
        .filter(|i| text.is_char_boundary(*i))
        .map(|i| text.split_at(i));
    let (local, offset) = match split {
        Some((local, off))
            if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' =>
        {
            let hours: u64 = off[1..3].parse().ok()?;
            let minutes: u64 = off[4..6].parse().ok()?;
            let secs = Duration::from_secs(hours * 3600 + minutes * 60);
            (local, Some((off.starts_with('+'), secs)))
        }
        _ => (text.trim_end_matches('Z'), None),
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    match offset {
        None => Some(t),
        Some((true, secs)) => t.checked_sub(secs),
        Some((false, secs)) => t.checked_add(secs),
    }
}

impl Prometheus {
    /// The active targets' last scrapes (those that were scraped and are up).
    pub(crate) async fn scrape_timings(&self) -> Result<Vec<ScrapeTiming>, SourceError> {
        let url = format!("{}/api/v1/targets?state=active", self.base);
        let (status, body) = self.read(self.client.get(url)).await?;
        if !status.is_success() {
            return Err(SourceError::Decode(format!(
                "/api/v1/targets answered HTTP {status}"
            )));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Decode(format!("/api/v1/targets: {e}")))?;
        Ok(answer
            .data
            .active
            .into_iter()
            .filter(|t| t.health == "up")
            .filter_map(|mut t| {
                Some(ScrapeTiming {
                    last_scrape: parse_time(&t.last_scrape)?,
                    duration: Duration::try_from_secs_f64(t.duration).ok()?,
                    interval: crate::duration::parse(&t.interval).ok()?,
                    job: t.labels.remove("job"),
                    service: t.labels.remove("service"),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        // A whole number of minutes after the epoch, plus `ms`.
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 60 * 60) + Duration::from_millis(ms)
    }

    fn target(start_ms: u64, duration_ms: u64, interval: Duration) -> ScrapeTiming {
        ScrapeTiming {
            last_scrape: at(start_ms),
            duration: Duration::from_millis(duration_ms),
            interval,
            job: None,
            service: None,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_target_sets_the_phase_just_after_its_scrape_ends() {
        // Scraped at .300 for 10 ms: its samples are in by .310; read at .325.
        let (phase, period) = phase(&[target(300, 10, SECOND)], SECOND).unwrap();
        assert_eq!((phase, period), (Duration::from_millis(325), SECOND));
        // A group evaluated every 5 s with 1 s scrapes: any second at .325.
        assert_eq!(
            super::phase(&[target(300, 10, SECOND)], Duration::from_secs(5)),
            Some((Duration::from_millis(325), SECOND))
        );
    }

    #[test]
    fn close_scrapes_take_the_latest_even_across_the_turn_of_the_interval() {
        let targets = [
            target(950, 10, SECOND),
            target(20, 10, SECOND),
            target(990, 5, SECOND),
        ];
        // Ends at .975, .045 and .007 (the next second): the arc from .975
        // to .045 holds them all → .045.
        assert_eq!(
            phase(&targets, SECOND).unwrap().0,
            Duration::from_millis(45)
        );
    }

    #[test]
    fn scrapes_spread_over_the_interval_or_at_other_intervals_give_no_phase() {
        let spread = [target(100, 10, SECOND), target(600, 10, SECOND)];
        assert_eq!(phase(&spread, SECOND), None);
        // 15 s scrapes do not feed a 10 s group at one phase.
        assert_eq!(
            phase(
                &[target(100, 10, Duration::from_secs(15))],
                Duration::from_secs(10)
            ),
            None
        );
        // Two scrape intervals at once: no single phase.
        let mixed = [
            target(100, 10, SECOND),
            target(100, 10, Duration::from_secs(5)),
        ];
        assert_eq!(phase(&mixed, Duration::from_secs(5)), None);
        assert_eq!(phase(&[], SECOND), None);
    }

    #[test]
    fn the_delay_reaches_the_next_time_at_the_phase() {
        let phase = Duration::from_millis(325);
        assert_eq!(
            delay_until(phase, SECOND, at(100)),
            Duration::from_millis(225)
        );
        assert_eq!(
            delay_until(phase, SECOND, at(900)),
            Duration::from_millis(425)
        );
        assert_eq!(delay_until(phase, SECOND, at(325)), Duration::ZERO);
    }

    #[test]
    fn go_times_with_nanoseconds_and_offsets_are_read() {
        let utc = parse_time("2026-11-27T07:30:00.123456789Z").unwrap();
        assert_eq!(parse_time("2026-11-27T08:30:00.123456789+01:00"), Some(utc));
        assert_eq!(parse_time("2026-11-27T02:00:00.123456789-05:30"), Some(utc));
        assert_eq!(parse_time("not a time"), None);
        assert_eq!(parse_time("2026-11-27T07:30:00é+01"), None);
    }
}
