//! Hostile and careless input against the real binary: each test is named
//! after what once broke (rules vanishing, a frozen or starved daemon,
//! unbounded answers and bookkeeping), and asserts the bound that now holds.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::{run_rollbackd, wait_for, Watcher};

fn rule_file(name: &str) -> String {
    format!("groups:\n  - name: {name}\n    rules:\n      - name: {name}\n        expr: up\n        below: 1\n")
}

/// A directory with `rules/a.yml` holding rule A.
fn with_rule_a() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yml"), rule_file("A")).unwrap();
    dir
}

/// `rollbackd watch` on `rules/` with a Prometheus that is not there: the
/// rules evaluate (to errors) and reload, which is all these tests need.
fn watcher(dir: &Path, extra: &str) -> Watcher {
    watcher_with_env(dir, extra, &[])
}

fn watcher_with_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Watcher {
    let nobody = support::free_port();
    Watcher::start_with_env(
        dir,
        &format!(
            "[prometheus]\nurl = \"http://127.0.0.1:{nobody}\"\ntimeout = \"1s\"\n[watch]\nrule_paths = [\"rules\"]\nevaluation_interval = \"1s\"\nreload_interval = \"0s\"\n{extra}"
        ),
        env,
    )
}

fn reload_failures(w: &Watcher) -> f64 {
    w.metric("rollbackd_rule_reloads_total", &[("result", "failure")])
        .unwrap_or(0.0)
}

/// Sends SIGHUP and returns the error of the `failures`-th failed reload.
fn reload_and_wait_for_failure(w: &Watcher, failures: usize) -> String {
    w.sighup();
    failed_reload(w, failures)
}

/// Waits for the `n`-th failed reload's log line and returns its error.
fn failed_reload(w: &Watcher, n: usize) -> String {
    let line = wait_for("the failed reload", Duration::from_secs(10), || {
        w.logs_starting("error loading rules; the previous rule set keeps running")
            .get(n - 1)
            .cloned()
    });
    assert_eq!(reload_failures(w), n as f64);
    line["error"].as_str().unwrap().to_string()
}

#[test]
fn rules_never_vanish_when_a_file_is_emptied_or_its_symlink_dangles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    std::fs::create_dir_all(d.join("configmap")).unwrap();
    std::fs::write(d.join("rules/a.yml"), rule_file("A")).unwrap();
    std::fs::write(d.join("configmap/b.yml"), rule_file("B")).unwrap();
    std::os::unix::fs::symlink(d.join("configmap/b.yml"), d.join("rules/b.yml")).unwrap();
    let w = watcher(d, "");
    assert_eq!(w.metric("rollbackd_rules_loaded", &[]), Some(2.0));

    // Emptied: once reloaded "successfully" with A gone.
    std::fs::write(d.join("rules/a.yml"), "").unwrap();
    let why = reload_and_wait_for_failure(&w, 1);
    assert!(why.contains("a.yml: held rules and is now empty"), "{why}");
    assert_eq!(w.metric("rollbackd_rules_loaded", &[]), Some(2.0));
    assert_eq!(
        w.metric("rollbackd_rules_last_reload_successful", &[]),
        Some(0.0)
    );

    // The ConfigMap pattern: the link's target went away.
    std::fs::write(d.join("rules/a.yml"), rule_file("A")).unwrap();
    std::fs::remove_file(d.join("configmap/b.yml")).unwrap();
    let why = reload_and_wait_for_failure(&w, 2);
    assert!(
        why.contains("b.yml: is a symlink to") && why.contains("configmap/b.yml"),
        "{why}"
    );
    assert_eq!(w.metric("rollbackd_rules_loaded", &[]), Some(2.0));

    // `rules check` names the dangling link, and a FIFO does not hang it.
    let fifo = std::ffi::CString::new(d.join("rules/c.yml").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (code, out, err) = run_rollbackd(d, &["rules", "check", "rules"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("b.yml: is a symlink"), "{err}");
    assert!(err.contains("c.yml: is not a regular file"), "{err}");
    let (code, _, err) = run_rollbackd(d, &["rules", "check", "rules/c.yml"], &[]);
    assert_eq!(code, 1, "{err}");

    // Deleting the files is how rules are removed, but not all of them.
    std::fs::remove_file(d.join("rules/b.yml")).unwrap();
    std::fs::remove_file(d.join("rules/c.yml")).unwrap();
    std::fs::remove_file(d.join("rules/a.yml")).unwrap();
    let why = reload_and_wait_for_failure(&w, 3);
    assert!(why.contains("now hold no rules (there were 2)"), "{why}");
    assert_eq!(w.metric("rollbackd_rules_loaded", &[]), Some(2.0));

    // Deleting one file removes its rules.
    std::fs::write(d.join("rules/a.yml"), rule_file("A")).unwrap();
    w.sighup();
    wait_for("the reload", Duration::from_secs(10), || {
        (w.metric("rollbackd_rules_loaded", &[]) == Some(1.0)).then_some(())
    });
    assert_eq!(
        w.metric("rollbackd_rules_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn polling_notices_a_link_that_starts_to_dangle_and_its_removal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    std::fs::create_dir_all(d.join("configmap")).unwrap();
    std::fs::write(d.join("rules/a.yml"), rule_file("A")).unwrap();
    std::fs::write(d.join("configmap/b.yml"), rule_file("B")).unwrap();
    std::os::unix::fs::symlink(d.join("configmap/b.yml"), d.join("rules/b.yml")).unwrap();
    let w = watcher_with_env(d, "", &[("ROLLBACKD_WATCH__RELOAD_INTERVAL", "200ms")]);
    std::fs::remove_file(d.join("configmap/b.yml")).unwrap();
    let why = failed_reload(&w, 1);
    assert!(why.contains("b.yml: is a symlink"), "{why}");
    // Removing the link is how B's rules go: noticed without a signal too.
    std::fs::remove_file(d.join("rules/b.yml")).unwrap();
    wait_for("the reload without B", Duration::from_secs(10), || {
        (w.metric("rollbackd_rules_loaded", &[]) == Some(1.0)).then_some(())
    });
    assert_eq!(
        w.metric("rollbackd_rules_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn an_empty_rule_set_is_allowed_when_the_config_says_so() {
    let dir = with_rule_a();
    let d = dir.path();
    let w = watcher(d, "allow_empty_rules = true\n");
    std::fs::write(d.join("rules/a.yml"), "groups: []\n").unwrap();
    w.sighup();
    wait_for("the reload", Duration::from_secs(10), || {
        (w.metric("rollbackd_rules_loaded", &[]) == Some(0.0)).then_some(())
    });
    assert_eq!(reload_failures(&w), 0.0);
}

#[test]
fn deeply_nested_rule_files_are_refused_at_once_and_the_daemon_keeps_serving() {
    let dir = with_rule_a();
    let d = dir.path();
    // 200 KB of `[[[…]]]`: `rules check` once took 39.5 s, and froze `watch` for 43 s.
    let nested = format!("groups: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(d.join("nested.yml"), &nested).unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = run_rollbackd(d, &["rules", "check", "nested.yml"], &[]);
    let took = started.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nested.yml: line 1: `[` and `{` nest deeper than 64 levels"),
        "{err}"
    );
    eprintln!("rules check on 200 KB of nesting: {took:?}");

    let w = watcher(d, "");
    std::fs::write(d.join("rules/a.yml"), &nested).unwrap();
    let why = reload_and_wait_for_failure(&w, 1);
    assert!(why.contains("nest deeper than 64"), "{why}");
    let (status, _) = support::http_get(&format!("{}/healthz", w.url())).unwrap();
    assert_eq!(status, 200);
}

/// A Prometheus stand-in that answers every query with `body`.
fn answering(body: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = std::sync::Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut request = [0u8; 8192];
                let _ = stream.read(&mut request);
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    port
}

#[test]
fn a_huge_prometheus_answer_is_refused_without_growing_memory() {
    // 800k series (~30 MB, sent without Content-Length): once 3.3 GB of
    // RSS, never released, and /healthz unanswered for ~20 s.
    let mut body = String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for i in 0..800_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1,"1"]}}"#));
    }
    body.push_str("]}}");
    assert!(body.len() > 30_000_000);
    let port = answering(body.into_bytes());

    let dir = with_rule_a();
    let d = dir.path();
    let w = Watcher::start(
        d,
        &format!("[prometheus]\nurl = \"http://127.0.0.1:{port}\"\ntimeout = \"5s\"\n[watch]\nrule_paths = [\"rules\"]\nevaluation_interval = \"1s\"\n"),
    );
    wait_for(
        "three too_large evaluations",
        Duration::from_secs(30),
        || {
            (w.metric(
                "rollbackd_rule_evaluations_total",
                &[("rule", "A"), ("outcome", "too_large")],
            )
            .unwrap_or(0.0)
                >= 3.0)
                .then_some(())
        },
    );
    assert_eq!(
        w.metric(
            "rollbackd_prometheus_errors_total",
            &[("kind", "too_large")]
        )
        .map(|v| v >= 3.0),
        Some(true)
    );
    let failed = w.logs_starting("query failed");
    assert!(
        failed.iter().any(|l| l["error"]
            .as_str()
            .unwrap_or("")
            .contains("prometheus.max_response_bytes")),
        "{}",
        w.dump()
    );
    let (status, _) = support::http_get(&format!("{}/healthz", w.url())).unwrap();
    assert_eq!(status, 200);
    let peak = w.peak_rss();
    eprintln!("peak RSS after three 30 MB answers: {} MiB", peak >> 20);
    assert!(peak < 100 << 20, "peak RSS {} MiB", peak >> 20);
    // The rule holds (on_error: hold): nothing fires on an answer not read.
    assert_eq!(w.transitions("A").len(), 0, "{}", w.dump());
}

/// Opens `n` connections that each send half a request's headers.
fn tricklers(port: u16, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            Some(s)
        })
        .collect()
}

/// How many of `conns` the server has closed (a read sees the end or a reset).
fn closed(conns: &[std::net::TcpStream]) -> usize {
    use std::io::Read;
    conns
        .iter()
        .filter(|s| {
            let mut buf = [0u8; 64];
            let mut s: &std::net::TcpStream = s;
            match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count()
}

#[test]
fn header_tricklers_are_cut_off_and_healthz_answers_past_the_connection_limit() {
    let dir = with_rule_a();
    let d = dir.path();
    let w = watcher_with_env(
        d,
        "",
        &[
            ("ROLLBACKD_SERVER__MAX_CONNECTIONS", "20"),
            ("ROLLBACKD_SERVER__HEADER_TIMEOUT", "3s"),
        ],
    );

    // 40 connections trickling headers: 20 fill the limit, 20 take the
    // reserve, and a probe still gets its answer.
    let held = tricklers(w.port, 40);
    assert_eq!(held.len(), 40);
    let (status, body) = support::http_get(&format!("{}/healthz", w.url())).unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // 70 more: whatever the first ones still hold, at most 20 + 32 are
    // served, and at least 18 are closed at once (counted as refused).
    let burst = tricklers(w.port, 70);
    // Once stayed open for ever: every one is cut off after
    // server.header_timeout (3 s; 1 s in the reserve).
    wait_for(
        "the tricklers to be cut off",
        Duration::from_secs(15),
        || (closed(&held) == held.len() && closed(&burst) == burst.len()).then_some(()),
    );
    let refused = w
        .metric(
            "rollbackd_http_connections_refused_total",
            &[("reason", "limit")],
        )
        .unwrap_or(0.0);
    assert!(refused >= 18.0, "refused {refused}\n{}", w.metrics());
    let (status, _) = support::http_get(&format!("{}/healthz", w.url())).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn api_errors_are_json_even_those_the_router_makes() {
    let dir = with_rule_a();
    let d = dir.path();
    let w = watcher(d, "");
    // A GET where only POST exists: once an empty 405.
    let (status, body) = support::http_get(&format!("{}/api/v1/breaker/reset", w.url())).unwrap();
    assert_eq!(status, 405, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("method"), "{body}");
    // 3 MiB of body: once a plain-text 413.
    let big = "x".repeat(3 << 20);
    let (status, body) = support::http_post(
        &format!("{}/api/v1/alertmanager", w.url()),
        Some(support::API_TOKEN),
        Some(&big),
    );
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("2 MiB"), "{body}");
    // Without the token, the body is not even read: 401 comes back while
    // the client has sent only the headers of a 3 MiB request.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        3 << 20
    )
    .unwrap();
    let mut answer = [0u8; 64];
    let n = conn.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn an_alertmanager_flood_stays_bounded_and_one_alert_name_is_one_rule() {
    let service = support::FakeService::start();
    let railway = support::fake_railway::FakeRailway::start();
    let dir = with_rule_a();
    let d = dir.path();
    let w = watcher(
        d,
        &format!(
            "[service]\nname = \"web\"\nbase_url = \"{}\"\n{}\n[blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\ncoalesce = \"300ms\"\n\
             [alertmanager]\nmatchers = {{ rollback = \"true\" }}\npolicy = \"confirm\"\n",
            service.url(),
            railway.provider_toml()
        ),
    );
    let url = format!("{}/api/v1/alertmanager", w.url());
    // 30 batches of 3,000 distinct matching alerts: once 0.07 → 2.4 s per
    // request, RSS 12 → 153 MB, and confirmations carrying 19,279 "rules".
    let mut latencies = Vec::new();
    for batch in 0..30 {
        let alerts: Vec<String> = (0..3000)
            .map(|i| {
                format!(
                    r#"{{"status":"firing","labels":{{"alertname":"Flood","rollback":"true","instance":"i-{batch}-{i}"}},"annotations":{{}},"startsAt":"2026-11-27T00:00:00Z","fingerprint":"f{batch}x{i}"}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"Flood\"}}","status":"firing","alerts":[{}]}}"#,
            alerts.join(",")
        );
        let started = std::time::Instant::now();
        let (status, answer) = support::http_post(&url, Some(support::API_TOKEN), Some(&body));
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"accepted\":3000"), "{answer}");
    }
    let median = |l: &[Duration]| {
        let mut l = l.to_vec();
        l.sort();
        l[l.len() / 2]
    };
    eprintln!(
        "Alertmanager flood: median of the first 5 requests {:?}, of the last 5 {:?}, peak RSS {} MiB",
        median(&latencies[..5]),
        median(&latencies[25..]),
        w.peak_rss() >> 20
    );
    let pending = wait_for("a pending confirmation", Duration::from_secs(10), || {
        let p = w.api("/api/v1/pending");
        (!p.as_array().unwrap().is_empty()).then_some(p)
    });
    for p in pending.as_array().unwrap() {
        assert_eq!(p["rules"].as_array().unwrap().len(), 1, "{p}");
    }
    assert!(
        w.peak_rss() < 120 << 20,
        "peak RSS {} MiB",
        w.peak_rss() >> 20
    );
}

#[test]
fn a_removed_groups_histograms_leave_metrics() {
    let dir = with_rule_a();
    let d = dir.path();
    std::fs::write(d.join("rules/b.yml"), rule_file("B")).unwrap();
    let w = watcher(d, "");
    let series = "rollbackd_group_evaluation_duration_seconds_count{group=\"B\"}";
    wait_for("group B's histogram", Duration::from_secs(10), || {
        w.metrics().contains(series).then_some(())
    });
    std::fs::remove_file(d.join("rules/b.yml")).unwrap();
    w.sighup();
    wait_for("group B's series to go", Duration::from_secs(10), || {
        (!w.metrics().contains("group=\"B\"")).then_some(())
    });
    assert!(
        w.metrics()
            .contains("rollbackd_group_evaluation_duration_seconds_count{group=\"A\"}"),
        "{}",
        w.metrics()
    );
}

#[test]
fn an_unreadable_breaker_file_is_open_with_its_reason_in_the_api() {
    let service = support::FakeService::start();
    let railway = support::fake_railway::FakeRailway::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    std::fs::create_dir_all(d.join("state")).unwrap();
    std::fs::write(d.join("rules/a.yml"), rule_file("A")).unwrap();
    std::fs::write(d.join("state/breaker.json"), "{ not json").unwrap();
    let w = watcher(
        d,
        &format!(
            "[service]\nname = \"web\"\nbase_url = \"{}\"\n{}\n[engine]\nstate_dir = \"state\"\n",
            service.url(),
            railway.provider_toml()
        ),
    );
    // Once `"reason": ""` and `"since": ""` beside an OPEN state.
    let b = w.api("/api/v1/breaker");
    assert_eq!(b["state"], "OPEN", "{b}");
    assert_eq!(b["deploys_allowed"], false, "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("breaker.json") && reason.contains("counts as OPEN"),
        "{b}"
    );
}
