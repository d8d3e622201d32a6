//! Typed events that write their log line and move their metric together, so
//! the two never disagree.

use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use crate::rules::{FiringEvent, Labels, Transition};

/// A query to Prometheus failed.
pub(crate) fn query_failed(group: &str, rule: &str, kind: &'static str, detail: &str) {
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
pub(crate) fn group_evaluated(group: &str, elapsed: Duration, interval: Duration) {
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
pub(crate) fn state_changed(group: &str, rule: &str, t: &Transition, at: SystemTime) {
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
pub(crate) fn fired(event: &FiringEvent) {
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
pub(crate) fn rules_loaded(groups: usize, rules: usize, initial: bool) {
    if !initial {
        metrics::counter!("rollbackd_rule_reloads_total", "result" => "success").increment(1);
    }
    metrics::gauge!("rollbackd_rules_last_reload_successful").set(1.0);
    metrics::gauge!("rollbackd_rules_loaded").set(rules as f64);
    info!(groups, rules, initial, "rules loaded");
}

/// A reload failed; the previous rules keep running.
pub(crate) fn reload_failed(reason: &str) {
    metrics::counter!("rollbackd_rule_reloads_total", "result" => "failure").increment(1);
    metrics::gauge!("rollbackd_rules_last_reload_successful").set(0.0);
    error!(
        error = reason,
        "error loading rules; the previous rule set keeps running"
    );
}

/// A firing event reached the rollback side, which handles it as `action`
/// (`none` without a provider, else the incident's policy).
pub(crate) fn trigger_received(event: &FiringEvent, action: &'static str, why: &str) {
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
pub(crate) fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// A health phase answered during verification: each check's latency.
pub(crate) fn health_phase_checked(phase: &str, latencies_ms: impl IntoIterator<Item = u64>) {
    for ms in latencies_ms {
        metrics::histogram!("rollbackd_health_check_duration_seconds", "phase" => phase.to_string())
            .record(ms as f64 / 1000.0);
    }
}

/// A rollback run began.
pub(crate) fn rollback_started(id: &str, trigger: &str, policy: &str, reason: &str) {
    warn!(rollback = id, trigger, policy, reason, "rollback started");
}

/// One phase of a rollback ended; a failure is also counted by its kind
/// (`reason`, a small fixed set such as `platform_refused`).
pub(crate) fn phase_finished(
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
pub(crate) fn rollback_finished(
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
pub(crate) fn rollback_planned(trigger: &'static str, plan: &str) {
    metrics::counter!("rollbackd_rollbacks_total", "result" => "dry_run", "trigger" => trigger, "policy" => "dry_run")
        .increment(1);
    warn!(
        trigger,
        "dry run: rollbackd would roll back; nothing was changed\n{plan}"
    );
}

/// A blame judgement was made.
pub(crate) fn blame_judged(j: &crate::record::blame::Judgement) {
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
pub(crate) fn gitops_pull_request(rollback: &str, record: &crate::record::revert::RevertRecord) {
    use crate::record::revert::RevertResult;
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
pub(crate) fn incident_group(group: &str) {
    for name in crate::record::DETECTION_FIGURES {
        let _ = metrics::histogram!(format!("rollbackd_incident_{name}_seconds"), "group" => group.to_string());
    }
}

/// A finished run's detection figures, in the incident histograms.
pub(crate) fn incident_observed(d: &crate::record::Detection) {
    let values = [
        d.deploy_to_breach_seconds,
        d.breach_to_firing_seconds,
        d.firing_to_call_seconds,
        d.call_to_healthy_seconds,
        d.deploy_to_healthy_seconds,
    ];
    for (name, value) in crate::record::DETECTION_FIGURES.iter().zip(values) {
        if let Some(v) = value {
            metrics::histogram!(format!("rollbackd_incident_{name}_seconds"), "group" => d.group.clone())
                .record(v);
        }
    }
}

/// A guard refused a rollback.
pub(crate) fn rollback_blocked(
    trigger: &'static str,
    policy: &'static str,
    guard: crate::record::guard::Guard,
    reason: &str,
) {
    let guard = guard.as_str();
    metrics::counter!("rollbackd_rollbacks_blocked_total", "guard" => guard).increment(1);
    warn!(
        trigger,
        policy, guard, reason, "rollback refused by a guard"
    );
}

/// A rollback rollbackd was stopped during is being finished.
pub(crate) fn rollback_resumed(id: &str, phase: &'static str) {
    metrics::counter!("rollbackd_rollbacks_resumed_total").increment(1);
    warn!(
        rollback = id,
        phase,
        settled = "resumed",
        "resuming a rollback rollbackd was stopped during"
    );
}

/// A rollback stopped before anything reached production was recorded as
/// `interrupted`; `problems` say why its journal stays, when it does.
pub(crate) fn rollback_interrupted(
    id: &str,
    phase: &'static str,
    trigger: &'static str,
    policy: &'static str,
    problems: &[String],
) {
    metrics::counter!("rollbackd_rollbacks_total", "result" => "interrupted", "trigger" => trigger, "policy" => policy)
        .increment(1);
    if problems.is_empty() {
        warn!(
            rollback = id,
            phase,
            settled = "interrupted",
            "recorded an interrupted rollback: nothing had reached production; the breaker is as it was before it"
        );
    } else {
        error!(
            rollback = id,
            problems = %problems.join("; "),
            "cannot settle the interrupted rollback; its journal stays for the next start"
        );
    }
}

/// A firing rule joined the incident already in progress.
pub(crate) fn incident_joined(event: &FiringEvent, policy: &'static str) {
    metrics::counter!("rollbackd_incident_joins_total").increment(1);
    trigger_received(event, policy, "joined the incident in progress");
}

/// The breaker's state (0 closed, 1 half-open, 2 open), as last read.
pub(crate) fn breaker_state(gauge: f64) {
    metrics::gauge!("rollbackd_breaker_state").set(gauge);
}

/// Whether every run journal can be read (no rollback starts otherwise).
pub(crate) fn journals_readable(readable: bool) {
    metrics::gauge!("rollbackd_journals_unreadable").set(f64::from(u8::from(!readable)));
}

/// Whether the backup store can be used.
pub(crate) fn backup_store_usable(usable: bool) {
    metrics::gauge!("rollbackd_backup_store_usable").set(f64::from(u8::from(usable)));
}

/// How many rollbacks wait for a person's confirmation.
pub(crate) fn pending_confirmations(n: usize) {
    metrics::gauge!("rollbackd_pending_confirmations").set(n as f64);
}

/// Whether this replica leads.
pub(crate) fn leader(leads: bool) {
    metrics::gauge!("rollbackd_leader").set(f64::from(u8::from(leads)));
}

/// Whether this replica's last election round reached the shared state.
pub(crate) fn state_reachable(reachable: bool) {
    metrics::gauge!("rollbackd_state_reachable").set(f64::from(u8::from(reachable)));
}

/// Whether another `state.schema` leads this service.
pub(crate) fn leader_conflict(conflict: bool) {
    metrics::gauge!("rollbackd_leader_conflict").set(f64::from(u8::from(conflict)));
}

/// A task of `watch` failed: rollbackd stops so that it is restarted.
pub(crate) fn task_failed(task: &str, why: &str) {
    error!(
        task,
        why = %why,
        "a rollbackd task failed; stopping so that rollbackd is restarted"
    );
    metrics::counter!("rollbackd_task_failures_total", "task" => task.to_string()).increment(1);
}

/// A request to Prometheus's query API (`single` or `combined`).
pub(crate) fn prometheus_request(kind: &'static str) {
    metrics::counter!("rollbackd_prometheus_requests_total", "kind" => kind).increment(1);
}

/// A combined query failed in a way worth asking its queries one by one.
pub(crate) fn combined_query_split(queries: usize, error: &dyn std::fmt::Display) {
    metrics::counter!("rollbackd_prometheus_combined_fallbacks_total").increment(1);
    tracing::debug!(queries, error = %error, "combined query failed; asking one by one");
}

/// The API refused a connection (`limit`, `accept_error`).
pub(crate) fn connection_refused(reason: &'static str) {
    metrics::counter!("rollbackd_http_connections_refused_total", "reason" => reason).increment(1);
}

/// A group's evaluation timers: each rule's query and the whole group.
pub(crate) struct EvaluationTimers {
    pub rule: metrics::Histogram,
    pub group: metrics::Histogram,
}

impl EvaluationTimers {
    pub(crate) fn new(group: &str) -> Self {
        EvaluationTimers {
            rule: metrics::histogram!("rollbackd_rule_evaluation_duration_seconds", "group" => group.to_string()),
            group: metrics::histogram!("rollbackd_group_evaluation_duration_seconds", "group" => group.to_string()),
        }
    }
}

/// How one attempt to deliver a notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    Sent,
    Retried,
    GivenUp,
}

/// One delivery attempt of a notification.
pub(crate) fn notification(
    notifier: &'static str,
    event: &str,
    attempt: u32,
    outcome: Attempt,
    error: Option<&dyn std::fmt::Display>,
) {
    let result = match outcome {
        Attempt::Sent => "sent",
        Attempt::Retried => "retried",
        Attempt::GivenUp => "failed",
    };
    metrics::counter!("rollbackd_notifications_total", "notifier" => notifier, "result" => result)
        .increment(1);
    let error = error.map(ToString::to_string).unwrap_or_default();
    match outcome {
        Attempt::Sent => tracing::debug!(notifier, event, attempt, "notification sent"),
        Attempt::Retried => warn!(
            notifier,
            event,
            attempt,
            error = %error,
            "notification failed; retrying"
        ),
        Attempt::GivenUp => error!(
            notifier,
            event,
            attempt,
            error = %error,
            "notification given up"
        ),
    }
}

/// Notifications still being delivered when rollbackd stopped.
pub(crate) fn notifications_dropped(dropped: usize) {
    metrics::counter!("rollbackd_notifications_total", "notifier" => "any", "result" => "dropped")
        .increment(dropped as u64);
    warn!(
        dropped,
        "notifications still being delivered when rollbackd stopped were dropped (their notifiers kept failing); see the earlier \"notification failed\" lines"
    );
}

/// A drill ended: `rollbackd_drill_runs_total{drill,result}`,
/// `rollbackd_drill_last_result{drill}` (1 passed, 0 failed; a cancelled
/// run leaves it) and, on success, `rollbackd_drill_last_success_timestamp_seconds`.
pub(crate) fn drill_finished(
    drill: &str,
    result: &'static str,
    cancelled: bool,
    passed: bool,
    now: SystemTime,
) {
    metrics::counter!("rollbackd_drill_runs_total", "drill" => drill.to_string(), "result" => result)
        .increment(1);
    if !cancelled {
        drill_last_result(drill, passed);
    }
    if passed {
        drill_last_success(drill, now);
    }
}

/// A scheduled drill did not run (`overrun`, `rollback_running`).
pub(crate) fn drill_skipped(drill: &str, reason: &'static str, why: &str) {
    warn!(drill = %drill, "drill skipped: {why}");
    metrics::counter!("rollbackd_drill_skipped_total", "drill" => drill.to_string(), "reason" => reason)
        .increment(1);
}

/// A drill's series before it ran in this process, from the history: its
/// counters at 0, its last result if any, and its last success (or when
/// rollbackd started, so "no success in 8 days" counts from there).
pub(crate) fn drill_restored(drill: &str, last: Option<bool>, last_success: SystemTime) {
    for result in ["passed", "failed", "cancelled"] {
        metrics::counter!("rollbackd_drill_runs_total", "drill" => drill.to_string(), "result" => result)
            .increment(0);
    }
    for reason in ["overrun", "rollback_running"] {
        metrics::counter!("rollbackd_drill_skipped_total", "drill" => drill.to_string(), "reason" => reason)
            .increment(0);
    }
    if let Some(passed) = last {
        drill_last_result(drill, passed);
    }
    drill_last_success(drill, last_success);
}

fn drill_last_result(drill: &str, passed: bool) {
    metrics::gauge!("rollbackd_drill_last_result", "drill" => drill.to_string()).set(if passed {
        1.0
    } else {
        0.0
    });
}

fn drill_last_success(drill: &str, at: SystemTime) {
    let at = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    metrics::gauge!("rollbackd_drill_last_success_timestamp_seconds", "drill" => drill.to_string())
        .set(at.as_secs_f64());
}
