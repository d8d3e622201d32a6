//! Tests of `load`.

use super::*;

fn vars() -> Variables {
    [("service", "web")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_text(text: &str) -> Result<RuleSet, Vec<RuleError>> {
    let mut set = RuleSet::default();
    let mut errors = Vec::new();
    parse_file(
        Path::new("rules/test.yml"),
        text,
        &vars(),
        Duration::from_secs(15),
        &mut set,
        &mut errors,
    );
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

#[test]
fn loads_a_query_rule_with_defaults_and_templates() {
    let set = load_text(
        r#"
groups:
  - name: http
    rules:
      - name: HighErrorRate
        expr: sum(rate(errors_total{service="{{service}}"}[1m]))
        above: 0.5
        for: 1m
"#,
    )
    .unwrap();
    let group = &set.groups[0];
    assert_eq!(group.interval, Duration::from_secs(15));
    let rule = &group.rules[0];
    assert_eq!(rule.for_, Duration::from_secs(60));
    assert_eq!(rule.policy, Policy::DryRun);
    let RuleKind::Query(q) = &rule.kind else {
        panic!("expected a query rule")
    };
    assert_eq!(q.expr, r#"sum(rate(errors_total{service="web"}[1m]))"#);
    assert_eq!(q.on_no_data, NoDataPolicy::Hold);
    assert_eq!(q.on_error, ErrorPolicy::Hold);
}

#[test]
fn reports_every_problem_with_group_and_rule() {
    let errors = load_text(
        r#"
groups:
  - name: http
    interval: 10x
    rules:
      - name: NoThreshold
        expr: up
      - name: BadPromql
        expr: sum(rate(x[1m])
        above: 1
      - name: Typo
        expr: up
        above: 1
        treshold: 2
      - name: Filtering
        expr: up > 1
        above: 1
      - name: Matrix
        expr: up[5m]
        above: 1
      - name: UnknownVar
        expr: up{team="{{team}}"}
        above: 1
      - name: BadPolicy
        expr: up
        above: 1
        policy: yolo
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let find = |rule: &str, needle: &str| {
        assert!(
            text.iter()
                .any(|t| t.contains(&format!("rule {rule:?}")) && t.contains(needle)),
            "no error for {rule} containing {needle:?} in {text:#?}"
        )
    };
    assert!(text
        .iter()
        .any(|t| t.contains("group \"http\"") && t.contains("interval")));
    find("NoThreshold", "needs a threshold");
    find("BadPromql", "invalid PromQL");
    find("Typo", "unknown field `treshold`");
    find("Filtering", "comparison that filters");
    find("Matrix", "instant vector");
    find("UnknownVar", "{{team}}");
    find("BadPolicy", "unknown variant `yolo`");
    assert!(text.iter().all(|t| t.starts_with("rules/test.yml")));
}

#[test]
fn probe_rules_refuse_query_fields() {
    let errors = load_text(
        r#"
groups:
  - name: health
    rules:
      - name: Health
        probe: { url: "http://127.0.0.1:1/health" }
        above: 3
"#,
    )
    .unwrap_err();
    assert!(errors[0]
        .message
        .contains("`above` does not apply to a probe rule"));
}

#[test]
fn probe_defaults_to_three_failures() {
    let set = load_text(
        r#"
groups:
  - name: health
    rules:
      - name: Health
        probe: { url: "http://127.0.0.1:1/health" }
"#,
    )
    .unwrap();
    let RuleKind::Probe(p) = &set.groups[0].rules[0].kind else {
        panic!("expected a probe")
    };
    assert_eq!(p.failures, 3);
    assert_eq!(p.timeout, Duration::from_secs(5));
}

#[test]
fn probe_rules_read_the_body_like_verification_does() {
    let set = load_text(
        r#"
groups:
  - name: health
    rules:
      - name: Dependencies
        probe:
          url: "http://127.0.0.1:1/health/external-services"
          expect_status: [200]
          body: { status: /status, healthy: [ok, degraded], components: /services }
"#,
    )
    .unwrap();
    let RuleKind::Probe(p) = &set.groups[0].rules[0].kind else {
        panic!("expected a probe")
    };
    assert_eq!(p.expect.status, [200]);
    let body = p.expect.body.as_ref().unwrap();
    assert_eq!(body.healthy, ["ok", "degraded"]);
    assert_eq!(body.components.as_deref(), Some("/services"));

    let errors = load_text(
        r#"
groups:
  - name: health
    rules:
      - name: Dependencies
        probe: { url: "http://127.0.0.1:1/h", body: { status: status } }
"#,
    )
    .unwrap_err();
    assert!(
        errors[0]
            .message
            .contains("probe.body.status: \"status\" is not a JSON Pointer"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].to_string().contains("Dependencies"),
        "{}",
        errors[0]
    );
}

#[test]
fn yaml_syntax_errors_carry_a_position() {
    let errors = load_text("groups:\n  - name: [unclosed\n").unwrap_err();
    assert!(errors[0].message.contains("line"), "{}", errors[0]);
}

#[test]
fn duplicate_rule_names_are_refused() {
    let errors = load_text(
            "groups:\n  - name: g\n    rules:\n      - {name: A, expr: up, above: 1}\n      - {name: A, expr: up, above: 2}\n",
        )
        .unwrap_err();
    assert!(errors[0].message.contains("same name"));
}

#[test]
fn accepts_prometheus_alert_key_as_name() {
    let set =
        load_text("groups:\n  - name: g\n    rules:\n      - {alert: A, expr: up, below: 1}\n")
            .unwrap();
    assert_eq!(set.groups[0].rules[0].name, "A");
}

#[test]
fn each_bad_blame_setting_names_its_key() {
    let errors = load_text(
            "groups:\n  - name: g\n    rules:\n      - name: R\n        expr: up\n        above: 1\n        blame:\n\
             \x20         baseline: 0s\n          min_factor: 0.5\n          max_baseline_share: 2\n\
             \x20         inhibit:\n            - expr: 'up{'\n\
             \x20         versions:\n            label: 1version\n            errors: up\n",
        )
        .unwrap_err();
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for key in [
        "blame.baseline",
        "blame.min_factor",
        "blame.max_baseline_share",
        "blame.inhibit[0].expr: invalid PromQL",
        "blame.versions.label",
        "`errors` and `requests` go together",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    assert!(
        errors.iter().all(|e| e.rule.as_deref() == Some("R")),
        "{text}"
    );
    let unknown = load_text(
            "groups:\n  - name: g\n    rules:\n      - name: R\n        expr: up\n        above: 1\n        blame:\n          onset: 5m\n",
        )
        .unwrap_err();
    assert!(unknown[0].message.contains("onset"), "{:?}", unknown);
}

#[test]
fn a_rule_s_blame_settings_are_read_with_templates_expanded() {
    let set = load_text(
            "groups:\n  - name: g\n    rules:\n      - name: R\n        expr: up\n        above: 1\n        blame:\n\
             \x20         enabled: true\n          onset_window: 5m\n\
             \x20         inhibit:\n            - name: payments\n              expr: 'up{job=\"payments-{{service}}\"} == 0'\n\
             \x20         versions:\n            expr: 'sum by (version) (rate(errors_total{service=\"{{service}}\"}[1m]))'\n",
        )
        .unwrap();
    let b = &set.groups[0].rules[0].blame;
    assert_eq!(b.enabled, Some(true));
    assert_eq!(b.onset_window, Some(Duration::from_secs(300)));
    assert_eq!(b.inhibit[0].expr, "up{job=\"payments-web\"} == 0");
    assert!(b
        .versions
        .as_ref()
        .unwrap()
        .expr
        .as_ref()
        .unwrap()
        .contains("service=\"web\""));
}
