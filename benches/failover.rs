//! Failover beside several replicas: `cargo bench --bench failover`.
//!
//! Three `rollbackd watch` share one real PostgreSQL (`[state] backend =
//! "postgres"`, default `leader_check`); five times, the leader is killed
//! with `kill -9` and the time until another replica says it leads (`GET
//! /api/v1/leader`, asked every 20 ms) is measured; the killed one is then
//! started again. Goal: median under 5 s. Everything runs on loopback.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::{wait_for, FakeService, Prometheus, Watcher};

fn main() {
    let pg = Postgres::start();
    let fake = FakeService::start();
    let prom = Prometheus::start(&[fake.addr], None);
    let config = format!(
        "[prometheus]\nurl = \"{}\"\n\n[service]\nbase_url = \"{}\"\n\n[watch]\nrule_paths = [\"rules\"]\n\n\
         [provider]\ntype = \"command\"\nlist = [\"true\"]\nstatus = [\"true\"]\nrollback = [\"true\"]\n\n\
         [state]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        prom.url(),
        fake.url(),
        pg.url()
    );
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("rules")).unwrap();
            dir
        })
        .collect();
    let mut replicas: Vec<Option<Watcher>> = dirs
        .iter()
        .map(|d| Some(Watcher::start(d.path(), &config)))
        .collect();
    let leads = |w: &Watcher| {
        support::http_get(&format!("{}/api/v1/leader", w.url()))
            .is_ok_and(|(status, body)| status == 200 && body.contains("\"leader\":true"))
    };
    let mut times = Vec::new();
    for round in 0..5 {
        let leader = wait_for("a leader", Duration::from_secs(30), || {
            replicas.iter().position(|w| w.as_ref().is_some_and(&leads))
        });
        let killed = Instant::now();
        replicas[leader].as_mut().unwrap().kill9();
        replicas[leader] = None;
        let deadline = killed + Duration::from_secs(30);
        loop {
            if replicas.iter().flatten().any(&leads) {
                break;
            }
            assert!(Instant::now() < deadline, "no replica took over in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = killed.elapsed();
        println!(
            "round {}: a new leader {:.2} s after kill -9",
            round + 1,
            took.as_secs_f64()
        );
        times.push(took);
        replicas[leader] = Some(Watcher::start(dirs[leader].path(), &config));
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "failover (kill -9 of the leader -> another leads), median of 5: {:.2} s (goal <= 5 s: {})",
        median.as_secs_f64(),
        if median <= Duration::from_secs(5) {
            "met"
        } else {
            "MISSED"
        }
    );
}
