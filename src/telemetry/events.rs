//! Typed events that write their log line and move their metric together, so
//! the two never disagree.

use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use crate::rules::{FiringEvent, Labels, Transition};

/// A query to Prometheus failed.
pub fn query_failed(group: &str, rule: &str, kind: &'static str, detail: &str) {
    metrics::counter!("rollbackd_prometheus_errors_total", "kind" => kind).increment(1);
    warn!(
        group,
        rule,
        kind,
        error = detail,
        "query failed; the rule holds its state"
    );
}

/// A whole group took `elapsed` to evaluate (the histogram is recorded
/// through the group's own handle).
pub fn group_evaluated(group: &str, elapsed: Duration, interval: Duration) {
    if elapsed > interval {
        warn!(
            group,
            elapsed_ms = elapsed.as_millis() as u64,
            interval_ms = interval.as_millis() as u64,
            "group evaluation took longer than its interval; ticks are being skipped"
        );
    }
}

/// A series changed state.
pub fn state_changed(group: &str, rule: &str, t: &Transition, at: SystemTime) {
    info!(
        group,
        rule,
        at = %humantime::format_rfc3339_millis(at),
        from = t.from.as_str(),
        to = t.to.as_str(),
        value = t.value,
        labels = %format_labels(&t.labels),
        "rule state changed"
    );
}

/// A series fired.
pub fn fired(event: &FiringEvent) {
    warn!(
        group = %event.group,
        rule = %event.rule,
        value = event.value,
        condition = %event.condition,
        policy = event.policy.as_str(),
        since = %humantime::format_rfc3339_seconds(event.since),
        labels = %format_labels(&event.labels),
        "rule fired"
    );
}

/// Rules were (re)loaded.
pub fn rules_loaded(groups: usize, rules: usize, initial: bool) {
    if !initial {
        metrics::counter!("rollbackd_rule_reloads_total", "result" => "success").increment(1);
    }
    metrics::gauge!("rollbackd_rules_last_reload_successful").set(1.0);
    metrics::gauge!("rollbackd_rules_loaded").set(rules as f64);
    info!(groups, rules, initial, "rules loaded");
}

/// A reload failed; the previous rules keep running.
pub fn reload_failed(reason: &str) {
    metrics::counter!("rollbackd_rule_reloads_total", "result" => "failure").increment(1);
    metrics::gauge!("rollbackd_rules_last_reload_successful").set(0.0);
    error!(
        error = reason,
        "error loading rules; the previous rule set keeps running"
    );
}

/// A firing event reached the rollback side, which handles it as `action`
/// (`none` without a provider, else the incident's policy).
pub fn trigger_received(event: &FiringEvent, action: &'static str, why: &str) {
    metrics::counter!("rollbackd_triggers_total", "policy" => event.policy.as_str(), "action" => action)
        .increment(1);
    warn!(
        group = %event.group,
        rule = %event.rule,
        policy = event.policy.as_str(),
        action,
        "rollback trigger: {why}"
    );
}

/// `{a="1", b="2"}`, as Prometheus prints series.
pub fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// A health phase answered during verification: each check's latency.
pub fn health_phase_checked(phase: &str, latencies_ms: impl IntoIterator<Item = u64>) {
    for ms in latencies_ms {
        metrics::histogram!("rollbackd_health_check_duration_seconds", "phase" => phase.to_string())
            .record(ms as f64 / 1000.0);
    }
}

/// A rollback run began.
pub fn rollback_started(id: &str, trigger: &str, policy: &str, reason: &str) {
    warn!(rollback = id, trigger, policy, reason, "rollback started");
}

/// One phase of a rollback ended; a failure is also counted by its kind
/// (`reason`, a small fixed set such as `platform_refused`).
pub fn phase_finished(
    phase: &'static str,
    result: &'static str,
    reason: Option<&'static str>,
    detail: &str,
    elapsed: Duration,
) {
    metrics::histogram!("rollbackd_rollback_phase_duration_seconds", "phase" => phase, "result" => result)
        .record(elapsed.as_secs_f64());
    if let (Some(reason), "failed") = (reason, result) {
        metrics::counter!("rollbackd_rollback_phase_failures_total", "phase" => phase, "reason" => reason)
            .increment(1);
    }
    info!(
        phase,
        result,
        reason = reason.unwrap_or(""),
        elapsed_ms = elapsed.as_millis() as u64,
        detail,
        "rollback phase finished"
    );
}

/// A rollback run ended.
pub fn rollback_finished(
    id: &str,
    trigger: &'static str,
    policy: &'static str,
    success: bool,
    duration: Duration,
    error: Option<&str>,
) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!("rollbackd_rollbacks_total", "result" => result, "trigger" => trigger, "policy" => policy)
        .increment(1);
    metrics::histogram!("rollbackd_rollback_duration_seconds", "result" => result)
        .record(duration.as_secs_f64());
    if success {
        warn!(
            rollback = id,
            duration_s = duration.as_secs_f64(),
            "rollback succeeded and the service is verified healthy"
        );
    } else {
        error!(
            rollback = id,
            duration_s = duration.as_secs_f64(),
            error = error.unwrap_or(""),
            "rollback failed"
        );
    }
}

/// A dry run: the plan was made and logged; nothing changed.
pub fn rollback_planned(trigger: &'static str, plan: &str) {
    metrics::counter!("rollbackd_rollbacks_total", "result" => "dry_run", "trigger" => trigger, "policy" => "dry_run")
        .increment(1);
    warn!(
        trigger,
        "dry run: rollbackd would roll back; nothing was changed\n{plan}"
    );
}

/// A blame judgement was made.
pub fn blame_judged(j: &crate::history::blame::Judgement) {
    metrics::counter!(
        "rollbackd_blame_verdicts_total",
        "verdict" => j.verdict.as_str(),
        "reason" => j.reason.as_str()
    )
    .increment(1);
    metrics::histogram!("rollbackd_blame_duration_seconds").record(j.seconds);
    info!(
        verdict = j.verdict.as_str(),
        reason = j.reason.as_str(),
        deployment = %j.deployment,
        seconds = j.seconds,
        evidence = %serde_json::to_string(j).unwrap_or_default(),
        "blame judged"
    );
}

/// `[gitops]` opened (or did not open) the pull request for a rollback.
pub fn gitops_pull_request(rollback: &str, record: &crate::history::revert::RevertRecord) {
    use crate::history::revert::RevertResult;
    metrics::counter!("rollbackd_gitops_pull_requests_total", "result" => record.result.as_str())
        .increment(1);
    let url = record.url.as_deref().unwrap_or("");
    match record.result {
        RevertResult::Opened | RevertResult::Unchanged => info!(
            rollback,
            result = record.result.as_str(),
            url,
            detail = %record.detail,
            "gitops pull request"
        ),
        _ => warn!(
            rollback,
            result = record.result.as_str(),
            detail = %record.detail,
            "gitops pull request not opened"
        ),
    }
}

/// A rule group's incident histograms, created empty, so its first
/// incident is a change that `rate()` sees (a series born with its first
/// observation looks flat).
pub fn incident_group(group: &str) {
    for name in crate::history::DETECTION_FIGURES {
        let _ = metrics::histogram!(format!("rollbackd_incident_{name}_seconds"), "group" => group.to_string());
    }
}

/// A finished run's detection figures, in the incident histograms.
pub fn incident_observed(d: &crate::history::Detection) {
    let values = [
        d.deploy_to_breach_seconds,
        d.breach_to_firing_seconds,
        d.firing_to_call_seconds,
        d.call_to_healthy_seconds,
        d.deploy_to_healthy_seconds,
    ];
    for (name, value) in crate::history::DETECTION_FIGURES.iter().zip(values) {
        if let Some(v) = value {
            metrics::histogram!(format!("rollbackd_incident_{name}_seconds"), "group" => d.group.clone())
                .record(v);
        }
    }
}

/// A guard refused a rollback.
pub fn rollback_blocked(
    trigger: &'static str,
    policy: &'static str,
    guard: crate::history::guard::Guard,
    reason: &str,
) {
    let guard = guard.as_str();
    metrics::counter!("rollbackd_rollbacks_blocked_total", "guard" => guard).increment(1);
    warn!(
        trigger,
        policy, guard, reason, "rollback refused by a guard"
    );
}
