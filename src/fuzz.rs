//! Property tests that feed rollbackd's parsers what a careless or hostile
//! user could: rule files, the config, Alertmanager's webhook and
//! Prometheus's answers, each built from the pieces the real ones are made
//! of (so the cases reach deep into the parsers), mixed with random bytes.
//! Every case must end without a panic, with an answer or an error that
//! names where the problem is.
//!
//! `ROLLBACKD_FUZZ_CASES` sets the cases per target (256 by default, what
//! CI runs) and `ROLLBACKD_FUZZ_SEED` which ones; `bench/fuzz.py` runs many
//! more in release and prints the figures the README quotes.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

/// The same cases on every run (CI stays deterministic), unless
/// `ROLLBACKD_FUZZ_SEED` picks other ones.
fn runner() -> TestRunner {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let config = RunnerConfig {
        cases: var("ROLLBACKD_FUZZ_CASES").unwrap_or(256) as u32,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&var("ROLLBACKD_FUZZ_SEED").unwrap_or(0).to_le_bytes());
    let rng = proptest::test_runner::TestRng::from_seed(config.rng_algorithm, &seed);
    TestRunner::new_with_rng(config, rng)
}

/// Text made of `pieces` (joined by newlines), or random characters.
fn text_from(pieces: Vec<&'static str>) -> impl Strategy<Value = String> {
    let piece = proptest::sample::select(pieces);
    prop_oneof![
        3 => proptest::collection::vec(piece, 0..40).prop_map(|p| p.join("\n")),
        1 => proptest::collection::vec(any::<char>(), 0..400).prop_map(|c| c.into_iter().collect()),
        1 => proptest::collection::vec(
            prop_oneof![Just("[".to_string()), Just("{".to_string()), Just("]".to_string()), Just("a: ".to_string())],
            0..300
        ).prop_map(|p| p.concat()),
    ]
}

const RULE_PIECES: [&str; 34] = [
    "groups:",
    "  - name: api",
    "  - name: \"\"",
    "    interval: 15s",
    "    interval: 0s",
    "    interval: 99999999999y",
    "    rules:",
    "      - name: HighErrors",
    "      - name: HighErrors",
    "        expr: sum(rate(x[5m])) / sum(rate(y[5m]))",
    "        expr: sum(rate(x[5m])",
    "        expr: up > 1",
    "        expr: '{{service}}'",
    "        expr: \"{{nope}}\"",
    "        above: 0.05",
    "        above: NaN",
    "        below: -1e308",
    "        for: 2m",
    "        for: -1s",
    "        keep_firing_for: 1h",
    "        policy: auto",
    "        policy: sometimes",
    "        on_no_data: fire",
    "        on_error: hold",
    "        min_traffic: { expr: 'sum(rate(y[5m]))', above: 1 }",
    "        probe: { url: 'http://x/health', failures: 0 }",
    "        labels: { severity: page }",
    "        annotations: { summary: '[[[' }",
    "      - [",
    "  - {a: [b, {c: d}]}",
    "&a [*a, *a]",
    "- *a",
    "~",
    "\t",
];

/// A well-formed rule file whose values come from pools of good and bad ones.
fn shaped_rule_file() -> impl Strategy<Value = String> {
    let pick = |v: Vec<&'static str>| proptest::sample::select(v);
    let rule = (
        pick(vec!["A", "B", "", "a b", "{{service}}"]),
        pick(vec![
            "up",
            "sum(rate(x[5m])) / sum(rate(y[5m]))",
            "up == 1",
            "scalar(up)",
            "rate(x[5m]",
            "x{job=\"{{service}}\"}",
            "vector(1) + on() group_left x",
            "{{nope}}",
        ]),
        pick(vec!["above", "below", "outside"]),
        pick(vec!["0", "1e308", "-0.5", "NaN", ".inf", "abc"]),
        pick(vec!["0s", "1s", "5m", "10y", "101y", "1ms", "x"]),
        pick(vec!["auto", "confirm", "dry_run", "off"]),
    )
        .prop_map(|(name, expr, cmp, value, dur, policy)| {
            format!(
                "      - name: '{name}'\n        expr: '{expr}'\n        {cmp}: {value}\n        for: {dur}\n        keep_firing_for: {dur}\n        policy: {policy}\n"
            )
        });
    (
        pick(vec!["g", "h", ""]),
        pick(vec!["1s", "0s", "15s", "1y"]),
        proptest::collection::vec(rule, 0..6),
    )
        .prop_map(|(group, interval, rules)| {
            format!(
                "groups:\n  - name: '{group}'\n    interval: {interval}\n    rules:\n{}",
                rules.concat()
            )
        })
}

#[test]
fn rule_files_never_panic_and_errors_name_the_file() {
    let file = Path::new("fuzz/rules.yml");
    let vars = crate::rules::Variables::from([("service".to_string(), "web".to_string())]);
    runner()
        .run(
            &prop_oneof![text_from(RULE_PIECES.to_vec()), shaped_rule_file()],
            |text| {
                if crate::rules::files::too_deep(&text).is_some() {
                    return Ok(());
                }
                let mut set = crate::rules::RuleSet::default();
                let mut errors = Vec::new();
                crate::rules::load::parse_file(
                    file,
                    &text,
                    &vars,
                    Duration::from_secs(15),
                    &mut set,
                    &mut errors,
                );
                for e in &errors {
                    prop_assert_eq!(&e.file, file);
                    prop_assert!(!e.message.is_empty());
                }
                Ok(())
            },
        )
        .unwrap();
}

const CONFIG_PIECES: [&str; 29] = [
    "[prometheus]",
    "[watch]",
    "[engine]",
    "[engine.budgets]",
    "[server]",
    "[state]",
    "[[notifiers]]",
    "[provider]",
    "url = \"http://u:hunter2@127.0.0.1:9090/?token=hunter2\"",
    "timeout = \"5000000000000h\"",
    "timeout = 10",
    "max_concurrent_queries = 18446744073709551615",
    "max_queries_per_request = 0",
    "max_series = -1",
    "confirm_timeout = \"1y\"",
    "application = \"0s\"",
    "max_connections = 0",
    "header_timeout = \"1ms\"",
    "backend = \"postgres\"",
    "leader_check = \"1h\"",
    "type = \"railway\"",
    "type = \"slack\"",
    "webhook_url = \"https://hooks/x?key=hunter2\"",
    "bearer_token = \"hunter2",
    "listen = \"0.0.0.0:99999\"",
    "rule_paths = []",
    "allow_empty_rules = \"yes\"",
    "x = [[[[[[",
    "= =",
];

#[test]
fn configs_never_panic_and_never_print_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.toml");
    runner()
        .run(&text_from(CONFIG_PIECES.to_vec()), |text| {
            std::fs::write(&path, &text).unwrap();
            if let Err(e) = crate::config::Config::load(Some(&path)) {
                let message = e.to_string();
                prop_assert!(!message.contains("hunter2"), "{}", message);
            }
            Ok(())
        })
        .unwrap();
}

/// JSON built from the keys the real documents use, with values of any type.
fn json_from(keys: Vec<&'static str>) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        proptest::sample::select(vec![
            "4",
            "firing",
            "resolved",
            "success",
            "error",
            "vector",
            "scalar",
            "matrix",
            "string",
            "NaN",
            "+Inf",
            "1.5",
            "true",
            "2026-11-27T00:00:00Z"
        ])
        .prop_map(|s| Value::String(s.into())),
        ".{0,20}".prop_map(Value::String),
    ];
    let key = proptest::sample::select(keys);
    leaf.prop_recursive(6, 200, 12, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..10).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

#[test]
fn prometheus_answers_never_panic() {
    let keys = vec![
        "status",
        "data",
        "resultType",
        "result",
        "metric",
        "value",
        "histogram",
        "errorType",
        "error",
        "__name__",
        "__rollbackd_query__",
        "job",
    ];
    let status = proptest::sample::select(vec![200u16, 400, 401, 422, 500, 503]);
    runner()
        .run(
            &(json_from(keys), status, 1usize..50),
            |(value, status, max_series)| {
                let body = serde_json::to_vec(&value).unwrap();
                let status = reqwest::StatusCode::from_u16(status).unwrap();
                if let Ok(samples) =
                    crate::source::prometheus::parse_answer(status, &body, None, max_series)
                {
                    prop_assert!(samples.len() <= max_series);
                    let _ = crate::source::prometheus::split(samples, 3);
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn alertmanager_payloads_never_panic_and_always_get_an_answer() {
    use axum::extract::State;
    let keys = vec![
        "version",
        "groupKey",
        "status",
        "alerts",
        "labels",
        "annotations",
        "startsAt",
        "fingerprint",
        "alertname",
        "rollback",
        "summary",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (events, received) = tokio::sync::mpsc::channel(100_000);
    let received = std::sync::Mutex::new(received);
    let mut state = crate::api::AppState::watch_only(Default::default(), Duration::from_secs(1));
    state.alerts = Some(crate::api::AlertIntake {
        config: crate::api::config::AlertmanagerConfig::default(),
        events,
        seen: Default::default(),
    });
    runner()
        .run(&json_from(keys), |value| {
            let body = axum::body::Bytes::from(serde_json::to_vec(&value).unwrap());
            let answer = rt.block_on(crate::api::alertmanager::receive(
                State(state.clone()),
                body,
            ));
            prop_assert!(answer.status().as_u16() == 200 || answer.status().as_u16() == 400);
            while received.lock().unwrap().try_recv().is_ok() {}
            Ok(())
        })
        .unwrap();
}
