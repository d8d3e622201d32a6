//! A week of history, back-tested end to end: the week is written as
//! OpenMetrics and backfilled into a real Prometheus with `promtool tsdb
//! create-blocks-from openmetrics`, the fake Railway API lists the
//! deployments of that week, and `rollbackd rules backtest` must find
//! exactly the rollbacks the engine would have made.

use crate::support;

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::fake_argocd::{self, FakeArgocd};
use support::fake_railway::{FakeDeployment, FakeRailway};
use support::{run_rollbackd, Prometheus};

const STEP: u64 = 15;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// Errors at 5 % during `[start, start + secs)`, 50 requests a second.
struct Incident {
    start: u64,
    secs: u64,
}

/// The week `[from, to]` as OpenMetrics: a 200 and a 500 counter, every 15 s.
fn openmetrics(from: u64, to: u64, incidents: &[Incident]) -> String {
    let mut out = String::from("# TYPE http_requests counter\n");
    for code in ["200", "500"] {
        let (mut ok, mut errors) = (0.0f64, 0.0f64);
        let mut t = from;
        while t <= to {
            let failing = incidents
                .iter()
                .any(|i| t >= i.start && t < i.start + i.secs);
            let ratio = if failing { 0.05 } else { 0.0 };
            ok += 50.0 * STEP as f64 * (1.0 - ratio);
            errors += 50.0 * STEP as f64 * ratio;
            let value = if code == "200" { ok } else { errors };
            writeln!(
                out,
                "http_requests_total{{service=\"demo\",code=\"{code}\"}} {value} {t}"
            )
            .unwrap();
            t += STEP;
        }
    }
    out.push_str("# EOF\n");
    out
}

fn deployment(id: &str, status: &str, created: u64) -> FakeDeployment {
    FakeDeployment {
        id: id.into(),
        status: status.into(),
        created_at: UNIX_EPOCH + Duration::from_secs(created),
        commit: format!("{id}-sha"),
    }
}

#[test]
fn a_backfilled_week_gives_exactly_the_rollbacks_the_engine_would_have_made() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Whole steps, ending two hours ago (clear of Prometheus's head block).
    let to = (now - 2 * HOUR) / STEP * STEP;
    let from = to - 7 * DAY;
    let i1 = from + DAY + 10 * HOUR; // d2 went live 5 minutes before
    let d2b = from + 2 * DAY;
    let i2 = d2b + 30 * 60; // a dependency, 30 minutes after a good deploy
    let blip = from + 3 * DAY; // 1 minute: shorter than `for`
    let d3 = from + 4 * DAY;
    let i3 = d3 + 4 * HOUR; // d3 is 4 hours old: not blamed
    let d4 = from + 6 * DAY;
    let i4 = d4 + 10 * 60; // d4 is 10 minutes old
    let incidents = [
        Incident {
            start: i1,
            secs: 20 * 60,
        },
        Incident {
            start: i2,
            secs: 20 * 60,
        },
        Incident {
            start: blip,
            secs: 60,
        },
        Incident {
            start: i3,
            secs: 30 * 60,
        },
        Incident {
            start: i4,
            secs: 15 * 60,
        },
    ];

    let mut prom = Prometheus::start_raw(support::free_port(), "global:\n  scrape_interval: 15s\n");
    prom.backfill(&openmetrics(from, to, &incidents));

    let railway = FakeRailway::start_with(vec![
        deployment("d4", "SUCCESS", d4),
        deployment("d3", "REMOVED", d3),
        deployment("d2b", "REMOVED", d2b),
        deployment("d2", "REMOVED", i1 - 5 * 60),
        deployment("d1", "REMOVED", from - DAY),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/http.yml"),
        "groups:\n  - name: http\n    interval: 15s\n    rules:\n      - name: HighErrorRate\n        \
         expr: '(sum(rate(http_requests_total{service=\"demo\",code=\"500\"}[1m])) or vector(0)) / sum(rate(http_requests_total{service=\"demo\"}[1m]))'\n        \
         above: 0.01\n        for: 2m\n        policy: dry_run\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[prometheus]\nurl = \"{}\"\ntimeout = \"30s\"\n[watch]\nrule_paths = [\"rules\"]\n{}",
            prom.url(),
            railway.provider_toml()
        ),
    )
    .unwrap();
    let time =
        |t: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string();
    let (from_text, to_text) = (time(from), time(to));
    // The week's back-test, with `extra` arguments.
    let backtest = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            "rollbackd.toml",
            "rules",
            "backtest",
            "--from",
            &from_text,
            "--to",
            &to_text,
        ];
        args.extend_from_slice(extra);
        run_rollbackd(dir.path(), &args, &[])
    };
    let started = std::time::Instant::now();
    let (code, out, err) = backtest(&["--json"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rule = &report["rules"][0];
    // Every 15 s for 7 days, the first and last included.
    assert_eq!(
        rule["evaluations"]["ok"].as_u64().unwrap_or(0)
            + rule["evaluations"]["empty"].as_u64().unwrap_or(0),
        7 * DAY / STEP + 1,
        "{}",
        rule["evaluations"]
    );
    // Four firings and the blip that only pended.
    let states: Vec<bool> = rule["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| !i["firing_from"].is_null())
        .collect();
    assert_eq!(
        states,
        [true, true, false, true, true],
        "{}",
        rule["intervals"]
    );
    assert_eq!(
        support::would_be_summary(&report),
        [
            "rollback - d2->d1",
            "refused blame d2b->d2",
            "refused deploy_age d3->-",
            "rollback - d4->d3"
        ],
        "{}",
        report["would_be_rollbacks"]
    );
    println!("7 days at 15 s (40,321 evaluations, one range query in 5 requests): {took:?}");

    // The CI gate: two would-be rollbacks pass a limit of 2, fail one of 1.
    let gate = |limit: &str| backtest(&["--fail-on-rollbacks", limit]);
    let (code, out, err) = gate("2");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rollback d2 -> d1"), "{out}");
    // The dependency 30 minutes after d2b: judged as watch would, refused.
    assert!(
        out.contains("refused: not the deploy's (late_onset)"),
        "{out}"
    );
    assert!(
        out.contains("blame: 1 refused as not the deploy's, 0 parked for lack of evidence"),
        "{out}"
    );
    let (code, _, err) = gate("1");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("2 would-be rollback(s), more than --fail-on-rollbacks 1"),
        "{err}"
    );

    // The same week deployed by Argo CD: the application's sync history
    // (ids 0..4 for d1, d2, d2b, d3, d4) gives the same judgements.
    let argo = FakeArgocd::start();
    let at = |t: u64| UNIX_EPOCH + Duration::from_secs(t);
    argo.set_history(&[
        ("r1", at(from - DAY)),
        ("r2", at(i1 - 5 * 60)),
        ("r2b", at(d2b)),
        ("r3", at(d3)),
        ("r4", at(d4)),
    ]);
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[prometheus]\nurl = \"{}\"\ntimeout = \"30s\"\n[watch]\nrule_paths = [\"rules\"]\n{}",
            prom.url(),
            argo.provider_toml(fake_argocd::TOKEN)
        ),
    )
    .unwrap();
    let (code, out, err) = backtest(&["--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        support::would_be_summary(&report),
        [
            "rollback - 1->0",
            "refused blame 2->1",
            "refused deploy_age 3->-",
            "rollback - 4->3"
        ],
        "{}",
        report["would_be_rollbacks"]
    );
    assert!(
        argo.rollbacks().is_empty() && argo.patches().is_empty(),
        "a back-test changes nothing"
    );
}
