//! Choosing what to roll back to. Pure: takes the deployment list, the
//! history's verdicts and the time, returns the live deployment and the
//! target, or says why there is none and how to list candidates.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::duration::format as fmt;
use crate::provider::Deployment;

/// The deployment running now and the one to go back to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Selection {
    pub current: Deployment,
    pub target: Deployment,
}

const HOW_TO_LIST: &str = "list candidates with `rollbackd deployments list`";

/// There is nothing to roll back to, in words that say how to find one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NoTarget(pub String);

/// True for a deployment that once ran and can run again: SUCCESS, or
/// REMOVED (Railway marks a deployment REMOVED once a newer one replaces it)
/// unless the platform says it can no longer be rolled back to.
pub(crate) fn is_candidate(d: &Deployment) -> bool {
    d.status.served() && d.can_rollback != Some(false)
}

/// Picks the target.
///
/// - `current`: the newest SUCCESS deployment.
/// - with `requested`: that one, if it is a candidate, not the current one,
///   and within `retention`;
/// - otherwise: the newest candidate older than the current one that no
///   earlier rollback moved away from (`moved_away`).
pub(crate) fn select(
    deployments: &[Deployment],
    requested: Option<&Deployment>,
    moved_away: &BTreeSet<String>,
    now: SystemTime,
    retention: Option<Duration>,
) -> Result<Selection, NoTarget> {
    let current = deployments
        .iter()
        .find(|d| d.is_success())
        .cloned()
        .ok_or_else(|| {
            NoTarget(format!(
                "no deployment is live (none has status SUCCESS); {HOW_TO_LIST}"
            ))
        })?;
    let within_retention = |d: &Deployment| retention.is_none_or(|r| d.age(now) <= r);
    if let Some(target) = requested {
        if target.id == current.id {
            return Err(NoTarget(format!(
                "deployment {} is the one running now; {HOW_TO_LIST}",
                target.id
            )));
        }
        if !is_candidate(target) {
            return Err(NoTarget(format!(
                "deployment {} has status {}{}; only deployments that ran successfully can be rolled back to; {HOW_TO_LIST}",
                target.id,
                target.status,
                if target.can_rollback == Some(false) { " and the platform says it cannot be rolled back to" } else { "" }
            )));
        }
        if !within_retention(target) {
            return Err(NoTarget(format!(
                "deployment {} is {} old, past the provider's retention of {}; {HOW_TO_LIST}",
                target.id,
                fmt(Duration::from_secs(target.age(now).as_secs())),
                fmt(retention.unwrap_or_default())
            )));
        }
        return Ok(Selection {
            current,
            target: target.clone(),
        });
    }
    let target = deployments
        .iter()
        .filter(|d| d.created_at < current.created_at && d.id != current.id)
        .filter(|d| is_candidate(d) && !moved_away.contains(&d.id))
        .find(|d| within_retention(d))
        .cloned()
        .ok_or_else(|| {
            NoTarget(format!(
                "no earlier deployment to roll back to (it must have run successfully, be within the \
                 provider's retention and not be one an earlier rollback moved away from); \
                 pass --deployment-id to choose one; {HOW_TO_LIST}"
            ))
        })?;
    Ok(Selection { current, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, status: &str, minutes_ago: u64) -> Deployment {
        Deployment {
            id: id.into(),
            status: status.into(),
            created_at: now() - Duration::from_secs(minutes_ago * 60),
            git_sha: None,
            git_branch: None,
            can_rollback: None,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn picks_the_newest_earlier_deployment_that_ran() {
        let list = [
            d("d4", "FAILED", 1),
            d("d3", "SUCCESS", 10),
            d("d2", "REMOVED", 60),
            d("d1", "REMOVED", 120),
        ];
        let s = select(&list, None, &BTreeSet::new(), now(), None).unwrap();
        assert_eq!((s.current.id.as_str(), s.target.id.as_str()), ("d3", "d2"));
    }

    #[test]
    fn never_returns_to_a_deployment_a_rollback_moved_away_from() {
        let list = [
            d("d3", "SUCCESS", 10),
            d("d2", "REMOVED", 60),
            d("d1", "REMOVED", 120),
        ];
        let moved = BTreeSet::from(["d2".to_string()]);
        let s = select(&list, None, &moved, now(), None).unwrap();
        assert_eq!(s.target.id, "d1");
    }

    #[test]
    fn refuses_failed_current_and_old_requests_with_a_hint() {
        let list = [
            d("d3", "SUCCESS", 10),
            d("d2", "CRASHED", 60),
            d("old", "REMOVED", 30 * 24 * 60),
        ];
        let retention = Some(Duration::from_secs(14 * 24 * 3600));
        for (req, needle) in [
            (&list[1], "status CRASHED"),
            (&list[0], "running now"),
            (&list[2], "past the provider's retention"),
        ] {
            let e = select(&list, Some(req), &BTreeSet::new(), now(), retention).unwrap_err();
            assert!(
                e.0.contains(needle) && e.0.contains("rollbackd deployments list"),
                "{e}"
            );
        }
        let e = select(&list, None, &BTreeSet::new(), now(), retention).unwrap_err();
        assert!(e.0.contains("no earlier deployment"), "{e}");
    }

    #[test]
    fn only_deployments_older_than_the_live_one_are_candidates() {
        // A newer deployment that was replaced, and one made in the same second
        // as the live one, are not "the previous version".
        let mut same_second = d("d3b", "REMOVED", 10);
        same_second.created_at = d("d3", "SUCCESS", 10).created_at;
        let list = [
            d("d4", "REMOVED", 5),
            d("d3", "SUCCESS", 10),
            same_second,
            d("d2", "REMOVED", 60),
        ];
        let s = select(&list, None, &BTreeSet::new(), now(), None).unwrap();
        assert_eq!(s.target.id, "d2");
    }
}
