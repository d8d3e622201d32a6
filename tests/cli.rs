//! The command line: what a user sees for good and bad input.

use crate::support;

use support::{run_rollbackd, FakeService, Prometheus};

const SHIPPED_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const SERVICE: &str = "[service]\nname = \"web\"\nbase_url = \"http://127.0.0.1:8000\"\n";

#[test]
fn the_shipped_rules_pass_rules_check() {
    let dir = dir_with(&[("rollbackd.toml", SERVICE)]);
    let (code, out, err) = run_rollbackd(dir.path(), &["rules", "check", SHIPPED_RULES], &[]);
    assert_eq!(code, 0, "{out}{err}");
    for rule in [
        "HighErrorRate",
        "HighLatencyP99",
        "LatencyTailSkew",
        "HealthCheckFailing",
        "DbPoolExhausted",
        "DbQueryFailures",
    ] {
        assert!(out.contains(rule), "{rule} missing from:\n{out}");
    }
    assert!(
        out.contains("HighErrorRate (> 0.00025, for 2m, policy dry_run)"),
        "{out}"
    );
    assert!(out.contains("rules OK: 3 group(s), 6 rule(s)"), "{out}");
}

#[test]
fn rules_check_names_file_and_rule_for_every_problem() {
    let dir = dir_with(&[
        ("rollbackd.toml", SERVICE),
        (
            "rules/a.yml",
            "groups:\n  - name: g\n    rules:\n      - name: NoThreshold\n        expr: up\n      \
             - name: BadExpr\n        expr: rate(up[5m]\n        above: 1\n",
        ),
        ("rules/b.yaml", "groups:\n  - name: h\n    rules:\n      - name: Typo\n        expr: up\n        abovee: 1\n"),
        ("rules/c.yml", "groups: [\n"),
        ("rules/notes.txt", "not a rule file, ignored"),
    ]);
    let (code, out, err) = run_rollbackd(dir.path(), &["rules", "check", "rules"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("4 problem(s)"), "{err}");
    assert!(
        err.contains("rules/a.yml: group \"g\", rule \"NoThreshold\": needs a threshold"),
        "{err}"
    );
    assert!(
        err.contains("rules/a.yml: group \"g\", rule \"BadExpr\": expr: invalid PromQL"),
        "{err}"
    );
    assert!(
        err.contains("rules/b.yaml: group \"h\", rule \"Typo\": unknown field `abovee`"),
        "{err}"
    );
    assert!(
        err.contains("rules/c.yml:") && err.contains("line"),
        "{err}"
    );
    assert!(!err.contains("notes.txt"));
    assert!(out.is_empty(), "nothing is reported as OK: {out}");
}

#[test]
fn a_missing_template_variable_is_named_with_where_to_set_it() {
    let dir = dir_with(&[(
        "r.yml",
        "groups:\n  - name: g\n    rules:\n      - name: A\n        expr: 'up{team=\"{{team}}\"}'\n        above: 1\n",
    )]);
    let (code, _, err) = run_rollbackd(dir.path(), &["rules", "check", "r.yml"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("rule \"A\": expr: template variable(s) {{team}} have no value"),
        "{err}"
    );
    assert!(err.contains("[variables]"), "{err}");
    let (code, out, err) = run_rollbackd(
        dir.path(),
        &["rules", "check", "r.yml"],
        &[("ROLLBACKD_VARIABLES__TEAM", "payments")],
    );
    assert_eq!(code, 0, "a variable from the environment fills it: {err}");
    assert!(out.contains("rules OK"));
}

#[test]
fn a_missing_rule_path_is_named() {
    let dir = dir_with(&[]);
    let (code, _, err) = run_rollbackd(dir.path(), &["rules", "check", "nowhere"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("rule path nowhere") && err.contains("watch.rule_paths"),
        "{err}"
    );
}

/// A config mistake: file name, its text, environment, and what the message must name.
type ConfigCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

/// Every config mistake: exit 2, and a message naming the key and the file
/// or environment variable it came from.
#[test]
fn bad_config_gives_a_clear_message_and_exit_2() {
    let cases: &[ConfigCase] = &[
        ("c.toml", "[prometheus]\nurll = \"x\"\n", &[], &["c.toml", "prometheus.urll", "unknown field"]),
        ("c.toml", "[promethus]\n", &[], &["c.toml", "unknown field", "promethus"]),
        ("c.toml", "[prometheus]\ntimeout = \"fast\"\n", &[], &["prometheus.timeout", "is not a duration"]),
        ("c.toml", "[prometheus\n", &[], &["c.toml", "line 1"]),
        ("c.toml", "[prometheus]\nurl = \"localhost 9090\"\n", &[], &["prometheus.url", "http(s) URL"]),
        ("c.toml", "[watch]\nmax_concurrent_queries = 0\n", &[], &["c.toml: watch.max_concurrent_queries"]),
        ("c.toml", "[watch]\nmax_concurrent_queries = 100000\n", &[], &["c.toml: watch.max_concurrent_queries", "256"]),
        // Passed `check` once, then killed the dispatcher at the first `confirm` rule.
        ("c.toml", "[engine]\nconfirm_timeout = \"5000000000000h\"\n", &[], &["c.toml", "engine.confirm_timeout", "too large (at most 100y)"]),
        ("c.toml", "", &[("ROLLBACKD_ENGINE__BUDGETS__APPLICATION", "0s")], &["environment variable ROLLBACKD_ENGINE__BUDGETS__APPLICATION: engine.budgets.application"]),
        // A syntax error on a secret's line says where, without quoting it.
        ("c.toml", "[prometheus]\nbearer_token = \"t0ken-value\n", &[], &["c.toml", "line 2"]),
        ("c.toml", "[server]\nlisten = \"everywhere\"\n", &[], &["server.listen"]),
        ("c.toml", "[prometheus.tls]\ncert_file = \"/etc/client.pem\"\n", &[], &["c.toml: prometheus.tls: cert_file and key_file go together"]),
        ("c.toml", "[prometheus.tls]\nmin_version = \"1.1\"\n", &[], &["c.toml: prometheus.tls.min_version", "\"1.2\" or \"1.3\""]),
        ("c.toml", "[prometheus.tls]\nca_fil = \"/etc/ca.pem\"\n", &[], &["c.toml", "prometheus.tls", "ca_fil"]),
        ("c.toml", "[prometheus.headers]\nAuthorization = \"Bearer x\"\n", &[], &["c.toml: prometheus.headers.Authorization", "bearer_token"]),
        ("c.toml", "[prometheus.headers]\nX-Scope-OrgID = { path = \"/run/tenant\" }\n", &[], &["c.toml: key prometheus.headers.X-Scope-OrgID", "{ file = \"/path\" } or { env = \"VARIABLE\" }"]),
        (
            "c.toml",
            "[prometheus]\nbearer_token = \"t0ken-value\"\nbasic_auth = { username = \"u\", password = \"p\" }\n",
            &[],
            &["only one of bearer_token"],
        ),
        ("c.yaml", "prometheus:\n  timeout: [1]\n", &[], &["c.yaml", "prometheus.timeout"]),
        ("c.toml", "", &[("ROLLBACKD_PROMETHEUS__TIMEOUT", "10")], &["ROLLBACKD_PROMETHEUS__TIMEOUT", "duration"]),
        ("c.toml", "", &[("ROLLBACKD_WATCH__MAX_CONCURRENT_QUERIES", "lots")], &["ROLLBACKD_WATCH__MAX_CONCURRENT_QUERIES"]),
        ("c.toml", "", &[("ROLLBACKD_PROMETHEUS__URLL", "x")], &["ROLLBACKD_PROMETHEUS__URLL", "unknown field"]),
        ("c.toml", "", &[("ROLLBACKD_SERVICE__BASE_URL", "nope")], &["service.base_url"]),
        ("c.toml", "[database]\nurl = \"mysql://u:hunter2@db/x\"\n", &[], &["database.url", "PostgreSQL"]),
        ("c.toml", "[database]\nkeep_backups = 0\n", &[], &["database.keep_backups"]),
        ("c.toml", "[engine.history]\nkeep = 3\n", &[], &["c.toml: engine.history.keep", "at least 10"]),
        ("c.toml", "[provider]\ntype = \"argocd\"\nserver = \"argocd.example.com\"\napplication = \"shop\"\n", &[], &["c.toml: provider.server", "https://argocd.example.com"]),
        ("c.toml", "[provider]\ntype = \"argocd\"\nserver = \"https://a\"\napplication = \"shop\"\ntoken = \"x\"\ntoken_file = \"/t\"\n", &[], &["c.toml: provider.token_file", "not both"]),
        ("c.toml", "[provider]\ntype = \"argocd\"\nserver = \"https://a\"\n", &[], &["c.toml", "provider", "application"]),
        ("c.toml", "[engine.history]\nkeep_drill = 3\n", &[], &["c.toml", "engine.history", "keep_drill"]),
        ("c.toml", "[provider]\ntype = \"command\"\nlist = [\"l\"]\nstatus = [\"s\"]\nrollback = [\"r\"]\nlist_settle = \"2h\"\n", &[], &["c.toml: provider.list_settle", "longer than 30m"]),
        ("c.toml", "[database]\ncompress = 12\n", &[], &["database.compress", "0 (none) to 9"]),
        ("c.toml", "[database.backup_store]\nurl = \"gs://bucket/x\"\n", &[], &["database.backup_store.url", "uses gs:", "s3://"]),
        ("c.toml", "[database.backup_store]\nurl = \"s3://AKIAX:hunter2@bucket/x\"\n", &[], &["database.backup_store.url", "must not carry credentials", "AWS_SECRET_ACCESS_KEY"]),
        ("c.toml", "[database.backup_store]\nurl = \"s3://bucket/x\"\nkeep = 0\n", &[], &["database.backup_store.keep"]),
        ("c.toml", "[database.backup_store]\nurll = \"s3://bucket/x\"\n", &[], &["database.backup_store", "urll"]),
        ("c.toml", "[migrations]\ncommand = [\"alembic\"]\n", &[], &["migrations", "[database]"]),
        ("c.toml", "[migrations]\ntool = \"flyway\"\n", &[], &["flyway", "alembic"]),
        ("c.toml", "[engine]\ncooldown = 15\n", &[], &["engine.cooldown"]),
        ("c.toml", "[blame]\nmin_factor = 0.5\n", &[], &["c.toml: blame.min_factor", "at least 1"]),
        ("c.toml", "[blame]\nonset = \"10m\"\n", &[], &["c.toml", "blame.onset", "unknown field"]),
        ("c.toml", "[blame]\nbudget = \"0s\"\n", &[], &["blame.budget"]),
        ("c.toml", "[[blame.inhibit]]\nname = \"payments\"\nexpr = \"up{\"\n", &[], &["c.toml: blame.inhibit[0]: payments", "invalid PromQL"]),
        ("c.toml", "", &[("ROLLBACKD_BLAME__SIGNIFICANCE", "0.9")], &["blame.significance"]),
        ("c.toml", "[engine.budgets]\napplication = \"0s\"\n", &[], &["engine.budgets.application"]),
        ("c.toml", "[state]\nbackend = \"redis\"\n", &[], &["state.backend", "file", "postgres"]),
        ("c.toml", "[state]\nbackend = \"postgres\"\nschema = \"My-State\"\n", &[], &["state.schema", "plain PostgreSQL name"]),
        ("c.toml", "[state]\nleader_check = \"10ms\"\n", &[], &["state.leader_check", "100ms to 4s"]),
        ("c.toml", "[state]\nurl = \"postgres://u:hunter2@db/x\"\n", &[], &["state.url", "backend = \"postgres\""]),
    ];
    for (file, text, env, needles) in cases {
        let dir = dir_with(&[(file, text)]);
        let (code, out, err) = run_rollbackd(dir.path(), &["--config", file, "check"], env);
        assert_eq!(code, 2, "{text:?} {env:?}: exit {code}\n{out}{err}");
        for needle in *needles {
            assert!(
                err.contains(needle),
                "{text:?} {env:?}: {needle:?} not in: {err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("t0ken-value"), "secrets never printed: {err}");
        assert!(
            !err.contains("hunter2"),
            "database passwords never printed: {err}"
        );
    }
}

#[test]
fn a_named_config_file_that_does_not_exist_is_an_error() {
    let dir = dir_with(&[]);
    let (code, _, err) = run_rollbackd(dir.path(), &["--config", "missing.toml", "check"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("config file missing.toml does not exist"),
        "{err}"
    );
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["check"],
        &[("ROLLBACKD_CONFIG", "also-missing.toml")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("also-missing.toml"), "{err}");
}

#[test]
fn bad_flags_exit_2_and_help_works_everywhere() {
    let dir = dir_with(&[]);
    let (code, _, err) = run_rollbackd(dir.path(), &["watch", "--bogus"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--bogus"), "{err}");
    let (code, _, err) = run_rollbackd(dir.path(), &["--log-format", "xml", "check"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("text") && err.contains("json"), "{err}");
    let (code, _, _) = run_rollbackd(dir.path(), &[], &[]);
    assert_eq!(code, 2, "a command is required");
    for args in [
        &["--help"][..],
        &["watch", "--help"],
        &["check", "--help"],
        &["rules", "--help"],
        &["rules", "check", "--help"],
        &["rules", "eval", "--help"],
    ] {
        let (code, out, err) = run_rollbackd(dir.path(), args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage: rollbackd"), "{args:?}: {out}");
    }
}

#[test]
fn watch_refuses_to_start_with_broken_rules() {
    let dir = dir_with(&[(
        "rules/a.yml",
        "groups:\n  - name: g\n    rules:\n      - name: A\n",
    )]);
    let (code, _, err) = run_rollbackd(dir.path(), &["watch"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("rule \"A\"") && err.contains("`expr` is missing"),
        "{err}"
    );
}

#[test]
fn watch_says_which_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = dir_with(&[("rules/a.yml", "groups: []\n")]);
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["watch"],
        &[("ROLLBACKD_SERVER__LISTEN", &addr)],
    );
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

fn eval_setup() -> (FakeService, Prometheus, tempfile::TempDir) {
    let fake = FakeService::start();
    // rate() over [2m] divides by the whole window, so a Prometheus a few
    // seconds old sees a fraction of the real rate: enough requests clear the guard.
    fake.set(|k| {
        k.error_ratio = 0.02;
        k.rps = 2000.0;
    });
    let prom = Prometheus::start(&[fake.addr], None);
    prom.wait_for_scrape("http_requests_total");
    // rate() needs two samples.
    support::wait_for("two scrapes", std::time::Duration::from_secs(20), || {
        let v = prom.query("sum(rate(http_requests_total[2m]))");
        v.as_array().is_some_and(|a| !a.is_empty()).then_some(())
    });
    let config = format!(
        "[prometheus]\nurl = \"{}/\"\n[service]\nname = \"demo\"\nbase_url = \"{}\"\n\
         [watch]\nrule_paths = [\"{SHIPPED_RULES}\", \"extra.yml\"]\n",
        prom.url(),
        fake.url()
    );
    let dir = dir_with(&[
        ("rollbackd.toml", &config),
        (
            "extra.yml",
            "groups:\n  - name: extra\n    rules:\n      - name: Missing\n        expr: absent_metric_total\n        above: 1\n",
        ),
    ]);
    (fake, prom, dir)
}

#[test]
fn rules_eval_prints_value_condition_state_and_verdict() {
    let (_fake, _prom, dir) = eval_setup();
    let (code, out, err) = run_rollbackd(dir.path(), &["rules", "eval"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let line = |rule: &str| {
        out.lines()
            .find(|l| l.contains(rule))
            .unwrap_or_else(|| panic!("{rule} not in:\n{out}"))
            .to_string()
    };
    let header = out.lines().next().unwrap();
    for column in [
        "GROUP",
        "RULE",
        "VALUE",
        "CONDITION",
        "OUTCOME",
        "STATE",
        "WOULD FIRE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    // 2 % errors is over 0.025 %: breaching, pending for its 2m `for`.
    let error_rate = line("HighErrorRate");
    assert!(
        error_rate.contains("> 0.00025") && error_rate.contains("pending"),
        "{error_rate}"
    );
    assert!(error_rate.contains("yes, if it lasts 2m"), "{error_rate}");
    assert!(line("DbPoolExhausted").contains("inactive"));
    assert!(line("HealthCheckFailing").contains("ok"));
    let missing = line("Missing");
    assert!(
        missing.contains("empty") && missing.contains(" no"),
        "{missing}"
    );

    let (code, out, _) = run_rollbackd(
        dir.path(),
        &["rules", "eval", "--rule", "HighErrorRate", "--json"],
        &[],
    );
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let value = rows[0]["value"].as_f64().unwrap();
    assert!((0.015..0.025).contains(&value), "{value}");
    assert_eq!(rows[0]["breaching"], true);
    assert_eq!(rows[0]["outcome"], "ok");

    let (code, _, err) = run_rollbackd(dir.path(), &["rules", "eval", "--rule", "Nope"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no rule named \"Nope\""), "{err}");
}

#[test]
fn rules_eval_reports_an_unreachable_prometheus_per_rule() {
    let port = support::free_port();
    let dir = dir_with(&[
        ("rollbackd.toml", &format!("[prometheus]\nurl = \"http://127.0.0.1:{port}\"\ntimeout = \"1s\"\n")),
        ("rules/a.yml", "groups:\n  - name: g\n    rules:\n      - name: A\n        expr: up\n        below: 1\n"),
    ]);
    let (code, out, err) = run_rollbackd(dir.path(), &["rules", "eval"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("error") && out.contains("cannot reach Prometheus"),
        "{out}"
    );
}

#[test]
fn the_postgres_state_without_a_url_says_where_to_put_one() {
    let dir = dir_with(&[("c.toml", "[state]\nbackend = \"postgres\"\n")]);
    for args in [
        &["--config", "c.toml", "history"][..],
        &["--config", "c.toml", "breaker", "status"][..],
    ] {
        let (code, out, err) = run_rollbackd(dir.path(), args, &[("DATABASE_URL", "")]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(
                "state.backend = \"postgres\" needs state.url (or database.url, or DATABASE_URL)"
            ),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let dir = dir_with(&[("c.toml", "")]);
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["--config", "c.toml", "state", "import", "--from", "."],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("set [state] backend = \"postgres\" first"),
        "{err}"
    );
}

#[test]
fn the_variables_rollbackd_sets_for_its_commands_do_not_break_its_config() {
    // A provider script that calls `rollbackd` inherits these.
    let dir = dir_with(&[("c.toml", "")]);
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let inherited = [
        ("ROLLBACKD_DEPLOYMENT_ID", "d1"),
        ("ROLLBACKD_TARGET_GIT_SHA", "abc"),
        ("ROLLBACKD_LIMIT", "50"),
        ("ROLLBACKD_RUN_ID", "rb-1"),
        ("ROLLBACKD_LOG_LEVEL", "debug"),
        ("ROLLBACKD_LOG_FORMAT", "json"),
    ];
    let (code, out, err) = run_rollbackd(dir.path(), &["--config", "c.toml", "check"], &inherited);
    assert_eq!(code, 0, "{out}{err}");
    // Anything else under the prefix is a config key: a typo stays an error.
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["--config", "c.toml", "check"],
        &[("ROLLBACKD_PROMETHEUS_URL", "http://x")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("ROLLBACKD_PROMETHEUS_URL"), "{err}");
}

#[test]
fn check_refuses_what_watch_refuses_the_provider_included() {
    let dir = dir_with(&[("c.toml", "[provider]\ntype = \"railway\"\n")]);
    let (code, out, err) = run_rollbackd(
        dir.path(),
        &["--config", "c.toml", "check"],
        &[
            ("RAILWAY_TOKEN", ""),
            ("RAILWAY_API_TOKEN", ""),
            ("RAILWAY_PROJECT_ID", ""),
            ("RAILWAY_SERVICE_ID", ""),
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.to_lowercase().contains("token"), "{err}");
}

#[test]
fn a_database_url_of_another_database_system_is_left_alone() {
    // Platforms set DATABASE_URL for whatever database the app uses.
    let dir = dir_with(&[("c.toml", "")]);
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for url in ["mysql://u:p@db/app", "sqlite:///data/app.db"] {
        let (code, out, err) = run_rollbackd(
            dir.path(),
            &["--config", "c.toml", "check"],
            &[("DATABASE_URL", url)],
        );
        assert_eq!(code, 0, "{url}: {out}{err}");
        assert!(!out.contains("database OK"), "{out}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::Read;
    let dir = dir_with(&[("c.toml", "")]);
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    // Well over a pipe's 64 KiB of output, so writing outlives the reader.
    for i in 0..20 {
        let rules: String = (0..200)
            .map(|r| format!("      - name: R{i}x{r}\n        expr: up\n        below: 1\n"))
            .collect();
        std::fs::write(
            dir.path().join(format!("rules/r{i}.yml")),
            format!("groups:\n  - name: g{i}\n    rules:\n{rules}"),
        )
        .unwrap();
    }
    // `rollbackd check | head -1`: once a panic and exit 101.
    let mut child = std::process::Command::new(support::rollbackd_bin())
        .current_dir(dir.path())
        .args(["--config", "c.toml", "check"])
        .env_remove("ROLLBACKD_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_secret_of_the_wrong_type_is_named_without_its_value() {
    let dir = dir_with(&[
        ("c.toml", "[[notifiers]]\ntype = \"slack\"\nurl = 424242\n"),
        ("ok.toml", ""),
    ]);
    // A webhook URL where a table belongs: once quoted in full.
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["--config", "ok.toml", "check"],
        &[(
            "ROLLBACKD_NOTIFIERS",
            "https://hooks.slack.com/services/T0/B0/s3cr3tpath",
        )],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ROLLBACKD_NOTIFIERS") && err.contains("found a string"),
        "{err}"
    );
    assert!(!err.contains("s3cr3tpath"), "{err}");
    let (code, _, err) = run_rollbackd(dir.path(), &["--config", "c.toml", "check"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("c.toml: key notifiers.0: invalid type: found an integer"),
        "{err}"
    );
    assert!(!err.contains("424242"), "{err}");
    let (code, _, err) = run_rollbackd(
        dir.path(),
        &["--config", "ok.toml", "check"],
        &[("ROLLBACKD_SERVER__API_TOKEN", "31337")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ROLLBACKD_SERVER__API_TOKEN"), "{err}");
    assert!(!err.contains("31337"), "{err}");
}

#[test]
fn credentials_in_the_prometheus_url_never_show() {
    let port = support::free_port();
    let dir = dir_with(&[
        (
            "rollbackd.toml",
            &format!("[prometheus]\nurl = \"http://scraper:hunter2@127.0.0.1:{port}\"\ntimeout = \"1s\"\n"),
        ),
        ("rules/a.yml", "groups:\n  - name: g\n    rules:\n      - name: A\n        expr: up\n        below: 1\n"),
        ("bad.toml", "[prometheus]\nurl = \"ftp://scraper:hunter2@127.0.0.1\"\n"),
    ]);
    for args in [
        &["check"][..],
        &["rules", "eval"][..],
        &["--config", "bad.toml", "check"][..],
    ] {
        let (_, out, err) = run_rollbackd(dir.path(), args, &[]);
        assert!(
            !out.contains("hunter2") && !err.contains("hunter2"),
            "{args:?}: {out}{err}"
        );
        assert!(
            out.contains("***@127.0.0.1") || err.contains("***@127.0.0.1"),
            "{args:?}: {out}{err}"
        );
    }
}

#[test]
fn a_backtest_over_a_bad_range_says_what_to_write_and_exits_2() {
    let dir = dir_with(&[("rollbackd.toml", SERVICE)]);
    for (args, says) in [
        (vec!["--last", "7 days"], "--last: "),
        (vec![], "--from TIME --to TIME, or --last 7d"),
        (
            vec![
                "--from",
                "2026-11-02T00:00:00Z",
                "--to",
                "2026-11-01T00:00:00Z",
            ],
            "is not before --to",
        ),
        (
            vec!["--from", "last tuesday", "--to", "now"],
            "is not a time",
        ),
        (vec!["--from", "2026-11-01T00:00:00Z"], "--to"),
    ] {
        let mut full = vec!["rules", "backtest", SHIPPED_RULES];
        full.extend(&args);
        let (code, out, err) = run_rollbackd(dir.path(), &full, &[]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_backtest_against_an_unreachable_prometheus_fails_naming_the_rules() {
    let port = support::free_port();
    let config =
        format!("{SERVICE}[prometheus]\nurl = \"http://127.0.0.1:{port}\"\ntimeout = \"1s\"\n");
    let dir = dir_with(&[("rollbackd.toml", &config)]);
    let (code, out, err) = run_rollbackd(
        dir.path(),
        &["rules", "backtest", SHIPPED_RULES, "--last", "1h"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("http/HighErrorRate")
            && out.contains("not replayed: the range query failed: cannot reach Prometheus"),
        "{out}"
    );
    assert!(out.contains("not replayed: a probe rule"), "{out}");
}

#[test]
fn a_backtest_over_a_century_of_a_one_second_group_is_refused_saying_how_to_narrow_it() {
    // Once accepted, it grew to 15.5 GB in 60 s with no output.
    let dir = dir_with(&[(
        "rules/r.yml",
        "groups:\n  - name: fast\n    interval: 1s\n    rules:\n      - name: Errors\n        expr: 'vector(0)'\n        above: 1\n",
    )]);
    for last in ["100y", "30d"] {
        let (code, out, err) =
            run_rollbackd(dir.path(), &["rules", "backtest", "--last", last], &[]);
        assert_eq!(code, 2, "{last}: {out}{err}");
        assert!(
            err.contains("evaluations of fast/Errors (every 1s); a back-test replays at most 1000000 per rule")
                && err.contains("narrow --from/--to or --last"),
            "{last}: {err}"
        );
    }
}

#[test]
fn check_reads_the_state_as_watch_would_and_fails_where_watch_would() {
    // Once: both exited 0 from `check` and 1 from `watch`.
    let dir = dir_with(&[
        (
            "c.toml",
            "[engine]\nstate_dir = \"state\"\n[watch]\nallow_empty_rules = true\n",
        ),
        ("rules/.keep", ""),
        ("state/runs/rb-broken.json", "{ not a journal"),
    ]);
    let (code, out, err) = run_rollbackd(dir.path(), &["--config", "c.toml", "check"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("rollbackd: state: ") && err.contains("rb-broken.json"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("state/runs/rb-broken.json")).unwrap();
    let (code, out, err) = run_rollbackd(dir.path(), &["--config", "c.toml", "check"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("state OK: directory state, 0 unfinished rollback journal(s)"),
        "{out}"
    );

    let dir = dir_with(&[
        (
            "c.toml",
            "[watch]\nallow_empty_rules = true\n[state]\nbackend = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/x?sslmode=disable\"\n",
        ),
        ("rules/.keep", ""),
    ]);
    let (code, out, err) = run_rollbackd(dir.path(), &["--config", "c.toml", "check"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("rollbackd: state: "), "{err}");
}

#[test]
fn version_names_the_commit_and_completions_and_the_man_page_come_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    // None of these reads the configuration: they work beside a broken one.
    std::fs::write(dir.path().join("rollbackd.toml"), "[prometheus\n").unwrap();
    let head = std::process::Command::new("git")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .expect("git runs (apt-get install git)");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let (code, out, err) = run_rollbackd(dir.path(), &["--version"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("rollbackd {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );

    let (code, script, err) = run_rollbackd(dir.path(), &["completions", "bash"], &[]);
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("rollbackd.bash");
    std::fs::write(&file, &script).unwrap();
    let bash = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p rollbackd",
            file.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bash.stdout).contains("_rollbackd"),
        "bash loads it: {}",
        String::from_utf8_lossy(&bash.stderr)
    );
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, _) = run_rollbackd(dir.path(), &["completions", shell], &[]);
        assert_eq!(code, 0);
        for word in ["init", "backtest", "selector", "breaker"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let (code, _, err) = run_rollbackd(dir.path(), &["completions", "tcsh"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("possible values: bash"), "{err}");

    let (code, page, err) = run_rollbackd(dir.path(), &["man"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie") && page.contains(".TH rollbackd 1"),
        "{page}"
    );
    assert!(page.contains(&head), "the page names the build");
    for command in ["init", "watch", "rollback", "completions"] {
        assert!(
            page.contains(&format!("rollbackd\\-{command}")) || page.contains(command),
            "{command}"
        );
    }
}
