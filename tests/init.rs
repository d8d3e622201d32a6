//! `rollbackd init` against a real Prometheus that scrapes one small
//! exporter per convention (`tests/support/exporters.rs`: OpenTelemetry,
//! Micrometer, ingress-nginx, Istio, the Prometheus client libraries) and
//! holds a day of each one's history, backfilled with promtool, with an
//! error burst and a latency burst in it. For every convention: `init`
//! recognises it, writes rules and a config that `rules check` accepts,
//! its firing counts are what `rules backtest` says over the same range,
//! and the rules breach once that exporter's errors and latency go bad. A
//! service with no metric rollbackd knows gets a clear message and a
//! template; every wrong flag a clear error.

use crate::support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::exporters::{self, Convention, Exporter, Knobs};
use support::{run_rollbackd, wait_for, Prometheus};

const HOUR: u64 = 3600;

/// The day's shape: 0.05 % errors and 40 ms; 20 minutes at 3 % errors
/// (10 h ago) and 20 minutes at 3 s (6 h ago).
fn shape(now: u64) -> impl Fn(u64) -> (f64, f64) {
    move |t| {
        let errors = (now - 10 * HOUR..now - 10 * HOUR + 1200).contains(&t);
        let slow = (now - 6 * HOUR..now - 6 * HOUR + 1200).contains(&t);
        (
            if errors { 0.03 } else { 0.0005 },
            if slow { 3.0 } else { 0.04 },
        )
    }
}

struct World {
    prometheus: Prometheus,
    exporters: Vec<(Convention, Exporter)>,
    _unknown: tokio::sync::oneshot::Sender<()>,
}

fn world() -> World {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exporters: Vec<(Convention, Exporter)> = Convention::ALL
        .iter()
        .map(|c| (*c, Exporter::start(*c)))
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unknown_addr = listener.local_addr().unwrap();
    let unknown = support::fake_service::serve_in_thread(
        listener,
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async { exporters::unknown_exposition() }),
        ),
    );
    let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for (c, e) in &exporters {
        config.push_str(&format!(
            "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
            c.job(),
            e.addr
        ));
    }
    config.push_str(&format!(
        "  - job_name: queue-worker\n    static_configs:\n      - targets: ['{unknown_addr}']\n"
    ));
    let mut prometheus = Prometheus::start_raw(support::free_port(), &config);
    // A day of history, ending two hours ago (clear of the head block).
    let (from, to) = (now - 26 * HOUR, now - 2 * HOUR);
    let mut history = String::new();
    for c in Convention::ALL {
        history.push_str(&exporters::openmetrics(c, from, to, 30, shape(now)));
    }
    history.push_str("# EOF\n");
    prometheus.backfill(&history);
    for (c, _) in &exporters {
        prometheus.wait_for_scrape(&format!(
            "{}{{job=\"{}\",instance!=\"\"}}",
            c.requests(),
            c.job()
        ));
    }
    prometheus.wait_for_scrape("queue_depth{job=\"queue-worker\"}");
    World {
        prometheus,
        exporters,
        _unknown: unknown,
    }
}

/// `rollbackd init` for `job`, written into `dir`.
fn init(w: &World, dir: &Path, job: &str) -> (i32, String, String) {
    run_rollbackd(
        dir,
        &[
            "init",
            "--prometheus",
            &w.prometheus.url(),
            "--job",
            job,
            "--history",
            "1d",
            "--write",
            "--out",
            ".",
        ],
        &[],
    )
}

/// The firings `init` wrote in a rule's comment for `candidate`.
fn firings_at(rules: &str, rule: &str, candidate: &str) -> usize {
    let block = rules
        .split("- name: ")
        .find(|b| b.contains(&format!("{rule}\n")))
        .unwrap_or("");
    let comment = rules
        .lines()
        .take_while(|l| !l.contains(&format!("- name: {rule}")))
        .filter(|l| l.contains("Firings in the back-test"))
        .last()
        .unwrap_or_else(|| panic!("no back-test comment for {rule}:\n{rules}\n{block}"));
    let part = comment
        .split([':', ','])
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0].trim() == candidate)
        .map(|w| {
            w[1].trim()
                .split(' ')
                .next()
                .unwrap()
                .trim_end_matches('.')
                .to_string()
        })
        .unwrap_or_else(|| panic!("no {candidate} in {comment}"));
    part.parse().unwrap()
}

#[test]
fn init_writes_rules_for_each_convention_that_check_accepts_backtests_agree_with_and_that_fire() {
    let w = world();
    let mut written = Vec::new();
    for (c, _) in &w.exporters {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = init(&w, dir.path(), c.job());
        assert_eq!(code, 0, "{c:?}: {out}{err}");
        let rules_path = dir.path().join(format!("rules/{}.yml", c.job()));
        let rules = std::fs::read_to_string(&rules_path).unwrap();
        assert!(
            rules.contains(c.requests()),
            "{c:?} reads {}:\n{rules}",
            c.requests()
        );
        for name in ["HighErrorRate", "HighLatencyP99", "HealthCheckFailing"] {
            assert!(
                rules.contains(&format!("- name: {name}")),
                "{c:?}: {name}\n{rules}"
            );
        }
        assert_eq!(
            rules.matches("\n        policy: dry_run\n").count(),
            3,
            "{rules}"
        );
        // The error burst was 3 %: every candidate under it fires once,
        // 5 % never; the slow 20 minutes fire every latency candidate under 3 s.
        assert_eq!(
            firings_at(&rules, "HighErrorRate", "0.1 %"),
            1,
            "{c:?}\n{rules}"
        );
        assert_eq!(
            firings_at(&rules, "HighErrorRate", "5 %"),
            0,
            "{c:?}\n{rules}"
        );
        assert_eq!(
            firings_at(&rules, "HighLatencyP99", "1 s"),
            1,
            "{c:?}\n{rules}"
        );
        assert!(
            rules.contains("above: 0.05\n"),
            "5 %, the lowest that never fired:\n{rules}"
        );
        assert!(err.contains("HighErrorRate"), "a summary on stderr: {err}");
        // What a newcomer sees (`cargo test --test init -- --nocapture`).
        println!("==== rollbackd init --job {} ====\n{err}{rules}", c.job());

        let (code, out, err) = run_rollbackd(dir.path(), &["rules", "check"], &[]);
        assert_eq!(code, 0, "{c:?}: rules check: {out}{err}");

        // The back-test of the written file over the same range agrees,
        // at the proposed threshold and at a lower one.
        let range: Vec<&str> = rules
            .lines()
            .find_map(|l| l.strip_prefix("# Back-tested over "))
            .unwrap()
            .split([' ', '('])
            .collect();
        let (from, to) = (range[0].to_string(), range[2].to_string());
        assert!(
            rules.contains("above: 5\n"),
            "5 s, the lowest latency that never fired:\n{rules}"
        );
        let lowered = rules
            .replace("above: 0.05\n", "above: 0.001\n")
            .replace("above: 5\n", "above: 0.1\n");
        std::fs::write(&rules_path, &lowered).unwrap();
        let (code, out, err) = run_rollbackd(
            dir.path(),
            &["rules", "backtest", "--from", &from, "--to", &to, "--json"],
            &[],
        );
        assert_eq!(code, 0, "{c:?}: {out}{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        for (rule, candidate) in [("HighErrorRate", "0.1 %"), ("HighLatencyP99", "0.1 s")] {
            let replayed = report["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == rule)
                .unwrap();
            let fired = replayed["intervals"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| !i["firing_from"].is_null())
                .count();
            assert_eq!(
                fired,
                firings_at(&rules, rule, candidate),
                "{c:?} {rule}: the back-test and init disagree\n{}",
                replayed
            );
        }
        std::fs::write(&rules_path, &rules).unwrap();
        written.push((*c, dir));
    }

    // Each exporter's errors and latency go bad: its rules breach.
    for (_, e) in &w.exporters {
        e.set(Knobs {
            error_ratio: 1.0,
            latency: 8.0,
        });
    }
    for (c, dir) in &written {
        wait_for(
            &format!("{c:?}'s rules to breach"),
            Duration::from_secs(60),
            || {
                let (code, out, _) = run_rollbackd(dir.path(), &["rules", "eval", "--json"], &[]);
                let rows: Value = serde_json::from_str(&out).ok()?;
                let breaching = |name: &str| {
                    rows.as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["rule"] == name && r["breaching"] == true)
                };
                (code == 0 && breaching("HighErrorRate") && breaching("HighLatencyP99"))
                    .then_some(())
            },
        );
    }
}

#[test]
fn a_service_with_unknown_metrics_and_wrong_flags_get_clear_errors() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = init(&w, dir.path(), "queue-worker");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("queue_depth") && err.contains("jobs_processed_total"),
        "names what it found: {err}"
    );
    assert!(err.contains("none is a request counter"), "{err}");
    assert!(
        out.contains("REQUESTS{job=\"queue-worker\", STATUS=~\"5..\"}"),
        "a template: {out}"
    );
    assert!(
        !dir.path().join("rollbackd.toml").exists(),
        "nothing written"
    );

    let (code, _, err) = init(&w, dir.path(), "no-such-job");
    assert_eq!(code, 1);
    assert!(
        err.contains("no series match {job=\"no-such-job\"}"),
        "{err}"
    );
    assert!(err.contains("otel-shop"), "names the jobs there are: {err}");

    let url = w.prometheus.url();
    let cases: [(&[&str], &str); 4] = [
        (&["init", "--prometheus", &url], "--job NAME"),
        (
            &[
                "init",
                "--prometheus",
                &url,
                "--job",
                "otel-shop",
                "--history",
                "30d",
            ],
            "--history 30d: between 1m and 7d",
        ),
        (
            &["init", "--prometheus", &url, "--selector", "{job=}"],
            "--selector \"{job=}\" is not a PromQL selector",
        ),
        (
            &["init", "--prometheus", "not a url", "--job", "x"],
            "--prometheus",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, err) = run_rollbackd(dir.path(), args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }

    // Printed by default; never over an existing file.
    let (code, out, _) = run_rollbackd(
        dir.path(),
        &[
            "init",
            "--prometheus",
            &url,
            "--job",
            "client-shop",
            "--history",
            "1d",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("# ---- rules/client-shop.yml ----")
            && out.contains("# ---- rollbackd.toml ----"),
        "{out}"
    );
    assert!(!dir.path().join("rollbackd.toml").exists());
    std::fs::write(dir.path().join("rollbackd.toml"), "# mine\n").unwrap();
    let (code, _, err) = init(&w, dir.path(), "client-shop");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rollbackd.toml exists; init never overwrites a file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rollbackd.toml")).unwrap(),
        "# mine\n"
    );
    assert!(!dir.path().join("rules").exists(), "nothing half-written");
}
