//! The watcher's accuracy, held to Prometheus's own rule engine in one
//! real-time scenario: the same rule evaluated by rollbackd `watch`, by
//! Prometheus as an alerting rule (its `ALERTS` series) and by `rollbackd
//! rules backtest` afterwards must agree, transition by transition, within
//! one interval. Its own module (run first: it is the longest test, and a
//! long test started last holds the whole run up).

use std::time::{Duration, SystemTime};

use super::watch::{group, ratio_rule, wait_evaluations, RATIO};
use crate::support;
use support::{wait_for, FakeService, Prometheus, Watcher};

#[test]
fn transitions_match_prometheus_alerts_within_one_interval() {
    let expr = RATIO.replace("{{service}}", "demo");
    let alert_rules = format!(
        "groups:\n  - name: anchor\n    interval: 1s\n    rules:\n      - alert: Anchor\n        \
         expr: '({expr}) > 0.1'\n        for: 5s\n        keep_firing_for: 2s\n"
    );
    let fake = FakeService::start();
    let prom = Prometheus::start(&[fake.addr], Some(&alert_rules));
    prom.wait_for_scrape("app_deployment_info");
    // d3 went live 2 minutes ago, d2 before it: what the back-test blames.
    let railway = support::fake_railway::FakeRailway::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/anchor.yml"),
        group(&[ratio_rule(
            "Anchor",
            "        for: 5s\n        keep_firing_for: 2s\n",
        )]),
    )
    .unwrap();
    let w = Watcher::start(
        dir.path(),
        &format!(
            // Fidelity with Prometheus's rule engine and the engine's
            // guards; blame's back-test is tests/backtest.rs's.
            "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n[service]\nname = \"demo\"\n\
             [watch]\nrule_paths = [\"rules\"]\n[blame]\nenabled = false\n{}",
            prom.url(),
            railway.provider_toml()
        ),
    );
    wait_evaluations(&w, "Anchor", "ok", 2.0);
    let began = SystemTime::now() - Duration::from_secs(3);
    // A gap in Prometheus's scrapes while the service is healthy: no data,
    // which holds the rule on every side (no transition).
    // Each step holds for a number of the scrapes Prometheus really made.
    fake.set(|k| k.metrics_status = 503);
    fake.hold_for_scrapes(8);
    fake.set(|k| k.metrics_status = 200);
    fake.hold_for_scrapes(8);

    // A long breach (fires), a short one (pending only), a long one again.
    for (ratio, scrapes) in [(0.5, 10), (0.0, 8)] {
        fake.set(|k| k.error_ratio = ratio);
        fake.hold_for_scrapes(scrapes);
    }
    // The short breach is one second of errors (50 requests a second, half
    // failing): its size is wall time, not a number of scrapes, so this one
    // stimulus is timed.
    fake.set(|k| k.error_ratio = 0.5);
    std::thread::sleep(Duration::from_secs(1));
    for (ratio, scrapes) in [(0.0, 8), (0.5, 10)] {
        fake.set(|k| k.error_ratio = ratio);
        fake.hold_for_scrapes(scrapes);
    }
    // The last breach ends; both sides resolve within a few evaluations.
    fake.set(|k| k.error_ratio = 0.0);
    wait_for(
        "rollbackd's eighth transition",
        Duration::from_secs(30),
        || (w.transitions("Anchor").len() >= 8).then_some(()),
    );
    wait_for(
        "Prometheus to resolve its Anchor alert",
        Duration::from_secs(30),
        || {
            prom.query(r#"ALERTS{alertname="Anchor"}"#)
                .as_array()
                .is_some_and(|a| a.is_empty())
                .then_some(())
        },
    );
    // A few evaluations past the resolution, so the back-test's range (to
    // now) holds its last evaluation whatever its grid's phase.
    w.wait_more_evaluations("Anchor", 3, "inactive", Duration::from_secs(30));

    let ours: Vec<(String, f64)> = w
        .transitions("Anchor")
        .into_iter()
        .map(|(_, to, at)| (to, unix(humantime::parse_rfc3339(&at).unwrap())))
        .collect();
    let theirs = prometheus_transitions(&prom, 1.0);
    let names = |v: &[(String, f64)]| v.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&ours),
        ["pending", "firing", "inactive", "pending", "inactive", "pending", "firing", "inactive"],
        "rollbackd: {ours:?}\n{}",
        w.dump()
    );
    assert_eq!(
        names(&ours),
        names(&theirs),
        "rollbackd {ours:?}\nPrometheus {theirs:?}"
    );
    for ((state, a), (_, b)) in ours.iter().zip(&theirs) {
        assert!(
            (a - b).abs() <= 1.25,
            "{state} at {a:.3} in rollbackd, {b:.3} in Prometheus: more than one interval apart\n\
             rollbackd {ours:?}\nPrometheus {theirs:?}"
        );
    }

    // The back-test of the same rule over the same period replays the same
    // transitions, from Prometheus's history alone.
    let (code, out, err) = support::run_rollbackd(
        dir.path(),
        &[
            "--config",
            "rollbackd.toml",
            "rules",
            "backtest",
            "--from",
            &humantime::format_rfc3339_millis(began).to_string(),
            "--to",
            "now",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let empty = report["rules"][0]["evaluations"]["empty"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        empty >= 3,
        "the scrape gap is replayed as no data: {}",
        report["rules"][0]["evaluations"]
    );
    let time = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| unix(humantime::parse_rfc3339(s).unwrap()))
    };
    let mut replayed: Vec<(String, f64)> = Vec::new();
    for i in report["rules"][0]["intervals"].as_array().unwrap() {
        replayed.push(("pending".into(), time(&i["from"]).unwrap()));
        if let Some(t) = time(&i["firing_from"]) {
            replayed.push(("firing".into(), t));
        }
        replayed.push((
            "inactive".into(),
            time(&i["to"]).expect("ended within the range"),
        ));
    }
    assert_eq!(
        names(&replayed),
        names(&theirs),
        "back-test {replayed:?}\n{out}"
    );
    for (((state, a), (_, b)), (_, c)) in replayed.iter().zip(&theirs).zip(&ours) {
        assert!(
            (a - b).abs() <= 1.25 && (a - c).abs() <= 1.25,
            "{state} at {a:.3} in the back-test, {b:.3} in Prometheus, {c:.3} in rollbackd live\n\
             back-test {replayed:?}\nPrometheus {theirs:?}\nlive {ours:?}"
        );
    }
    // Two firings: the first rolls d3 back to d2; the second comes while
    // the breaker is OPEN after it.
    assert_eq!(
        support::would_be_summary(&report),
        ["rollback - d3->d2", "refused breaker d3->-"],
        "{}",
        report["would_be_rollbacks"]
    );
    assert_eq!(report["not_judged"], serde_json::json!(["loop"]));
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Prometheus's transitions of alert `Anchor`, read from the raw samples of
/// `ALERTS` (one per rule evaluation while pending or firing). A series that
/// stops means the alert resolved at the next evaluation.
fn prometheus_transitions(prom: &Prometheus, interval: f64) -> Vec<(String, f64)> {
    let result = prom.query("ALERTS{alertname=\"Anchor\"}[10m]");
    let mut samples: Vec<(f64, String)> = Vec::new();
    for series in result.as_array().unwrap() {
        let state = series["metric"]["alertstate"].as_str().unwrap().to_string();
        for v in series["values"].as_array().unwrap() {
            samples.push((v[0].as_f64().unwrap(), state.clone()));
        }
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut last: Option<(f64, String)> = None;
    for (ts, state) in samples {
        if let Some((prev_ts, prev_state)) = &last {
            if ts - prev_ts > interval * 1.5 {
                out.push(("inactive".into(), prev_ts + interval));
                out.push((state.clone(), ts));
            } else if *prev_state != state {
                out.push((state.clone(), ts));
            }
        } else {
            out.push((state.clone(), ts));
        }
        last = Some((ts, state));
    }
    if let Some((ts, _)) = last {
        out.push(("inactive".into(), ts + interval));
    }
    out
}
