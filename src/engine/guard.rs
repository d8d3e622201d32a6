//! The guards that stand between a firing rule and an automatic rollback.
//! Pure: given the time, the live deployment, the history and the breaker,
//! either allow or say which guard refused and why, in words an operator can
//! act on. Manual rollbacks skip these; only the one-at-a-time lock applies
//! to them.

use std::time::{Duration, SystemTime};

use super::breaker::BreakerState;
use crate::duration::format as fmt;
use crate::engine::config::EngineConfig;
use crate::history::History;
use crate::provider::Deployment;

pub(crate) use crate::record::guard::Guard;

/// A refusal: which guard, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub guard: Guard,
    pub reason: String,
}

/// Everything the guards look at.
pub(crate) struct GuardInput<'a> {
    pub now: SystemTime,
    pub current: &'a Deployment,
    pub history: &'a History,
    pub breaker: BreakerState,
    pub config: &'a EngineConfig,
}

/// Allows an automatic rollback, or says why not.
pub(crate) fn check_automatic(input: &GuardInput) -> Result<(), Blocked> {
    let GuardInput {
        now,
        current,
        history,
        breaker,
        config,
    } = input;
    if *breaker == BreakerState::Open {
        return Err(Blocked {
            guard: Guard::Breaker,
            reason: "the deploy breaker is OPEN after a recent rollback (see `rollbackd breaker status`; \
                     an operator can `rollbackd breaker reset`)"
                .into(),
        });
    }
    if let Some(e) = history.events.iter().find(|e| {
        e.is_rollback() && e.created_deployment_id.as_deref() == Some(current.id.as_str())
    }) {
        return Err(Blocked {
            guard: Guard::Loop,
            reason: format!(
                "the live deployment {} was created by rollback {}; rolling it back again would loop \
                 (roll forward, or run `rollbackd rollback` by hand)",
                current.id,
                e.id.as_deref().unwrap_or(&e.timestamp)
            ),
        });
    }
    let automatic: Vec<_> = history
        .events
        .iter()
        .filter(|e| e.is_automatic_rollback() && e.touched_production())
        .collect();
    if let Some(e) = automatic
        .iter()
        .find(|e| e.from_deployment_id.as_deref() == Some(current.id.as_str()))
    {
        return Err(Blocked {
            guard: Guard::SameDeployment,
            reason: format!(
                "rollbackd already rolled back automatically from deployment {} ({}); it never does so twice",
                current.id,
                e.id.as_deref().unwrap_or(&e.timestamp)
            ),
        });
    }
    let since = |e: &&&crate::history::Event| {
        e.time()
            .map(|t| now.duration_since(t).unwrap_or_default())
            .unwrap_or(Duration::MAX)
    };
    if let Some(last) = automatic.iter().map(|e| since(&e)).min() {
        if last < config.cooldown {
            return Err(Blocked {
                guard: Guard::Cooldown,
                reason: format!(
                    "the last automatic rollback was {} ago, within the cooldown of {}",
                    fmt(Duration::from_secs(last.as_secs())),
                    fmt(config.cooldown)
                ),
            });
        }
    }
    let recent = automatic
        .iter()
        .filter(|e| since(e) < config.auto_window)
        .count();
    if recent as u32 >= config.max_auto_rollbacks {
        return Err(Blocked {
            guard: Guard::RateLimit,
            reason: format!(
                "{recent} automatic rollbacks in the last {} (engine.max_auto_rollbacks is {})",
                fmt(config.auto_window),
                config.max_auto_rollbacks
            ),
        });
    }
    let age = current.age(*now);
    if age > config.max_deploy_age {
        return Err(Blocked {
            guard: Guard::DeployAge,
            reason: format!(
                "the live deployment {} is {} old, older than engine.max_deploy_age ({}), so it cannot \
                 be blamed for this breach",
                current.id,
                fmt(Duration::from_secs(age.as_secs())),
                fmt(config.max_deploy_age)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, EventKind, PhaseName, PhaseRecord, PhaseResult, TriggerKind};

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn current(minutes_ago: u64) -> Deployment {
        Deployment {
            id: "d9".into(),
            status: "SUCCESS".into(),
            created_at: now() - Duration::from_secs(minutes_ago * 60),
            git_sha: None,
            git_branch: None,
            can_rollback: None,
        }
    }

    fn auto_rollback(from: &str, minutes_ago: u64) -> Event {
        Event {
            kind: EventKind::Rollback,
            id: Some(format!("rb-{from}")),
            timestamp: humantime::format_rfc3339(now() - Duration::from_secs(minutes_ago * 60))
                .to_string(),
            from_deployment_id: Some(from.into()),
            trigger: TriggerKind::Rule,
            success: true,
            phases: vec![PhaseRecord {
                name: PhaseName::Application,
                result: PhaseResult::Succeeded,
                duration_seconds: 1.0,
                detail: String::new(),
                reason: None,
                extra: Default::default(),
            }],
            ..Event::default()
        }
    }

    fn check(history: Vec<Event>, breaker: BreakerState, age_minutes: u64) -> Result<(), Blocked> {
        let config = EngineConfig::default();
        let history = History {
            events: history,
            ..History::default()
        };
        let current = current(age_minutes);
        check_automatic(&GuardInput {
            now: now(),
            current: &current,
            history: &history,
            breaker,
            config: &config,
        })
    }

    #[test]
    fn a_fresh_deploy_with_a_clean_history_may_be_rolled_back() {
        assert_eq!(check(vec![], BreakerState::Closed, 10), Ok(()));
        assert_eq!(check(vec![], BreakerState::HalfOpen, 10), Ok(()));
    }

    #[test]
    fn each_guard_refuses_with_its_reason() {
        let cases = [
            (vec![], BreakerState::Open, 10, "breaker"),
            (
                vec![auto_rollback("d9", 120)],
                BreakerState::Closed,
                10,
                "same_deployment",
            ),
            (
                vec![auto_rollback("d7", 5)],
                BreakerState::Closed,
                10,
                "cooldown",
            ),
            (
                vec![
                    auto_rollback("d1", 20),
                    auto_rollback("d2", 35),
                    auto_rollback("d3", 50),
                ],
                BreakerState::Closed,
                10,
                "rate_limit",
            ),
            (vec![], BreakerState::Closed, 600, "deploy_age"),
        ];
        for (history, breaker, age, guard) in cases {
            let blocked = check(history, breaker, age).unwrap_err();
            assert_eq!(blocked.guard.as_str(), guard, "{}", blocked.reason);
            assert!(!blocked.reason.is_empty());
        }
    }

    #[test]
    fn a_deployment_a_rollback_created_is_never_rolled_back_automatically() {
        let mut earlier = auto_rollback("d7", 600);
        earlier.created_deployment_id = Some("d9".into());
        let blocked = check(vec![earlier], BreakerState::Closed, 10).unwrap_err();
        assert_eq!(blocked.guard, Guard::Loop, "{}", blocked.reason);
    }

    #[test]
    fn manual_and_untouched_rollbacks_do_not_count() {
        let mut manual = auto_rollback("d9", 1);
        manual.trigger = TriggerKind::Manual;
        let mut refused = auto_rollback("d9", 1);
        refused.phases.clear();
        assert_eq!(
            check(vec![manual, refused], BreakerState::Closed, 10),
            Ok(())
        );
    }

    #[test]
    fn the_cooldown_ends_exactly_when_it_has_passed() {
        // engine.cooldown is 15m.
        assert_eq!(
            check(vec![auto_rollback("d7", 15)], BreakerState::Closed, 10),
            Ok(())
        );
        let blocked = check(vec![auto_rollback("d7", 14)], BreakerState::Closed, 10).unwrap_err();
        assert_eq!(blocked.guard, Guard::Cooldown);
    }

    #[test]
    fn the_rate_limit_counts_only_rollbacks_inside_its_window() {
        // At most 3 per 1h: one exactly an hour ago is outside the window.
        let history = |oldest: u64| {
            vec![
                auto_rollback("d1", 20),
                auto_rollback("d2", 35),
                auto_rollback("d3", oldest),
            ]
        };
        assert_eq!(check(history(60), BreakerState::Closed, 10), Ok(()));
        let blocked = check(history(59), BreakerState::Closed, 10).unwrap_err();
        assert_eq!(blocked.guard, Guard::RateLimit);
    }

    #[test]
    fn a_deployment_exactly_max_deploy_age_old_can_still_be_blamed() {
        // engine.max_deploy_age is 2h.
        assert_eq!(check(vec![], BreakerState::Closed, 120), Ok(()));
        let blocked = check(vec![], BreakerState::Closed, 121).unwrap_err();
        assert_eq!(blocked.guard, Guard::DeployAge);
    }
}
