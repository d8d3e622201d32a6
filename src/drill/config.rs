//! `[[drills]]`: scheduled rollback drills. Data, its checks, and the
//! schedule's arithmetic (the next run in the drill's time zone); nothing
//! here runs a drill.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

use crate::duration;

/// One drill.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    pub name: String,
    /// A cron expression with seconds (six fields: `0 30 9 * * Mon`).
    pub schedule: String,
    /// An IANA time zone the schedule is read in (`Europe/Paris`).
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub kind: DrillKind,
    /// The whole drill's time; a check still running then fails.
    #[serde(with = "duration::serde_str", default = "ten_minutes")]
    pub timeout: Duration,
    /// For a `staging` drill: the environment it rolls back.
    #[serde(default)]
    pub staging: Option<StagingConfig>,
    /// The least time between two runs the schedule may ask for (default
    /// 1h): each run asks production's health endpoints, takes and
    /// restores a backup and adds to the history. Lower it on a test bench
    /// only.
    #[serde(with = "duration::serde_str", default = "an_hour")]
    pub min_interval: Duration,
}

fn an_hour() -> Duration {
    Duration::from_secs(3600)
}

/// Another environment a `staging` drill rolls back for real, with the
/// real five phases. Everything it needs is given here: nothing falls back
/// to production's settings or environment variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// The staging service's base URL, verified after its rollback.
    pub base_url: String,
    pub provider: crate::provider::config::ProviderConfig,
    /// Its database, backed up as production's would be (its downgrade is
    /// skipped: a fresh staging state records no revisions).
    #[serde(default)]
    pub database: Option<crate::db::config::DatabaseConfig>,
    #[serde(default)]
    pub migrations: Option<crate::db::config::MigrationsConfig>,
}

pub(crate) use crate::history::DrillKind;

fn utc() -> String {
    "UTC".into()
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

/// Seconds required; day of month and day of week both matched when both
/// are given (as tokio-cron-scheduler, which ran drills before, read them).
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
}

/// Why a drill's schedule gives no next run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{zone:?} is not an IANA time zone; write one like \"UTC\" or \"Europe/Paris\"")]
    TimeZone { zone: String },
    #[error("{}", schedule_error(.schedule, .why))]
    NotCron { schedule: String, why: String },
    #[error("{schedule:?} never runs: {why}")]
    NeverRuns { schedule: String, why: String },
}

impl DrillConfig {
    pub fn tz(&self) -> Result<Tz, ScheduleError> {
        self.timezone
            .parse::<Tz>()
            .map_err(|_| ScheduleError::TimeZone {
                zone: self.timezone.clone(),
            })
    }

    /// The first run strictly after `now`.
    pub fn next_run(&self, now: SystemTime) -> Result<SystemTime, ScheduleError> {
        let cron = parser()
            .parse(&self.schedule)
            .map_err(|e| ScheduleError::NotCron {
                schedule: self.schedule.clone(),
                why: e.to_string(),
            })?;
        let tz = self.tz()?;
        let now: DateTime<Utc> = now.into();
        let next = cron
            .find_next_occurrence(&now.with_timezone(&tz), false)
            .map_err(|e| ScheduleError::NeverRuns {
                schedule: self.schedule.clone(),
                why: e.to_string(),
            })?;
        Ok(next.with_timezone(&Utc).into())
    }

    /// The shortest time between two of the schedule's next runs (over
    /// the next 50), from `now`.
    pub fn shortest_interval(&self, now: SystemTime) -> Result<Duration, ScheduleError> {
        let mut at = self.next_run(now)?;
        let mut shortest = Duration::MAX;
        for _ in 0..50 {
            let next = self.next_run(at)?;
            shortest = shortest.min(next.duration_since(at).unwrap_or_default());
            at = next;
        }
        Ok(shortest)
    }

    /// Adds a message per unusable value to `problems`, each naming the
    /// drill; no I/O.
    pub fn validate(&self, index: usize, problems: &mut Vec<String>) {
        let at = format!("drills[{index}] ({:?})", self.name);
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            problems.push(format!(
                "{at}.name: use letters, digits, - and _ (it names the drill in `drill run` and in metrics)"
            ));
        }
        if let Err(e) = parser().parse(&self.schedule) {
            problems.push(format!(
                "{at}.schedule: {}",
                schedule_error(&self.schedule, &e.to_string())
            ));
        } else if let (Ok(_), Err(e)) = (self.tz(), self.next_run(SystemTime::now())) {
            problems.push(format!("{at}.schedule: {e}"));
        } else if let Ok(gap) = self.shortest_interval(SystemTime::now()) {
            if gap < self.min_interval {
                problems.push(format!(
                    "{at}.schedule: {:?} runs every {}; a drill may run at most every {} (min_interval): each run \
                     asks production's health endpoints, takes and restores a backup and adds to the history. \
                     Schedule it less often (hourly, nightly, weekly)",
                    self.schedule,
                    duration::format(gap),
                    duration::format(self.min_interval)
                ));
            }
        }
        if self.min_interval < Duration::from_secs(1) {
            problems.push(format!("{at}.min_interval: at least 1s"));
        }
        if let Err(e) = self.tz() {
            problems.push(format!("{at}.timezone: {e}"));
        }
        if self.timeout < Duration::from_secs(1) {
            problems.push(format!("{at}.timeout: at least 1s"));
        }
        match (self.kind, &self.staging) {
            (DrillKind::Staging, None) => problems.push(format!(
                "{at}: a staging drill needs [drills.staging] with base_url and a provider of its own"
            )),
            (DrillKind::Readiness, Some(_)) => problems.push(format!(
                "{at}.staging: only a kind = \"staging\" drill rolls another environment back"
            )),
            (_, Some(staging)) => staging.validate(&at, problems),
            (_, None) => {}
        }
    }
}

impl StagingConfig {
    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if reqwest::Url::parse(&self.base_url).is_err() {
            problems.push(format!(
                "{at}.staging.base_url: {:?} is not a URL; write it like \"http://staging.internal:8000\"",
                self.base_url
            ));
        }
        let mut own = Vec::new();
        self.provider.validate(&mut own);
        if let Some(db) = &self.database {
            db.validate(&mut own);
        }
        problems.extend(own.into_iter().map(|p| format!("{at}.staging.{p}")));
        // Railway falls back to RAILWAY_* variables, which name production:
        // a staging drill must name its own, or it would roll production back.
        if let crate::provider::config::ProviderConfig::Railway(r) = &self.provider {
            for (key, missing) in [
                ("token", r.token.is_none()),
                ("project_id", r.project_id.is_none()),
                ("service_id", r.service_id.is_none()),
                ("environment_id", r.environment_id.is_none()),
            ] {
                if missing {
                    problems.push(format!(
                        "{at}.staging.provider.{key}: set it here; a staging drill never falls back to RAILWAY_* \
                         variables, which name production"
                    ));
                }
            }
        }
        if self.database.as_ref().is_some_and(|d| d.url.is_none()) {
            problems.push(format!(
                "{at}.staging.database.url: set it here; a staging drill never falls back to DATABASE_URL, which names production"
            ));
        }
        if self.database.is_none() && self.migrations.is_some() {
            problems.push(format!(
                "{at}.staging.migrations: needs [drills.staging.database]"
            ));
        }
    }
}

fn schedule_error(schedule: &str, why: &str) -> String {
    format!(
        "{schedule:?} is not a cron expression with seconds ({why}); write six fields, \
         seconds first, like \"0 30 9 * * Mon\" (09:30:00 every Monday)"
    )
}

/// Checks the drills together: each on its own, and names used once.
pub(crate) fn validate_all(drills: &[DrillConfig], problems: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in drills.iter().enumerate() {
        d.validate(i, problems);
        if !seen.insert(d.name.as_str()) {
            problems.push(format!(
                "drills[{i}] ({:?}).name: another drill has this name",
                d.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(schedule: &str, timezone: &str) -> DrillConfig {
        DrillConfig {
            name: "weekly".into(),
            schedule: schedule.into(),
            timezone: timezone.into(),
            kind: DrillKind::Readiness,
            timeout: ten_minutes(),
            staging: None,
            min_interval: an_hour(),
        }
    }

    #[test]
    fn a_drill_every_second_is_refused_and_an_hourly_one_is_not() {
        let mut problems = Vec::new();
        drill("* * * * * *", "UTC").validate(0, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("runs every 1s; a drill may run at most every 1h (min_interval)"),
            "{}",
            problems[0]
        );
        let mut problems = Vec::new();
        drill("0 0 * * * *", "UTC").validate(0, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
        // A test bench lowers the floor explicitly.
        let mut problems = Vec::new();
        DrillConfig {
            min_interval: Duration::from_secs(1),
            ..drill("*/2 * * * * *", "UTC")
        }
        .validate(0, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_next_run_is_read_in_the_drills_time_zone() {
        // Thursday 2026-11-26 12:00:00 UTC.
        let now = humantime::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
        let next = drill("0 30 9 * * Mon", "Europe/Paris")
            .next_run(now)
            .unwrap();
        // Monday 09:30 in Paris (UTC+1 in winter) is 08:30 UTC.
        assert_eq!(
            humantime::format_rfc3339_seconds(next).to_string(),
            "2026-11-30T08:30:00Z"
        );
        let next = drill("*/5 * * * * *", "UTC").next_run(now).unwrap();
        assert_eq!(next.duration_since(now).unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn a_bad_schedule_or_time_zone_names_the_drill_and_what_to_write() {
        let mut problems = Vec::new();
        validate_all(
            &[
                drill("0 9 * * Mon", "UTC"),
                drill("0 0 9 * * Mon", "Mars/Olympus"),
            ],
            &mut problems,
        );
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "drills[0] (\"weekly\").schedule: \"0 9 * * Mon\" is not a cron expression with seconds"
            ),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("like \"0 30 9 * * Mon\""));
        assert_eq!(
            problems[1],
            "drills[1] (\"weekly\").timezone: \"Mars/Olympus\" is not an IANA time zone; write one like \"UTC\" or \"Europe/Paris\""
        );
        assert_eq!(
            problems[2],
            "drills[1] (\"weekly\").name: another drill has this name"
        );
    }
}
