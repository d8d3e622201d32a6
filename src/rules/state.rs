//! The pure per-rule state machine: which series are pending or firing.
//!
//! It follows Prometheus's alerting rule semantics (`rules/alerting.go`) for
//! `for` and `keep_firing_for`, and adds one thing Prometheus lacks: an
//! evaluation can say "no evidence" ([`Input::Hold`], or a held series), in
//! which case nothing advances and nothing resolves. It never reads a clock
//! and never queries anything: the caller passes the time and the observation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::model::Labels;

/// The state of one series of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Not breaching (or breaching ended and `keep_firing_for` ran out).
    Inactive,
    /// Breaching, but not yet for `for`.
    Pending,
    /// Breaching for at least `for`: the rule has fired.
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }

    /// The value of the `rollbackd_rule_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            AlertState::Inactive => 0.0,
            AlertState::Pending => 1.0,
            AlertState::Firing => 2.0,
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What one evaluation observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The evaluation gave no evidence either way (no data, query error, low
    /// traffic under a `hold` policy): keep every series as it is.
    Hold,
    /// The evaluation succeeded. `breaching` holds the series over the
    /// threshold with their values; `held` the series that gave no evidence
    /// this time. Every other active series has cleared.
    Observed {
        breaching: BTreeMap<Labels, f64>,
        held: BTreeSet<Labels>,
    },
}

impl Input {
    /// Nothing breaches and nothing is held: every active series clears.
    pub fn clear() -> Self {
        Input::Observed {
            breaching: BTreeMap::new(),
            held: BTreeSet::new(),
        }
    }

    /// One label set breaches with `value`.
    pub fn breach(labels: Labels, value: f64) -> Self {
        Input::Observed {
            breaching: BTreeMap::from([(labels, value)]),
            held: BTreeSet::new(),
        }
    }
}

/// A change of one series' state, as produced by [`RuleState::step`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub labels: Labels,
    pub from: AlertState,
    pub to: AlertState,
    /// The last value seen for the series.
    pub value: f64,
    /// When the series first breached in this episode.
    #[serde(with = "rfc3339")]
    pub active_since: SystemTime,
}

#[derive(Debug, Clone, PartialEq)]
struct Active {
    state: AlertState,
    active_at: SystemTime,
    keep_firing_since: Option<SystemTime>,
    value: f64,
}

/// Pending/firing state of every active series of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    for_: Duration,
    keep_firing_for: Duration,
    active: BTreeMap<Labels, Active>,
}

impl RuleState {
    pub fn new(for_: Duration, keep_firing_for: Duration) -> Self {
        RuleState {
            for_,
            keep_firing_for,
            active: BTreeMap::new(),
        }
    }

    /// The most severe state over all series.
    pub fn overall(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// The state of one series.
    pub fn state_of(&self, labels: &Labels) -> AlertState {
        self.active
            .get(labels)
            .map_or(AlertState::Inactive, |a| a.state)
    }

    /// Active (pending or firing) series with their state.
    pub fn series(&self) -> impl Iterator<Item = (&Labels, AlertState)> {
        self.active.iter().map(|(l, a)| (l, a.state))
    }

    /// Advances the state by one evaluation at `now`; returns what changed.
    pub fn step(&mut self, now: SystemTime, input: Input) -> Vec<Transition> {
        let Input::Observed { breaching, held } = input else {
            return Vec::new();
        };
        let before: BTreeMap<Labels, AlertState> = self
            .active
            .iter()
            .map(|(l, a)| (l.clone(), a.state))
            .collect();
        let mut resolved = Vec::new();

        for (labels, value) in &breaching {
            let entry = self.active.entry(labels.clone()).or_insert(Active {
                state: AlertState::Pending,
                active_at: now,
                keep_firing_since: None,
                value: *value,
            });
            entry.value = *value;
            entry.keep_firing_since = None;
        }

        let keep_firing_for = self.keep_firing_for;
        self.active.retain(|labels, alert| {
            if breaching.contains_key(labels) || held.contains(labels) {
                return true;
            }
            if alert.state == AlertState::Firing && !keep_firing_for.is_zero() {
                let since = *alert.keep_firing_since.get_or_insert(now);
                if elapsed(since, now) < keep_firing_for {
                    return true;
                }
            }
            resolved.push((labels.clone(), alert.clone()));
            false
        });

        for (labels, alert) in self.active.iter_mut() {
            if alert.state == AlertState::Pending
                && breaching.contains_key(labels)
                && elapsed(alert.active_at, now) >= self.for_
            {
                alert.state = AlertState::Firing;
            }
        }

        let mut transitions = Vec::new();
        for (labels, alert) in resolved {
            transitions.push(Transition {
                labels,
                from: alert.state,
                to: AlertState::Inactive,
                value: alert.value,
                active_since: alert.active_at,
            });
        }
        for (labels, alert) in &self.active {
            let from = before.get(labels).copied().unwrap_or(AlertState::Inactive);
            if from != alert.state {
                transitions.push(Transition {
                    labels: labels.clone(),
                    from,
                    to: alert.state,
                    value: alert.value,
                    active_since: alert.active_at,
                });
            }
        }
        transitions
    }
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or(Duration::ZERO)
}

/// RFC 3339 timestamps in serialized output.
pub(crate) mod rfc3339 {
    use serde::Serializer;
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;
    use AlertState::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn series() -> Labels {
        Labels::from([("instance".to_string(), "a".to_string())])
    }

    /// A scripted series: `Some(v)` breaches with v, `None` is clear, and
    /// `Hold` steps are given separately. One step every 10 s.
    fn run(state: &mut RuleState, script: &[Option<f64>]) -> Vec<AlertState> {
        script
            .iter()
            .enumerate()
            .map(|(i, sample)| {
                let input = match sample {
                    Some(v) => Input::breach(series(), *v),
                    None => Input::clear(),
                };
                state.step(at(i as u64 * 10), input);
                state.state_of(&series())
            })
            .collect()
    }

    #[test]
    fn pending_then_firing_after_for() {
        let mut s = RuleState::new(Duration::from_secs(20), Duration::ZERO);
        let states = run(&mut s, &[Some(1.0), Some(1.0), Some(1.0), Some(1.0)]);
        assert_eq!(states, [Pending, Pending, Firing, Firing]);
    }

    #[test]
    fn zero_for_fires_on_the_first_breach() {
        let mut s = RuleState::new(Duration::ZERO, Duration::ZERO);
        let t = s.step(at(0), Input::breach(series(), 5.0));
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from, t[0].to), (Inactive, Firing));
    }

    #[test]
    fn a_breach_shorter_than_for_never_fires() {
        let mut s = RuleState::new(Duration::from_secs(30), Duration::ZERO);
        let states = run(&mut s, &[Some(1.0), Some(1.0), None, Some(1.0), None]);
        assert_eq!(states, [Pending, Pending, Inactive, Pending, Inactive]);
    }

    #[test]
    fn keep_firing_for_holds_firing_after_recovery() {
        // Like Prometheus's TestKeepFiringFor: 75 85 70 70 then clear x5.
        let mut s = RuleState::new(Duration::ZERO, Duration::from_secs(30));
        let states = run(
            &mut s,
            &[
                Some(75.0),
                Some(85.0),
                Some(70.0),
                Some(70.0),
                None,
                None,
                None,
                None,
                None,
            ],
        );
        assert_eq!(
            states,
            [Firing, Firing, Firing, Firing, Firing, Firing, Firing, Inactive, Inactive]
        );
    }

    #[test]
    fn a_breach_during_keep_firing_for_restarts_the_window() {
        let mut s = RuleState::new(Duration::ZERO, Duration::from_secs(20));
        let states = run(&mut s, &[Some(1.0), None, Some(1.0), None, None, None]);
        assert_eq!(states, [Firing, Firing, Firing, Firing, Firing, Inactive]);
    }

    #[test]
    fn hold_neither_advances_nor_resolves() {
        let mut s = RuleState::new(Duration::from_secs(20), Duration::ZERO);
        s.step(at(0), Input::breach(series(), 1.0));
        assert!(s.step(at(10), Input::Hold).is_empty());
        assert!(s.step(at(30), Input::Hold).is_empty());
        assert_eq!(s.state_of(&series()), Pending, "no data must never fire");
        let t = s.step(at(40), Input::breach(series(), 1.0));
        assert_eq!((t[0].from, t[0].to), (Pending, Firing));
        s.step(at(50), Input::Hold);
        assert_eq!(
            s.state_of(&series()),
            Firing,
            "no data must not resolve either"
        );
    }

    #[test]
    fn a_held_series_keeps_its_state_while_others_move() {
        let other = Labels::from([("instance".to_string(), "b".to_string())]);
        let mut s = RuleState::new(Duration::ZERO, Duration::ZERO);
        s.step(
            at(0),
            Input::Observed {
                breaching: BTreeMap::from([(series(), 1.0), (other.clone(), 1.0)]),
                held: BTreeSet::new(),
            },
        );
        let t = s.step(
            at(10),
            Input::Observed {
                breaching: BTreeMap::new(),
                held: BTreeSet::from([series()]),
            },
        );
        assert_eq!(s.state_of(&series()), Firing);
        assert_eq!(s.state_of(&other), Inactive);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].labels, other);
    }

    #[test]
    fn transitions_carry_value_and_start_of_episode() {
        let mut s = RuleState::new(Duration::from_secs(10), Duration::ZERO);
        s.step(at(0), Input::breach(series(), 0.3));
        let t = s.step(at(10), Input::breach(series(), 0.4));
        assert_eq!(t[0].to, Firing);
        assert_eq!(t[0].value, 0.4);
        assert_eq!(t[0].active_since, at(0));
        let t = s.step(at(20), Input::clear());
        assert_eq!((t[0].from, t[0].to, t[0].value), (Firing, Inactive, 0.4));
        assert_eq!(s.overall(), Inactive);
    }

    #[test]
    fn states_read_as_prometheus_names_them_and_gauge_in_order() {
        let all = [Inactive, Pending, Firing];
        assert_eq!(
            all.map(AlertState::as_str),
            ["inactive", "pending", "firing"]
        );
        assert_eq!(all.map(AlertState::gauge), [0.0, 1.0, 2.0]);
        assert_eq!(format!("{Firing}/{Pending}"), "firing/pending");
    }

    #[test]
    fn every_active_series_is_listed_with_its_state() {
        let mut state = RuleState::new(Duration::from_secs(20), Duration::ZERO);
        assert_eq!(state.series().count(), 0);
        state.step(at(0), Input::breach(series(), 0.5));
        let listed: Vec<(Labels, AlertState)> =
            state.series().map(|(l, s)| (l.clone(), s)).collect();
        assert_eq!(listed, vec![(series(), Pending)]);
    }

    #[test]
    fn keep_firing_for_keeps_only_firing_series_not_pending_ones() {
        let mut state = RuleState::new(Duration::from_secs(20), Duration::from_secs(30));
        state.step(at(0), Input::breach(series(), 0.5));
        let t = state.step(at(10), Input::clear());
        assert_eq!(
            t.iter().map(|t| (t.from, t.to)).collect::<Vec<_>>(),
            [(Pending, Inactive)]
        );
        assert_eq!(state.overall(), Inactive);
    }
}
