//! rollbackd's own telemetry: logs (text or JSON, via tracing) and metrics
//! for Grafana. Every metric name ends in `_total` or `_seconds` where it
//! counts or times; labels come from small fixed sets (group and rule names
//! from config, outcome and error kinds from enums), never from error text.

pub(crate) mod events;
pub(crate) mod rule_metrics;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::format::FmtSpan;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber (once; later calls do nothing). Logs go to stderr.
pub fn init_logging(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_span_events(FmtSpan::NONE);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Buckets for durations from a millisecond to a minute.
const SECONDS_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Buckets for an incident's timeline, from a twentieth of a second (the
/// engine's own steps) to a day (a deployment that broke much later).
const INCIDENT_BUCKETS: [f64; 20] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 21600.0, 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global metrics recorder (once per process) and returns the
/// handle that renders it.
/// One emergency backup's copy to the backup store: `ok`, `failed` or
/// `timeout`.
pub fn backup_upload(result: &'static str) {
    metrics::counter!("rollbackd_backup_uploads_total", "result" => result).increment(1);
}

pub fn metrics_handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Prefix("rollbackd_incident_".into()),
                &INCIDENT_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first (a library user's):
        // then that one records and /metrics shows only the per-rule series.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        register_zeroes();
        metrics::gauge!("rollbackd_build_info", "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("BUILD_COMMIT")).set(1.0);
        handle
    })
}

/// The recorder's upkeep (histogram maintenance) every few seconds, for ever.
pub async fn upkeep() {
    let handle = metrics_handle();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Creates the rollback series at zero, so the first rollback is a change
/// that `rate()` and `increase()` see (a series born at 1 looks flat).
fn register_zeroes() {
    for result in ["success", "failure", "dry_run", "interrupted"] {
        for trigger in ["manual", "rule", "alertmanager"] {
            for policy in ["dry_run", "confirm", "auto", "manual"] {
                metrics::counter!("rollbackd_rollbacks_total", "result" => result, "trigger" => trigger, "policy" => policy)
                    .absolute(0);
            }
        }
    }
    metrics::counter!("rollbackd_rollbacks_resumed_total").absolute(0);
    metrics::counter!("rollbackd_incident_joins_total").absolute(0);
    // Rule groups register theirs as they load.
    for group in ["manual", crate::rules::ALERTMANAGER_GROUP] {
        events::incident_group(group);
    }
    for result in ["success", "failure"] {
        let _ = metrics::histogram!("rollbackd_rollback_duration_seconds", "result" => result);
    }
    for phase in [
        "pre_validation",
        "database",
        "application",
        "verification",
        "post_rollback",
    ] {
        for result in ["succeeded", "failed", "skipped"] {
            let _ = metrics::histogram!("rollbackd_rollback_phase_duration_seconds", "phase" => phase, "result" => result);
        }
    }
    for kind in ["single", "combined"] {
        metrics::counter!("rollbackd_prometheus_requests_total", "kind" => kind).absolute(0);
    }
    metrics::counter!("rollbackd_prometheus_combined_fallbacks_total").absolute(0);
    for guard in crate::record::guard::Guard::ALL {
        metrics::counter!("rollbackd_rollbacks_blocked_total", "guard" => guard.as_str())
            .absolute(0);
    }
    for result in crate::record::revert::RevertResult::ALL {
        metrics::counter!("rollbackd_gitops_pull_requests_total", "result" => result.as_str())
            .absolute(0);
    }
    for verdict in [
        crate::record::blame::Verdict::ToBlame,
        crate::record::blame::Verdict::NotToBlame,
        crate::record::blame::Verdict::Inconclusive,
    ] {
        for reason in crate::record::blame::Reason::ALL {
            metrics::counter!("rollbackd_blame_verdicts_total", "verdict" => verdict.as_str(), "reason" => reason.as_str())
                .absolute(0);
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "rollbackd_build_info",
        "rollbackd's version and the commit it was built from; always 1."
    );
    describe_counter!(
        "rollbackd_incident_joins_total",
        "Rules that joined an incident already acted on (within engine.coalesce, or while its rollback ran)."
    );
    describe_counter!(
        "rollbackd_task_failures_total",
        "Tasks of watch that panicked or ended; watch then stops with exit 70."
    );
    describe_counter!(
        "rollbackd_http_connections_refused_total",
        "Connections to rollbackd's server closed unserved: past the limit, or not accepted."
    );
    describe_histogram!(
        "rollbackd_rule_evaluation_duration_seconds",
        Unit::Seconds,
        "Time to get one rule's answer, by group: for a query rule its group's query time (queries are asked together), for a probe its check."
    );
    describe_histogram!(
        "rollbackd_group_evaluation_duration_seconds",
        Unit::Seconds,
        "Time to evaluate every rule of a group once."
    );
    describe_counter!(
        "rollbackd_prometheus_errors_total",
        "Failed Prometheus queries, by kind (connect, timeout, http_status, bad_data, execution, query_timeout, unsupported_result, decode, api_other)."
    );
    describe_counter!(
        "rollbackd_prometheus_requests_total",
        "Query requests sent to Prometheus, by kind (single: one query; combined: several of a group's queries in one)."
    );
    describe_counter!(
        "rollbackd_prometheus_combined_fallbacks_total",
        "Combined requests that did not bring every answer, so their queries were asked again one at a time."
    );
    describe_counter!(
        "rollbackd_rule_reloads_total",
        "Rule reloads, by result (success, failure)."
    );
    describe_gauge!(
        "rollbackd_rules_last_reload_successful",
        "1 when the last rule reload succeeded, 0 when the previous rule set is still running after a failure."
    );
    describe_gauge!("rollbackd_rules_loaded", "Rules currently evaluated.");
    describe_counter!(
        "rollbackd_triggers_total",
        "Firing events received by the rollback side, by policy and what was done."
    );
    describe_counter!(
        "rollbackd_rollbacks_total",
        "Rollbacks by result (success, failure, dry_run, interrupted), trigger (manual, rule, alertmanager) and policy."
    );
    describe_counter!(
        "rollbackd_backup_uploads_total",
        "Emergency backups copied to database.backup_store, by result (ok, failed, timeout): a failed one stays only on the machine that took it."
    );
    describe_counter!(
        "rollbackd_rollbacks_resumed_total",
        "Rollbacks a restarted rollbackd finished from their journal."
    );
    for (name, help) in [
        ("rollbackd_incident_deploy_to_breach_seconds", "Live deployment created to its first breach, by the rule group that started the incident."),
        ("rollbackd_incident_breach_to_firing_seconds", "First breach to firing (a rule's `for`, at least), by rule group."),
        ("rollbackd_incident_firing_to_call_seconds", "Firing to the platform's rollback call (a confirmation's wait included), by rule group."),
        ("rollbackd_incident_call_to_healthy_seconds", "Platform rollback call to the service verified healthy, by rule group (manual for an operator's rollback)."),
        ("rollbackd_incident_deploy_to_healthy_seconds", "Live deployment created to the service verified healthy after its rollback: the time to recovery, by rule group."),
    ] {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_histogram!(
        "rollbackd_rollback_duration_seconds",
        Unit::Seconds,
        "Duration of whole rollbacks, by result."
    );
    describe_histogram!(
        "rollbackd_rollback_phase_duration_seconds",
        Unit::Seconds,
        "Duration of each rollback phase, by phase and result."
    );
    describe_counter!(
        "rollbackd_rollbacks_blocked_total",
        "Rollbacks refused, by guard (breaker, loop, same_deployment, cooldown, rate_limit, deploy_age, in_progress, provider, history, blame)."
    );
    describe_counter!(
        "rollbackd_gitops_pull_requests_total",
        "[gitops] pull requests after a verified rollback, by result (opened, unchanged, conflict, failed, skipped)."
    );
    describe_counter!(
        "rollbackd_blame_verdicts_total",
        "Blame judgements before acting, by verdict (to_blame, not_to_blame, inconclusive) and reason."
    );
    describe_histogram!(
        "rollbackd_blame_duration_seconds",
        Unit::Seconds,
        "Time a blame judgement took, between a rule firing and the decision."
    );
    describe_gauge!(
        "rollbackd_pending_confirmations",
        "Rollbacks waiting for an operator."
    );
    describe_gauge!(
        "rollbackd_breaker_state",
        "Deploy breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_histogram!(
        "rollbackd_health_check_duration_seconds",
        Unit::Seconds,
        "Latency of post-rollback health checks, by health phase."
    );
}
