//! Per-rule series rendered at scrape time from the watcher's status board.
//!
//! They are rendered here rather than through the `metrics` facade because
//! the facade cannot delete a series: rendering from the live rule set makes
//! a removed rule's series disappear with the rule.

use std::fmt::Write;

use crate::rules::RuleStatus;

/// Appends the per-rule families in the Prometheus text format.
pub(crate) fn render(rules: &[RuleStatus], out: &mut String) {
    family(
        out,
        "rollbackd_rule_evaluations_total",
        "counter",
        "Rule evaluations, by outcome (ok, empty, nan, inf, low_traffic, error, probe_failed, too_large).",
    );
    for r in rules {
        for (outcome, count) in &r.evaluations {
            line(
                out,
                "rollbackd_rule_evaluations_total",
                r,
                &[("outcome", outcome)],
                *count as f64,
            );
        }
    }
    family(
        out,
        "rollbackd_rule_state",
        "gauge",
        "Most severe state over a rule's series: 0 inactive, 1 pending, 2 firing.",
    );
    for r in rules {
        line(out, "rollbackd_rule_state", r, &[], r.state.gauge());
    }
    family(
        out,
        "rollbackd_rule_value",
        "gauge",
        "The value that matters most at the rule's last evaluation (absent without data).",
    );
    for r in rules {
        if let Some(v) = r.value {
            line(out, "rollbackd_rule_value", r, &[], v);
        }
    }
    family(
        out,
        "rollbackd_rule_threshold",
        "gauge",
        "The rule's threshold.",
    );
    for r in rules {
        line(out, "rollbackd_rule_threshold", r, &[], r.threshold);
    }
    family(
        out,
        "rollbackd_rule_firing_events_total",
        "counter",
        "Times a rule series went to firing, by the rule's policy.",
    );
    for r in rules {
        line(
            out,
            "rollbackd_rule_firing_events_total",
            r,
            &[("policy", r.policy.as_str())],
            r.firing_events as f64,
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, r: &RuleStatus, extra: &[(&str, &str)], value: f64) {
    let _ = write!(
        out,
        "{name}{{group=\"{}\",rule=\"{}\"",
        escape(&r.group),
        escape(&r.rule)
    );
    for (k, v) in extra {
        let _ = write!(out, ",{k}=\"{}\"", escape(v));
    }
    let _ = writeln!(out, "}} {}", format_value(value));
}

/// The per-group histograms the recorder keeps after a reload removed
/// their group: their lines are left out of `rendered`, so a removed
/// group's series go with it, as a removed rule's do.
pub(crate) fn drop_removed_groups(
    rendered: String,
    live: &std::collections::BTreeSet<String>,
) -> String {
    const PER_GROUP: [&str; 3] = [
        "rollbackd_rule_evaluation_duration_seconds",
        "rollbackd_group_evaluation_duration_seconds",
        // The detection histograms (engine/detection.rs); `manual` and
        // `alertmanager` are not rule groups and always stay.
        "rollbackd_incident_",
    ];
    const NOT_RULE_GROUPS: [&str; 2] = ["manual", crate::rules::ALERTMANAGER_GROUP];
    let mut out = String::with_capacity(rendered.len());
    for l in rendered.lines() {
        let removed = PER_GROUP.iter().any(|m| l.starts_with(m))
            && group_of(l)
                .is_some_and(|g| !live.contains(&g) && !NOT_RULE_GROUPS.contains(&g.as_str()));
        if !removed {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The value of the `group` label on an exposition line, unescaped.
fn group_of(line: &str) -> Option<String> {
    let start = line.find("group=\"")? + "group=\"".len();
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{AlertState, Policy};
    use std::collections::BTreeMap;

    #[test]
    fn a_removed_groups_histograms_leave_the_exposition() {
        let rendered = "# TYPE rollbackd_group_evaluation_duration_seconds histogram\n\
            rollbackd_group_evaluation_duration_seconds_bucket{group=\"a\",le=\"1\"} 1\n\
            rollbackd_group_evaluation_duration_seconds_bucket{group=\"ab\",le=\"1\"} 1\n\
            rollbackd_rule_evaluation_duration_seconds_count{group=\"ab\"} 1\n\
            rollbackd_incident_firing_to_call_seconds_count{group=\"ab\"} 1\n\
            rollbackd_incident_call_to_healthy_seconds_count{group=\"manual\"} 1\n\
            rollbackd_incident_firing_to_call_seconds_count{group=\"alertmanager\"} 1\n\
            rollbackd_rollbacks_total{result=\"success\"} 0\n";
        let live = std::collections::BTreeSet::from(["a".to_string()]);
        let kept = drop_removed_groups(rendered.to_string(), &live);
        assert!(kept.contains("group=\"a\""), "{kept}");
        assert!(!kept.contains("group=\"ab\""), "{kept}");
        // Operators' and Alertmanager's incidents belong to no rule group.
        assert!(
            kept.contains("group=\"manual\"") && kept.contains("group=\"alertmanager\""),
            "{kept}"
        );
        assert!(
            kept.contains("# TYPE") && kept.contains("rollbackd_rollbacks_total"),
            "{kept}"
        );
    }

    #[test]
    fn renders_escaped_labels_and_skips_missing_values() {
        let status = RuleStatus {
            group: "http".into(),
            rule: "Odd\"Name".into(),
            kind: "query",
            policy: Policy::Auto,
            condition: "> 1".into(),
            threshold: 1.0,
            state: AlertState::Pending,
            value: None,
            outcome: Some("empty"),
            detail: None,
            evaluations: BTreeMap::from([("empty", 3)]),
            firing_events: 0,
            last_evaluation: None,
            active_series: vec![],
        };
        let mut out = String::new();
        render(&[status], &mut out);
        assert!(out.contains(
            "rollbackd_rule_evaluations_total{group=\"http\",rule=\"Odd\\\"Name\",outcome=\"empty\"} 3"
        ));
        assert!(out.contains("rollbackd_rule_state{group=\"http\",rule=\"Odd\\\"Name\"} 1"));
        assert!(!out.contains("rollbackd_rule_value{"));
    }
}
