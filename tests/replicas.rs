//! rollbackd beside every replica: three `rollbackd watch` sharing one real
//! PostgreSQL (`[state] backend = "postgres"`), one real Prometheus, the
//! fake service and its deploy list behind the `command` provider. Only the
//! leader acts: one bad deploy makes exactly one platform call, whatever
//! replica is asked shows the same history and breaker, and when the leader
//! is killed (idle or mid-rollback) another takes over and finishes.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::postgres::Postgres;
use support::{wait_for, FakeService, Prometheus, Watcher};

struct Replicas {
    fake: FakeService,
    pg: Postgres,
    _prom: Prometheus,
    /// The gates of the deploy list's commands.
    gates: tempfile::TempDir,
    dirs: Vec<tempfile::TempDir>,
    config: String,
}

impl Replicas {
    fn setup() -> Replicas {
        Self::with_policy("auto")
    }

    /// Waits until no replica leads (PostgreSQL is gone).
    fn nobody_leads(&self, replicas: &[Option<Watcher>]) {
        wait_for(
            "every replica to stop leading",
            Duration::from_secs(20),
            || {
                replicas
                    .iter()
                    .flatten()
                    .all(|w| w.api("/api/v1/leader")["leader"] == false)
                    .then_some(())
            },
        );
    }

    fn with_policy(policy: &str) -> Replicas {
        let pg = Postgres::start();
        let fake = FakeService::start();
        let prom = Prometheus::start(&[fake.addr], None);
        prom.wait_for_scrape("app_deployment_info");
        let gates = tempfile::tempdir().unwrap();
        let config = format!(
            "[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\n[service]\nname = \"demo\"\nbase_url = \"{}\"\n\n\
             [watch]\nrule_paths = [\"rules\"]\n\n{}\n\
             [blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\ncoalesce = \"500ms\"\ncooldown = \"1s\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n\n\
             [state]\nbackend = \"postgres\"\nurl = \"{}\"\nleader_check = \"500ms\"\n",
            prom.url(),
            fake.url(),
            support::gated_provider_toml(gates.path(), &fake.url()),
            pg.url(),
        );
        let dirs = (0..3)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                std::fs::create_dir(dir.path().join("rules")).unwrap();
                std::fs::write(
                    dir.path().join("rules/http.yml"),
                    support::high_error_rate_rules(policy),
                )
                .unwrap();
                dir
            })
            .collect();
        Replicas {
            fake,
            pg,
            _prom: prom,
            gates,
            dirs,
            config,
        }
    }

    fn start(&self, i: usize) -> Watcher {
        Watcher::start(self.dirs[i].path(), &self.config)
    }

    /// The one replica that leads, once exactly one does.
    fn leader(&self, replicas: &[Option<Watcher>]) -> usize {
        wait_for("exactly one leader", Duration::from_secs(20), || {
            let leading: Vec<usize> = replicas
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    w.as_ref()
                        .is_some_and(|w| w.api("/api/v1/leader")["leader"] == true)
                })
                .map(|(i, _)| i)
                .collect();
            (leading.len() == 1).then(|| leading[0])
        })
    }

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

    /// `rollbackd history --json` run in replica `i`'s directory.
    fn history(&self, i: usize) -> Vec<Value> {
        let (code, out, err) = support::run_rollbackd(
            self.dirs[i].path(),
            &["--config", "rollbackd.toml", "history", "--json"],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        let events: Vec<Value> = serde_json::from_str(&out).unwrap();
        events
            .into_iter()
            .filter(|e| e["type"] != "blocked")
            .collect()
    }
}

#[test]
fn three_replicas_roll_back_once_and_agree_and_a_killed_leader_is_replaced() {
    let r = Replicas::setup();
    // All three start at once on the empty database.
    let mut replicas: Vec<Option<Watcher>> = std::thread::scope(|s| {
        let r = &r;
        let started: Vec<_> = (0..3).map(|i| s.spawn(move || r.start(i))).collect();
        started
            .into_iter()
            .map(|h| Some(h.join().unwrap()))
            .collect()
    });
    for w in replicas.iter().flatten() {
        assert!(w.logs_starting("cannot").is_empty(), "{}", w.dump());
    }
    let first = r.leader(&replicas);
    let schemas = r.pg.psql(
        "app",
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'rollbackd'",
    );
    assert_eq!(
        schemas, "3",
        "the tables were made once, by whoever came first"
    );

    r.bad_deploy(replicas[first].as_ref().unwrap());
    let leader = replicas[first].as_ref().unwrap();
    leader.wait_for_log("rollback succeeded", Duration::from_secs(40));
    settled(&replicas, leader);
    assert_eq!(r.fake.rollback_calls(), 1, "{}", leader.dump());
    for (i, w) in replicas.iter().enumerate() {
        let w = w.as_ref().unwrap();
        if i != first {
            assert!(
                w.logs_starting("rollback succeeded").is_empty(),
                "a follower acted"
            );
        }
        let history = r.history(i);
        assert_eq!(history.len(), 1, "replica {i}: {history:#?}");
        assert_eq!(history[0]["type"], "rollback");
        assert_eq!(history[0]["success"], true);
        assert_eq!(w.api("/api/v1/breaker")["state"], "OPEN", "replica {i}");
    }

    // Failover while idle: kill -9 the leader; another takes over.
    let killed = Instant::now();
    replicas[first].as_mut().unwrap().kill9();
    replicas[first] = None;
    let second = r.leader(&replicas);
    let failover = killed.elapsed();
    println!(
        "failover after kill -9 of the leader: {:.2} s",
        failover.as_secs_f64()
    );
    assert_ne!(second, first);

    // The new leader handles the next bad deploy, once.
    let (code, _, err) = support::run_rollbackd(
        r.dirs[second].path(),
        &[
            "--config",
            "rollbackd.toml",
            "breaker",
            "reset",
            "--reason",
            "checked",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // Every replica reads the reset from the shared state; the new leader
    // can act and has evaluated the rule twice since, clear.
    for w in replicas.iter().flatten() {
        wait_for(
            "every replica to read the breaker CLOSED",
            Duration::from_secs(10),
            || (w.api("/api/v1/breaker")["state"] == "CLOSED").then_some(()),
        );
    }
    let new_leader = replicas[second].as_ref().unwrap();
    wait_for(
        "the new leader to be able to act",
        Duration::from_secs(10),
        || (new_leader.api("/api/v1/leader")["can_act"] == true).then_some(()),
    );
    new_leader.wait_more_evaluations("HighErrorRate", 2, "inactive", Duration::from_secs(30));
    r.bad_deploy(new_leader);
    new_leader.wait_for_log("rollback succeeded", Duration::from_secs(40));
    settled(&replicas, new_leader);
    assert_eq!(r.fake.rollback_calls(), 2);
    assert_eq!(r.history((second + 1) % 3).len(), 2);
}

#[test]
fn a_leader_killed_mid_rollback_is_finished_by_the_next_one_with_one_call() {
    let r = Replicas::setup();
    std::fs::write(r.gates.path().join("hold-rollback-after"), "").unwrap();
    let mut replicas: Vec<Option<Watcher>> = (0..3).map(|i| Some(r.start(i))).collect();
    let first = r.leader(&replicas);
    r.bad_deploy(replicas[first].as_ref().unwrap());
    wait_for(
        "the call to reach the platform",
        Duration::from_secs(40),
        || {
            std::fs::metadata(r.gates.path().join("waiting-rollback-after"))
                .ok()
                .map(|_| ())
        },
    );
    assert_eq!(r.fake.rollback_calls(), 1);
    replicas[first].as_mut().unwrap().kill9();
    replicas[first] = None;
    std::fs::remove_file(r.gates.path().join("hold-rollback-after")).unwrap();
    let second = r.leader(&replicas);
    let next = replicas[second].as_ref().unwrap();
    next.wait_for_log("rollback succeeded", Duration::from_secs(40));
    settled(&replicas, next);
    assert_eq!(r.fake.rollback_calls(), 1, "{}", next.dump());
    let history = r.history(second);
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["resumed"], true);
    assert_eq!(history[0]["success"], true);
}

#[test]
fn an_approval_sent_to_a_follower_is_carried_out_once_by_the_leader() {
    let r = Replicas::with_policy("confirm");
    let replicas: Vec<Option<Watcher>> = (0..3).map(|i| Some(r.start(i))).collect();
    let leader = r.leader(&replicas);
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    r.bad_deploy(replicas[leader].as_ref().unwrap());
    // Every replica shows the leader's pending confirmation.
    let id = wait_for(
        "a pending rollback on a follower",
        Duration::from_secs(40),
        || {
            replicas[follower].as_ref().unwrap().api("/api/v1/pending")[0]["id"]
                .as_str()
                .map(str::to_string)
        },
    );
    let approve = |i: usize| {
        support::http_post(
            &format!(
                "{}/api/v1/pending/{id}/approve",
                replicas[i].as_ref().unwrap().url()
            ),
            Some(support::API_TOKEN),
            None,
        )
    };
    // `rollbackd approve` run beside a follower: handed over, exit 0.
    let cli = |i: usize, args: &[&str]| {
        let mut all = vec!["--config", "rollbackd.toml"];
        all.extend_from_slice(args);
        support::run_rollbackd(r.dirs[i].path(), &all, &[])
    };
    let (code, out, err) = cli(follower, &["approve", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("approve {id}: handed to the leader (request req-")),
        "{out}"
    );
    let leading = replicas[leader].as_ref().unwrap();
    leading.wait_for_log("rollback succeeded", Duration::from_secs(40));
    // The same answer again, through the other follower: nobody waits for
    // it any more, so it is refused as the leader would refuse it.
    let (status, body) = approve(other);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no pending rollback"), "{body}");
    let (code, out, err) = cli(other, &["approve", "rb-nope"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no pending rollback rb-nope"), "{err}");
    assert_eq!(r.fake.rollback_calls(), 1, "{}", leading.dump());
    assert_eq!(
        leading
            .logs_starting("carried out an operator's answer handed over by a follower")
            .len(),
        1
    );
    assert_eq!(r.history(other).len(), 1);

    // A breaker reset sent to a follower is carried out by the leader.
    let (status, body) = support::http_post(
        &format!(
            "{}/api/v1/breaker/reset",
            replicas[follower].as_ref().unwrap().url()
        ),
        Some(support::API_TOKEN),
        Some(r#"{"reason": "checked by on-call"}"#),
    );
    assert_eq!(status, 202, "{body}");
    for w in replicas.iter().flatten() {
        wait_for(
            "every replica to read the breaker CLOSED",
            Duration::from_secs(10),
            || (w.api("/api/v1/breaker")["state"] == "CLOSED").then_some(()),
        );
    }
}

#[test]
fn a_state_directory_is_imported_into_postgres_once_and_refused_when_broken() {
    let r = Replicas::setup();
    let dir = r.dirs[0].path();
    let cli = |args: &[&str]| {
        let mut all = vec!["--config", "rollbackd.toml"];
        all.extend_from_slice(args);
        support::run_rollbackd(dir, &all, &[])
    };
    for d in &r.dirs {
        std::fs::write(d.path().join("rollbackd.toml"), &r.config).unwrap();
    }
    let old = dir.join("old-state");
    std::fs::create_dir_all(old.join("runs")).unwrap();
    let seed = r#"{"events":[{"type":"rollback","timestamp":"2025-01-15T10:30:00Z","target_deployment_id":"abc123","git_sha":"1a2b3c4","git_branch":"main","trigger":"manual","reason":"bad deploy","duration_seconds":285.3,"success":true}],"last_known_good":{"deployment_id":"abc123","timestamp":"2025-01-15T10:35:00Z"}}"#;
    std::fs::write(old.join("history.json"), seed).unwrap();
    std::fs::write(old.join("runs/rb-1.json"), "{not json").unwrap();
    let (code, out, err) = cli(&["state", "import", "--from", "old-state"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("runs/rb-1.json is not valid JSON; nothing was copied"),
        "{err}"
    );
    let (code, out, _) = cli(&["history", "--json"]);
    assert_eq!((code, out.trim()), (0, "[]"), "nothing was copied");

    std::fs::remove_file(old.join("runs/rb-1.json")).unwrap();
    let (code, out, err) = cli(&["state", "import", "--from", "old-state"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 documents copied"), "{out}");
    // Every replica reads it, in the seed's format.
    let history = r.history(2);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["target_deployment_id"], "abc123");
    let (code, _, err) = cli(&["state", "import", "--from", "old-state"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already holds a history") && err.contains("--force"),
        "{err}"
    );
    let (code, _, err) = cli(&["state", "import", "--from", "nowhere"]);
    assert_eq!(code, 2);
    assert!(err.contains("--from nowhere: not a directory"), "{err}");
}

#[test]
fn postgres_restarted_idle_and_while_a_rule_fires_leadership_returns_and_acts_once() {
    let mut r = Replicas::setup();
    let replicas: Vec<Option<Watcher>> = (0..3).map(|i| Some(r.start(i))).collect();
    r.leader(&replicas);
    // Idle: everyone stops acting, then one leads again.
    r.pg.stop();
    r.nobody_leads(&replicas);
    r.pg.start_again();
    let leader = r.leader(&replicas);

    // While a rule fires: nobody can act until PostgreSQL is back, then the
    // new leader acts on it, once.
    r.pg.stop();
    r.nobody_leads(&replicas);
    r.bad_deploy(replicas[leader].as_ref().unwrap());
    replicas[leader].as_ref().unwrap().wait_for_state(
        "HighErrorRate",
        "firing",
        Duration::from_secs(30),
    );
    // Said as it is: nobody leads, so no "the leader acts on it".
    replicas[leader].as_ref().unwrap().wait_for_log(
        "rollback trigger: no replica can act now",
        Duration::from_secs(10),
    );
    // Said where people and probes look: /readyz stays 200 (as a sidecar's
    // readiness it would take the service's pod out of its load balancer)
    // and says that nothing can roll back; the API and a metric say so too.
    for w in replicas.iter().flatten() {
        let (code, body) = support::http_get(&format!("{}/readyz", w.url())).unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("no replica can roll back now"), "{body}");
        let leader = w.api("/api/v1/leader");
        assert_eq!(leader["can_act"], false, "{leader}");
        assert_eq!(leader["state_reachable"], false, "{leader}");
        assert_eq!(w.metric("rollbackd_state_reachable", &[]), Some(0.0));
    }
    // Every replica has taken the firing and decided: none can act.
    for w in replicas.iter().flatten() {
        w.wait_for_log("rollback trigger: ", Duration::from_secs(30));
        assert!(
            w.logs_starting("rollback started").is_empty(),
            "{}",
            w.dump()
        );
    }
    assert_eq!(
        r.fake.rollback_calls(),
        0,
        "nobody acted without the shared state"
    );
    r.pg.start_again();
    let leader = r.leader(&replicas);
    let w = replicas[leader].as_ref().unwrap();
    assert_eq!(w.api("/api/v1/leader")["can_act"], true);
    let (_, body) = support::http_get(&format!("{}/readyz", w.url())).unwrap();
    assert!(
        body.contains("this replica leads and can roll back"),
        "{body}"
    );
    replicas[leader]
        .as_ref()
        .unwrap()
        .wait_for_log("rollback succeeded", Duration::from_secs(40));
    settled(&replicas, replicas[leader].as_ref().unwrap());
    assert_eq!(r.fake.rollback_calls(), 1);
    assert_eq!(r.history(leader).len(), 1);
}

#[test]
fn a_leader_whose_epoch_moved_on_writes_nothing_and_steps_down() {
    use rollbackd::state::postgres::PgStore;
    use rollbackd::state::StateStore;
    let pg = Postgres::start();
    let database = rollbackd::db::Database::new(rollbackd::secret::Secret::new(pg.url())).unwrap();
    let daemon = PgStore::new(database.clone(), "rollbackd");
    // Checked every 2 s: the write below, a few milliseconds after the
    // epoch moves, meets the fence before the check notices (almost always).
    let leadership = daemon.elect("test", Duration::from_secs(2), Some("service:test:"));
    wait_for("leadership", Duration::from_secs(10), || {
        leadership.is_leader().then_some(())
    });
    daemon.write("runs/rb-1.json", b"{}").unwrap();
    let epoch = leadership.epoch();
    // Leadership moves on (another replica took over, or an operator).
    pg.psql("app", "UPDATE rollbackd.leader SET epoch = epoch + 1");
    let err = daemon
        .write("runs/rb-1.json", b"{\"step\": 2}")
        .unwrap_err();
    // Refused either way: by the fence in the write itself, or, should the
    // leadership check have seen the new epoch first, as a non-leader.
    let said = err.to_string();
    assert!(
        said.contains("fenced") || said.contains("not the leader"),
        "{said}"
    );
    assert_eq!(
        daemon.read("runs/rb-1.json").unwrap(),
        b"{}",
        "nothing written"
    );
    // It steps down (its session, and so the lock, go) and, alone, takes
    // leadership again under a new epoch; then it writes again.
    wait_for(
        "leadership under a new epoch",
        Duration::from_secs(20),
        || (leadership.is_leader() && leadership.epoch() > epoch + 1).then_some(()),
    );
    daemon.write("runs/rb-1.json", b"{}").unwrap();
    // The CLI (not elected) is not fenced: it holds the rollback lock instead.
    let cli = PgStore::new(database, "rollbackd");
    cli.write("runs/rb-1.json", b"{}").unwrap();
    let held = cli.try_lock().unwrap().expect("the rollback lock is free");
    assert!(daemon.try_lock().unwrap().is_none(), "one holder at a time");
    drop(held);
    let held = wait_for("the lock to be free again", Duration::from_secs(5), || {
        cli.try_lock().unwrap()
    });
    // A run whose lock session PostgreSQL ended (a restart, an idle-session
    // timeout) journals, and so does, nothing more.
    cli.write("runs/rb-2.json", b"{}").unwrap();
    pg.release_advisory_locks();
    let err = cli.write("runs/rb-2.json", b"{}").unwrap_err();
    assert!(
        err.to_string().contains("the rollback lock was lost"),
        "{err}"
    );
    drop(held);
}

#[test]
fn two_replicas_of_one_service_under_different_schemas_never_both_lead() {
    // Once: `state.schema` differed between two replicas of one service;
    // both led and both started a rollback for one incident.
    use rollbackd::state::postgres::PgStore;
    let pg = Postgres::start();
    let database = rollbackd::db::Database::new(rollbackd::secret::Secret::new(pg.url())).unwrap();
    let first = PgStore::new(database.clone(), "rollbackd");
    let a = first.elect(
        "replica-a",
        Duration::from_millis(200),
        Some("service:shop:prod"),
    );
    wait_for("the first replica to lead", Duration::from_secs(10), || {
        a.is_leader().then_some(())
    });
    let second = PgStore::new(database.clone(), "rollbackd_other");
    let b = second.elect(
        "replica-b",
        Duration::from_millis(200),
        Some("service:shop:prod"),
    );
    let holder = wait_for("the conflict to be seen", Duration::from_secs(10), || {
        b.conflict()
    });
    assert!(
        holder.contains("rollbackd replica-a (state.schema rollbackd)"),
        "{holder}"
    );
    assert!(!b.is_leader() && a.is_leader());
    // Another service under that other schema leads at once.
    let third = PgStore::new(database.clone(), "rollbackd_third");
    let c = third.elect(
        "replica-c",
        Duration::from_millis(200),
        Some("service:billing:prod"),
    );
    wait_for(
        "another service's replica to lead",
        Duration::from_secs(10),
        || c.is_leader().then_some(()),
    );
    assert!(c.conflict().is_none());
    // When the first leader's session goes, the second leads.
    drop(first);
    pg.psql(
        "app",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'rollbackd replica-a%'",
    );
    wait_for(
        "the second replica to lead",
        Duration::from_secs(10),
        || (b.is_leader() && b.conflict().is_none()).then_some(()),
    );
}

#[test]
fn a_postgres_that_hangs_never_holds_up_healthz_the_api_or_the_rules() {
    // Once the state store blocked the daemon's only runtime thread for as
    // long as each PostgreSQL call took (up to 5 s): /healthz, the API and
    // the rule groups all waited on a hung database.
    let mut r = Replicas::setup();
    let replicas = vec![Some(r.start(0))];
    r.leader(&replicas);
    let w = replicas[0].as_ref().unwrap();
    let evaluations = || {
        w.metric("rollbackd_rule_evaluations_total", &[("outcome", "ok")])
            .unwrap_or(0.0)
    };
    wait_for("a first evaluation", Duration::from_secs(20), || {
        (evaluations() >= 1.0).then_some(())
    });
    r.pg.pause();
    let before = evaluations();
    let started = Instant::now();
    let (mut slowest, mut asked) = (Duration::ZERO, 0);
    // Longer than a state call's deadline (5 s): the leader's upkeep, the
    // election and the pending list all hang on it meanwhile.
    while started.elapsed() < Duration::from_secs(8) {
        for path in ["/healthz", "/api/v1/rules", "/api/v1/leader", "/metrics"] {
            let asked_at = Instant::now();
            let answer = support::http_get(&format!("{}{path}", w.url()));
            let took = asked_at.elapsed();
            slowest = slowest.max(took);
            asked += 1;
            let (code, body) = answer.unwrap_or_else(|e| panic!("{path} after {took:?}: {e}"));
            assert_eq!(code, 200, "{path}: {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = evaluations();
    r.pg.resume();
    eprintln!("while PostgreSQL hung for 8 s: {asked} answers, the slowest in {slowest:?}");
    // The goal is 100 ms (see the note); a loaded CI machine gets 1 s. A
    // blocked runtime takes seconds.
    assert!(
        slowest < Duration::from_secs(1),
        "an answer took {slowest:?} while PostgreSQL hung"
    );
    assert!(
        after >= before + 4.0,
        "the rules went on being evaluated (1 s group): {before} -> {after}"
    );
    // And it leads again once PostgreSQL answers.
    r.leader(&replicas);
}

/// After a rollback succeeded on `acting`: every live replica evaluates
/// the rule 3 more times and reads it inactive (the service is healthy
/// again), and `acting` starts no other run meanwhile. A second platform
/// call would need a rule to fire again or a replica to act on an earlier
/// firing: both had their chance.
fn settled(replicas: &[Option<Watcher>], acting: &Watcher) {
    let runs = acting.logs_starting("rollback started").len();
    for w in replicas.iter().flatten() {
        w.wait_more_evaluations("HighErrorRate", 3, "inactive", Duration::from_secs(30));
    }
    assert_eq!(
        acting.logs_starting("rollback started").len(),
        runs,
        "{}",
        acting.dump()
    );
}
