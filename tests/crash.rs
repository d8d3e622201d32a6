//! rollbackd killed for real (`kill -9`) in the middle of a rollback, at each
//! boundary, then started again: a real Prometheus, the fake service and its
//! deploy list behind the `command` provider, whose gates stop rollbackd at
//! an exact point (`support/gated_platform.py`). Each asserts what the
//! platform received (exactly one rollback call in total), the history
//! (one record for the incident, with the right result), the breaker, and
//! that no command rollbackd started outlived it.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::fake_hooks::FakeHooks;
use support::postgres::{alembic_upgrade, database_toml};
use support::{postgres_at, processes_with_env, wait_for, FakeService, Prometheus, Watcher};

/// The environment variable every rollbackd here is started with; whatever
/// it starts inherits it, so a process holding it after a `kill -9` is a
/// survivor.
const MARKER: &str = "CRASH_TEST_MARKER";

struct Crash {
    fake: FakeService,
    _prom: Prometheus,
    dir: tempfile::TempDir,
    config: String,
    marker: String,
    env: Vec<(String, String)>,
}

impl Crash {
    /// [`Crash::setup`] with no extra sections and no wait before verifying.
    fn new() -> Crash {
        Crash::setup("", "0s")
    }

    /// The service live at dep-1 (healthy), rollbackd's config with `extra`
    /// sections and verification's `initial_wait`.
    fn setup(extra: &str, initial_wait: &str) -> Crash {
        let fake = FakeService::start();
        let prom = Prometheus::start(&[fake.addr], None);
        prom.wait_for_scrape("app_deployment_info");
        let dir = tempfile::tempdir().unwrap();
        support::write_rules(dir.path(), &support::high_error_rate_rules("auto"));
        let config = format!(
            "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\n[service]\nname = \"demo\"\nbase_url = \"{}\"\n\n\
             [watch]\nrule_paths = [\"rules\"]\n\n{}\n\
             [blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\ncoalesce = \"500ms\"\n\n\
             [verify]\ninitial_wait = \"{initial_wait}\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n\n{extra}",
            prom.url(),
            fake.url(),
            support::gated_provider_toml(dir.path(), &fake.url()),
        );
        let marker = format!("{}-{}", std::process::id(), support::free_port());
        Crash {
            fake,
            _prom: prom,
            dir,
            config,
            marker,
            env: Vec::new(),
        }
    }

    fn start(&self) -> Watcher {
        let mut env: Vec<(&str, &str)> = vec![(MARKER, &self.marker)];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Watcher::start_with_env(self.dir.path(), &self.config, &env)
    }

    /// Starts rollbackd again and waits (at most `timeout`) for a log line
    /// starting with `message`.
    fn restarted(&self, message: &str, timeout: Duration) -> Watcher {
        let w = self.start();
        w.wait_for_log(message, timeout);
        w
    }

    /// Holds `gate`, starts rollbackd, deploys the bad version and waits
    /// until the rollback's command stops at the gate.
    fn stopped_at(&self, gate: &str) -> Watcher {
        self.hold(gate);
        let w = self.start();
        self.bad_deploy(&w);
        self.wait_at(gate, &w);
        w
    }

    /// The CLI run to completion in the directory, on its rollbackd.toml.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        support::run_rollbackd(
            self.dir.path(),
            &[&["--config", "rollbackd.toml"][..], args].concat(),
            &[],
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn hold(&self, gate: &str) {
        std::fs::write(self.path(&format!("hold-{gate}")), "").unwrap();
    }

    fn release(&self, gate: &str) {
        let _ = std::fs::remove_file(self.path(&format!("hold-{gate}")));
    }

    /// Waits until a command stops at `gate`.
    fn wait_at(&self, gate: &str, w: &Watcher) {
        wait_for(
            &format!("a command waiting at {gate}"),
            Duration::from_secs(40),
            || {
                std::fs::metadata(self.path(&format!("waiting-{gate}")))
                    .ok()
                    .map(|_| ())
            },
        );
        assert!(
            w.logs_starting("rollback succeeded").is_empty(),
            "{}",
            w.dump()
        );
    }

    /// A deploy that answers 500 to half its requests.
    fn bad_deploy(&self, w: &Watcher) {
        wait_for("a first clean evaluation", Duration::from_secs(20), || {
            w.metric("rollbackd_rule_evaluations_total", &[("outcome", "ok")])
                .filter(|v| *v >= 1.0)
        });
        self.fake.deploy(|k| {
            k.version = "v2".into();
            k.error_ratio = 0.5;
        });
    }

    /// The journals left in the state directory.
    fn journals(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(self.path("state/runs")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
            .collect()
    }

    /// Waits for the journal to record `step`; the journal.
    fn wait_for_step(&self, step: &str) -> Value {
        wait_for(
            &format!("the journal to record {step}"),
            Duration::from_secs(40),
            || {
                self.journals().into_iter().find(|j| {
                    j["steps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s["step"] == step)
                })
            },
        )
    }

    fn history(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("state/history.json"))
            .ok()
            .map(|t| serde_json::from_str::<Value>(&t).unwrap()["events"].clone())
            .and_then(|e| e.as_array().cloned())
            .unwrap_or_default()
    }

    fn breaker(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("state/breaker.json")).unwrap())
            .unwrap()
    }

    /// `kill -9`, then: nothing rollbackd started is still running.
    fn kill9(&self, w: &mut Watcher) {
        w.kill9();
        wait_for(
            "every command rollbackd started to die with it",
            Duration::from_secs(5),
            || {
                processes_with_env(MARKER, &self.marker)
                    .is_empty()
                    .then_some(())
            },
        );
    }
}

fn steps(journal: &Value) -> Vec<String> {
    journal["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect()
}

/// The history's rollbacks and interrupted runs, with their result. A
/// refusal by the guards (the rule still firing for a moment after the
/// rollback, meeting the breaker) is not a rollback and is left out.
fn kinds(history: &[Value]) -> Vec<(String, bool)> {
    history
        .iter()
        .filter(|e| e["type"] != "blocked")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["success"] == true,
            )
        })
        .collect()
}

#[test]
fn killed_just_before_the_platform_call_the_run_is_interrupted_and_the_rules_roll_back_once() {
    let c = Crash::new();
    let mut w = c.stopped_at("rollback-before");
    let journal = c.wait_for_step("platform_call_started");
    assert_eq!(
        steps(&journal),
        ["started", "breaker_opened", "platform_call_started"]
    );
    c.kill9(&mut w);
    assert_eq!(
        c.fake.rollback_calls(),
        0,
        "the command died before the call"
    );
    assert!(c.history().is_empty());
    assert_eq!(c.breaker()["open"], true, "the dead run's breaker");

    c.release("rollback-before");
    let w = c.restarted("rollback succeeded", Duration::from_secs(40));
    let settled = w.logs_starting("recorded an interrupted rollback");
    assert_eq!(settled.len(), 1, "{}", w.dump());
    assert_eq!(settled[0]["rollback"], journal["id"]);
    let history = c.history();
    assert_eq!(
        kinds(&history),
        [("interrupted".into(), false), ("rollback".into(), true)],
        "{history:#?}"
    );
    assert_eq!(history[0]["id"], journal["id"]);
    assert_eq!(c.fake.rollback_calls(), 1);
    assert!(c.journals().is_empty());
    let breaker = c.breaker();
    assert_eq!(breaker["rollback_id"], history[1]["id"], "{breaker}");
    assert_eq!(breaker["failed"], false);
    assert_eq!(
        w.metric(
            "rollbackd_rollbacks_total",
            &[
                ("result", "interrupted"),
                ("trigger", "rule"),
                ("policy", "auto")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn killed_just_after_the_platform_call_the_run_is_resumed_and_recorded_once() {
    let mut c = Crash::new();
    let mut w = c.stopped_at("rollback-after");
    c.kill9(&mut w);
    assert_eq!(c.fake.rollback_calls(), 1, "the call reached the platform");
    let journal = &c.journals()[0];
    assert_eq!(steps(journal).last().unwrap(), "platform_call_started");
    assert!(
        c.history().is_empty(),
        "the answer, and the record, were lost"
    );

    c.release("rollback-after");
    // The platform lists what the call created 10 s late: the restart
    // waits for it (provider.list_settle) instead of calling again.
    std::fs::write(c.path("list-late"), "10").unwrap();
    c.env
        .push(("ROLLBACKD_PROVIDER__LIST_SETTLE".into(), "30s".into()));
    let w = c.restarted("rollback succeeded", Duration::from_secs(60));
    assert_eq!(
        w.logs_starting("resuming a rollback rollbackd was stopped during")
            .len(),
        1
    );
    // The service is healthy again: nothing more happens while the rule is
    // evaluated 3 more times and reads inactive.
    let runs = w.logs_starting("rollback started").len();
    w.wait_more_evaluations("HighErrorRate", 3, "inactive", Duration::from_secs(30));
    assert_eq!(c.fake.rollback_calls(), 1, "{}", w.dump());
    assert_eq!(
        w.logs_starting("rollback started").len(),
        runs,
        "{}",
        w.dump()
    );
    let history = c.history();
    assert_eq!(kinds(&history), [("rollback".into(), true)], "{history:#?}");
    let event = &history[0];
    assert_eq!(event["id"], journal["id"]);
    assert_eq!(event["resumed"], true);
    assert_eq!(event["resumed_at_phase"], "application");
    assert_eq!(event["created_deployment_id"], "dep-3");
    assert_eq!(event["target_deployment_id"], "dep-1");
    assert!(c.journals().is_empty());
    let breaker = c.breaker();
    assert!(
        breaker["settled_at"].is_string() && breaker["failed"] == false,
        "{breaker}"
    );
    // `rollbackd history` says so.
    let (code, out, err) = c.cli(&["history"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed"), "{out}");
}

#[test]
fn killed_during_verification_only_verification_runs_again() {
    let c = Crash::setup("", "2s");
    let mut w = c.start();
    c.bad_deploy(&w);
    c.wait_for_step("verification_started");
    // The health phases fail from now until rollbackd is killed.
    c.fake.set(|k| {
        k.health_status = 503;
        k.health_overrides.insert("/health".into(), 200);
    });
    // Killed once the run has seen them fail: two attempts of the quick
    // phase (/ and /health each time, / answering 503) after the change.
    let quick = || {
        w.metric(
            "rollbackd_health_check_duration_seconds_count",
            &[("phase", "quick")],
        )
        .unwrap_or(0.0)
    };
    let before = quick();
    wait_for(
        "two failing attempts of the quick phase",
        Duration::from_secs(30),
        || (quick() >= before + 4.0).then_some(()),
    );
    c.kill9(&mut w);
    assert!(c.history().is_empty(), "{}", w.dump());
    c.fake.set(|k| {
        k.health_status = 200;
        k.health_overrides.clear();
    });

    let _w = c.restarted("rollback succeeded", Duration::from_secs(40));
    assert_eq!(c.fake.rollback_calls(), 1);
    let history = c.history();
    assert_eq!(kinds(&history), [("rollback".into(), true)], "{history:#?}");
    assert_eq!(history[0]["resumed_at_phase"], "verification");
    let phases: Vec<(&str, &str)> = history[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("pre_validation", "succeeded"),
            ("database", "skipped"),
            ("application", "succeeded"),
            ("verification", "succeeded"),
            ("post_rollback", "succeeded"),
        ]
    );
}

#[test]
fn killed_after_the_backup_and_the_breaker_nothing_reached_production_and_the_breaker_is_given_back(
) {
    let pg = postgres_at("b");
    let c = Crash::setup(&database_toml(&pg, "backup_required = true"), "0s");
    let mut w = c.stopped_at("list-in-run");
    let journal = c.wait_for_step("breaker_opened");
    assert_eq!(
        steps(&journal),
        ["started", "backup_taken", "breaker_opened"]
    );
    c.kill9(&mut w);
    c.release("list-in-run");
    let backups = || {
        std::fs::read_dir(c.path("state/backups"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".dump")
            })
            .count()
    };
    assert_eq!(backups(), 1);

    let _w = c.restarted("rollback succeeded", Duration::from_secs(60));
    assert_eq!(c.fake.rollback_calls(), 1);
    let history = c.history();
    assert_eq!(
        kinds(&history),
        [("interrupted".into(), false), ("rollback".into(), true)],
        "{history:#?}"
    );
    // The interrupted record keeps its backup.
    assert!(history[0]["backup"]["path"].is_string(), "{:#}", history[0]);
    assert_eq!(backups(), 2);
}

#[test]
fn killed_during_a_downgrade_the_run_fails_with_what_is_unknown_the_breaker_stays_open_and_pages() {
    let pg = postgres_at("b");
    let hooks = FakeHooks::start();
    let notifier = format!(
        "[[notifiers]]\ntype = \"pagerduty\"\nrouting_key = \"crash-test\"\nurl = \"{}\"\n",
        hooks.url("pagerduty/v2/enqueue")
    );
    let mut c = Crash::setup(
        &format!(
            "{}\n{notifier}",
            database_toml(&pg, "revision_check_interval = \"1h\"")
        ),
        "0s",
    );
    // The fixture's c -> b downgrade pauses in PostgreSQL this long.
    c.env.push(("FIXTURE_DOWNGRADE_PAUSE".into(), "8".into()));
    // What rollbackd recorded while dep-1 was live.
    support::seed_revisions(c.dir.path(), &[("dep-1", "b")]);
    let mut w = c.start();
    // The bad deploy migrated to c.
    alembic_upgrade(&pg.url(), "c");
    c.bad_deploy(&w);
    c.wait_for_step("downgrade_started");
    // Killed inside the downgrade: its migration sits in PostgreSQL's pause.
    wait_for(
        "the downgrade to reach its pause in PostgreSQL",
        Duration::from_secs(30),
        || {
            let n = pg.psql(
                "app",
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                 AND state = 'active' AND query LIKE 'SELECT pg_sleep(%'",
            );
            (n.trim().parse::<u32>().unwrap_or(0) > 0).then_some(())
        },
    );
    c.kill9(&mut w);
    assert_eq!(c.fake.rollback_calls(), 0);

    let w = c.restarted("rollback failed", Duration::from_secs(40));
    let history = c.history();
    assert_eq!(
        kinds(&history),
        [("rollback".into(), false)],
        "{history:#?}"
    );
    let database = history[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "database")
        .unwrap()
        .clone();
    assert_eq!(database["reason"], "outcome_unknown", "{database:#}");
    let detail = database["detail"].as_str().unwrap();
    assert!(
        detail.contains("killed during the downgrade c -> b")
            && detail.contains("the database now reports revision c"),
        "{detail}"
    );
    assert_eq!(c.fake.rollback_calls(), 0, "the application was left alone");
    let breaker = c.breaker();
    assert_eq!(
        (breaker["open"].clone(), breaker["failed"].clone()),
        (Value::Bool(true), Value::Bool(true)),
        "{breaker}"
    );
    wait_for("PagerDuty to be paged", Duration::from_secs(10), || {
        hooks
            .received("pagerduty/v2/enqueue")
            .into_iter()
            .find(|e| e["event_action"] == "trigger")
    });
    // The next incident meets the OPEN breaker, as any failed rollback leaves it.
    let refused = wait_for(
        "the next firing to be refused by the breaker",
        Duration::from_secs(30),
        || {
            w.logs_starting("rollback refused by a guard")
                .into_iter()
                .find(|l| l["guard"] == "breaker")
        },
    );
    assert_eq!(c.fake.rollback_calls(), 0, "{refused}\n{}", w.dump());
}

#[test]
fn sigterm_finishes_the_step_in_progress_and_the_next_start_finishes_the_run() {
    let c = Crash::new();
    let mut w = c.stopped_at("status");
    // Asked to stop while following the rollback deployment: the command
    // is released once rollbackd has taken the stop; the phase finishes,
    // then rollbackd exits.
    w.sigterm();
    w.wait_for_log(
        "shutting down: waiting for the running rollback to finish",
        Duration::from_secs(30),
    );
    std::fs::remove_file(c.path("hold-status")).unwrap();
    let status = w.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", w.dump());
    assert_eq!(
        w.logs_starting("rollbackd is stopping").len(),
        1,
        "{}",
        w.dump()
    );
    let journal = &c.journals()[0];
    assert_eq!(steps(journal).last().unwrap(), "stopped");
    assert!(c.history().is_empty());
    assert_eq!(c.fake.rollback_calls(), 1);

    let _w = c.restarted("rollback succeeded", Duration::from_secs(40));
    assert_eq!(c.fake.rollback_calls(), 1);
    let history = c.history();
    assert_eq!(kinds(&history), [("rollback".into(), true)], "{history:#?}");
    assert_eq!(history[0]["resumed_at_phase"], "verification");
}

#[test]
fn a_manual_rollback_after_a_crash_settles_the_lost_run_first_and_never_targets_the_bad_deploy() {
    let c = Crash::new();
    let mut w = c.stopped_at("rollback-after");
    c.kill9(&mut w);
    c.release("rollback-after");
    assert_eq!(c.fake.rollback_calls(), 1);
    // The redeploy reads DEPLOYING for its first second: wait until it
    // reads SUCCESS.
    wait_for(
        "the redeploy to read SUCCESS",
        Duration::from_secs(10),
        || {
            let (_, body) = support::http_get(&format!("{}/deployments", c.fake.url())).ok()?;
            let list: Value = serde_json::from_str(&body).ok()?;
            (list[0]["status"] == "SUCCESS").then_some(())
        },
    );

    let (code, out, err) = c.cli(&["rollback", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("left unfinished by a stopped rollbackd"),
        "{out}"
    );
    // The lost run is settled (followed, verified, recorded) and nothing else is done.
    let (code, out, err) = c.cli(&["rollback", "--yes", "--reason", "on-call"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("was resumed and succeeded") && err.contains("nothing else was done"),
        "{out}{err}"
    );
    assert_eq!(c.fake.rollback_calls(), 1);
    let history = c.history();
    assert_eq!(kinds(&history), [("rollback".into(), true)], "{history:#?}");
    assert_eq!(history[0]["from_deployment_id"], "dep-2");
    // dep-2, the bad deploy, is never a target now that the history knows.
    let (code, out, err) = c.cli(&["rollback", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("roll back to: dep-1 ("), "{out}");
}

#[test]
fn what_a_rollback_command_started_dies_with_a_killed_rollbackd_and_never_acts() {
    let mut c = Crash::new();
    // A `rollback` command that is a shell running the real work as its own
    // child: the parent-death signal reaches the shell, not its child.
    let script = support::gated_platform();
    let wrapped = format!(
        "rollback = [\"sh\", \"-c\", \"python3 \\\"$0\\\" \\\"$1\\\" \\\"$2\\\" rollback; true\", \"{}\", \"{}\", \"{}\"]",
        script.display(),
        c.dir.path().display(),
        c.fake.url()
    );
    c.config = c
        .config
        .lines()
        .map(|l| {
            if l.starts_with("rollback = ") {
                wrapped.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut w = c.stopped_at("rollback-before");
    let id = c.journals()[0]["id"].as_str().unwrap().to_string();
    assert!(
        processes_with_env("ROLLBACKD_RUN_ID", &id).len() >= 2,
        "the shell and its child run"
    );
    w.kill9();
    // The command's keeper kills the whole group when rollbackd dies: the
    // shell's child goes too, without waiting for a restart.
    support::wait_for(
        "every process of the run to die with rollbackd",
        Duration::from_secs(10),
        || {
            processes_with_env("ROLLBACKD_RUN_ID", &id)
                .is_empty()
                .then_some(())
        },
    );
    // Released now, nothing is left to make the call.
    c.release("rollback-before");
    assert_eq!(c.fake.rollback_calls(), 0);

    let w = c.restarted("recorded an interrupted rollback", Duration::from_secs(20));
    w.wait_for_log("rollback succeeded", Duration::from_secs(40));
    assert_eq!(c.fake.rollback_calls(), 1, "{}", w.dump());
    assert_eq!(
        kinds(&c.history()),
        [("interrupted".into(), false), ("rollback".into(), true)]
    );
}

#[test]
fn a_journal_that_turns_unreadable_under_watch_is_said_at_once_and_stops_rollbacks_until_quarantined(
) {
    // Once: a corrupt journal that appeared under a running `watch` was
    // ignored (no log, /healthz green), the next rollback went ahead, and
    // the restart then refused to start at all.
    let c = Crash::new();
    let mut w = c.start();
    std::fs::create_dir_all(c.path("state/runs")).unwrap();
    std::fs::write(
        c.path("state/runs/rb-torn.json"),
        "{\"version\": 1, \"id\": \"rb-to",
    )
    .unwrap();
    w.wait_for_log("a run journal cannot be read", Duration::from_secs(15));
    assert_eq!(w.metric("rollbackd_journals_unreadable", &[]), Some(1.0));
    // Ready once the rules' first evaluation is in (it may trail the log
    // line on a busy machine), and saying why nothing can roll back.
    let body = support::wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        match support::http_get(&format!("{}/readyz", w.url())) {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    });
    assert!(body.contains("rb-torn.json"), "{body}");
    // A bad deploy: detected, never acted on.
    c.bad_deploy(&w);
    w.wait_for_log("rollback failed", Duration::from_secs(30));
    assert_eq!(c.fake.rollback_calls(), 0, "{}", w.dump());
    let refused = w.logs_starting("rollback failed");
    let said = refused[0].to_string();
    assert!(
        said.contains("rb-torn.json") && said.contains("rollbackd state quarantine ID"),
        "{said}"
    );
    // A restart is no loop: it watches and says why it will not roll back.
    c.kill9(&mut w);
    let w = c.restarted("a run journal cannot be read", Duration::from_secs(15));
    let (code, out, err) = c.cli(&["state", "journals"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("rb-torn  UNREADABLE"), "{out}");
    assert!(out.contains("rollbackd state quarantine ID"), "{out}");
    let (code, out, err) = c.cli(&["state", "quarantine", "rb-torn"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved to"), "{out}");
    assert!(!c.path("state/runs/rb-torn.json").exists());
    let kept: Vec<_> = std::fs::read_dir(c.path("state/quarantine"))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read_to_string(kept[0].path()).unwrap(),
        "{\"version\": 1, \"id\": \"rb-to",
        "kept whole"
    );
    let (code, out, _) = c.cli(&["state", "journals"]);
    assert_eq!((code, out.trim()), (0, "no unfinished rollbacks"));
    let (code, _, err) = c.cli(&["state", "quarantine", "rb-nothing"]);
    assert_eq!(code, 1);
    assert!(err.contains("rb-nothing"), "{err}");
    w.wait_for_log("the run journals read again", Duration::from_secs(15));
    assert_eq!(w.metric("rollbackd_journals_unreadable", &[]), Some(0.0));
}
