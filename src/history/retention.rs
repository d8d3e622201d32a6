//! How much history is kept (`[engine.history]`). Every append rewrites
//! the whole document (the seed's format, one JSON file or row), so the
//! document is kept bounded: the newest `keep` entries, drills apart
//! (`keep_drills`: a frequent drill never pushes a rollback out), and none
//! older than `max_age` when it is set. `last_known_good` is a field of its
//! own and is never dropped, nor is the newest successful rollback, whatever
//! the limits say.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Event, EventKind, History};
use crate::duration;

/// `[engine.history]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Entries kept other than drills (rollbacks, refusals, interruptions).
    pub keep: usize,
    /// Drill entries kept.
    pub keep_drills: usize,
    /// Entries older than this are dropped (none by default).
    #[serde(with = "duration::opt_serde_str")]
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: 1000,
            keep_drills: 100,
            max_age: None,
        }
    }
}

impl Retention {
    /// Adds a message per unusable value to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.keep < 10 {
            problems.push(format!(
                "engine.history.keep: {} keeps too little for the guards (cooldown, max_auto_rollbacks) to see; keep at least 10",
                self.keep
            ));
        }
        if self.keep_drills == 0 {
            problems.push(
                "engine.history.keep_drills: 0 would forget every drill, and with it when one last passed; keep at least 1"
                    .into(),
            );
        }
        if self
            .max_age
            .is_some_and(|age| age < Duration::from_secs(86_400))
        {
            problems.push(
                "engine.history.max_age: less than a day would forget what the guards count; set 1d or more"
                    .into(),
            );
        }
    }

    /// Drops what is beyond the limits from `history`, oldest first, as of
    /// `now`. Returns how many entries were dropped.
    pub fn prune(&self, history: &mut History, now: SystemTime) -> usize {
        let newest_good = history
            .events
            .iter()
            .rposition(|e| e.is_rollback() && e.success);
        let is_drill = |e: &Event| e.kind == EventKind::Drill;
        let drills = history.events.iter().filter(|e| is_drill(e)).count();
        let others = history.events.len() - drills;
        let mut drop_drills = drills.saturating_sub(self.keep_drills);
        let mut drop_others = others.saturating_sub(self.keep);
        let too_old = |e: &Event| {
            self.max_age.is_some_and(|age| {
                e.time()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|elapsed| elapsed > age)
            })
        };
        let before = history.events.len();
        let mut index = 0;
        history.events.retain(|e| {
            let i = index;
            index += 1;
            if Some(i) == newest_good {
                return true;
            }
            let over = if is_drill(e) {
                &mut drop_drills
            } else {
                &mut drop_others
            };
            if *over > 0 {
                *over -= 1;
                return false;
            }
            !too_old(e)
        });
        before - history.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, at: &str, success: bool) -> Event {
        Event {
            kind,
            timestamp: at.into(),
            success,
            ..Event::default()
        }
    }

    fn at(day: u32) -> String {
        format!("2026-01-{day:02}T00:00:00Z")
    }

    #[test]
    fn drills_and_rollbacks_are_kept_apart_and_the_last_good_rollback_always() {
        let mut history = History::default();
        // The one successful rollback, oldest of all.
        history
            .events
            .push(event(EventKind::Rollback, &at(1), true));
        for day in 2..=20 {
            history.events.push(event(EventKind::Drill, &at(day), true));
            history
                .events
                .push(event(EventKind::Blocked, &at(day), false));
        }
        let retention = Retention {
            keep: 10,
            keep_drills: 5,
            max_age: None,
        };
        let dropped = retention.prune(&mut history, crate::clock::parse(&at(21)).unwrap());
        let drills: Vec<&str> = history
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Drill)
            .map(|e| e.timestamp.as_str())
            .collect();
        assert_eq!(drills, [at(16), at(17), at(18), at(19), at(20)]);
        let others = history.events.len() - drills.len();
        // The good rollback counts toward `keep`, and stays.
        assert_eq!(others, 10);
        assert_eq!(history.events[0].timestamp, at(1));
        assert!(history.events[0].success);
        assert_eq!(dropped, 39 - history.events.len());
        // Pruning what is already within the limits changes nothing.
        let again = history.clone();
        assert_eq!(
            retention.prune(&mut history, crate::clock::parse(&at(21)).unwrap()),
            0
        );
        assert_eq!(history.events, again.events);
    }

    #[test]
    fn entries_past_max_age_go_and_unreadable_times_stay() {
        let mut history = History::default();
        history
            .events
            .push(event(EventKind::Blocked, &at(1), false));
        history
            .events
            .push(event(EventKind::Blocked, "yesterday", false));
        history.events.push(event(EventKind::Drill, &at(10), true));
        history
            .events
            .push(event(EventKind::Blocked, &at(19), false));
        let retention = Retention {
            max_age: Some(Duration::from_secs(5 * 86_400)),
            ..Retention::default()
        };
        assert_eq!(
            retention.prune(&mut history, crate::clock::parse(&at(21)).unwrap()),
            2
        );
        let left: Vec<&str> = history
            .events
            .iter()
            .map(|e| e.timestamp.as_str())
            .collect();
        assert_eq!(left, ["yesterday", at(19).as_str()]);
    }

    #[test]
    fn limits_too_small_for_the_guards_are_refused_by_name() {
        let mut problems = Vec::new();
        Retention {
            keep: 3,
            keep_drills: 0,
            max_age: Some(Duration::from_secs(60)),
        }
        .validate(&mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("engine.history.keep:"));
        assert!(problems[1].starts_with("engine.history.keep_drills:"));
        assert!(problems[2].starts_with("engine.history.max_age:"));
    }
}
