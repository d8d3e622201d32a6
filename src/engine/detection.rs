//! The seed's "time to detect vs time to rollback". For each rollback: when
//! the live deployment was created, the first rule began to breach and
//! fired, the platform was called and the service was verified healthy.
//! The seconds between them go into the history entry and into one
//! histogram each, by the rule group that started the incident:
//!
//! | histogram | from → to |
//! |---|---|
//! | `rollbackd_incident_deploy_to_breach_seconds` | deployment created → first breach |
//! | `rollbackd_incident_breach_to_firing_seconds` | first breach → firing |
//! | `rollbackd_incident_firing_to_call_seconds` | firing → platform call |
//! | `rollbackd_incident_call_to_healthy_seconds` | platform call → verified healthy |
//! | `rollbackd_incident_deploy_to_healthy_seconds` | deployment created → verified healthy |

use std::time::SystemTime;

use super::outcome::round3;
use super::run::Run;
use crate::clock::millis;
use crate::record::Detection;

/// Seconds from `a` to `b`, when both are known and `b` is not before `a`.
fn between(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<f64> {
    let d = b?.duration_since(a?).ok()?;
    Some(round3(d.as_secs_f64()))
}

/// The run's figures as they stand; `None` before anything is known.
pub(crate) fn figures(run: &Run<'_>) -> Option<Detection> {
    let detected = run.req.detected.as_ref();
    let deployed = run.plan.as_ref().map(|p| p.current.created_at);
    if detected.is_none() && deployed.is_none() {
        return None;
    }
    let breached = detected.map(|d| d.breached_at);
    let fired = detected.map(|d| d.fired_at);
    // A rule that breached before the deployment it blames was created
    // says nothing about how fast that deployment's fault was seen.
    let deploy_to_breach = between(deployed, breached);
    Some(Detection {
        group: detected.map_or_else(|| "manual".to_string(), |d| d.group.clone()),
        deployed_at: deployed.map(millis),
        breached_at: breached.map(millis),
        fired_at: fired.map(millis),
        called_at: run.called_at.map(millis),
        healthy_at: run.healthy_at.map(millis),
        deploy_to_breach_seconds: deploy_to_breach,
        breach_to_firing_seconds: between(breached, fired),
        firing_to_call_seconds: between(fired, run.called_at),
        call_to_healthy_seconds: between(run.called_at, run.healthy_at),
        deploy_to_healthy_seconds: between(deployed, run.healthy_at),
    })
}

/// The detection a journaled run began with (a restarted rollbackd
/// finishing it keeps its figures).
pub(crate) fn detected(event: &crate::history::Event) -> Option<crate::engine::request::Detected> {
    let d = event.detection.as_ref()?;
    Some(crate::engine::request::Detected {
        group: d.group.clone(),
        breached_at: crate::clock::parse(d.breached_at.as_deref()?)?,
        fired_at: crate::clock::parse(d.fired_at.as_deref()?)?,
    })
}

/// When a journaled run asked the platform, if it did.
pub(crate) fn called_at(marks: &[super::journal::Mark]) -> Option<SystemTime> {
    marks
        .iter()
        .find(|m| m.step == super::journal::Step::PlatformCallStarted)
        .and_then(|m| crate::clock::parse(&m.at))
}
