//! rollbackd's engine benchmark: `cargo bench --bench engine`.
//!
//! 1. Health verification: wall time of the four seed phases against the sum
//!    of their checks' latencies, with every endpoint answering in 200 ms.
//!    Checks inside a phase run concurrently, so the wall time should be the
//!    sum of each phase's slowest check (4 x 200 ms), not of all eight.
//! 2. Engine overhead: full rollbacks against the fake Railway API and the
//!    fake service; total time minus the time spent waiting on the platform,
//!    the service and polling pauses. Target: under 100 ms.
//!
//! Everything runs on loopback in this process.

#[path = "../tests/support/fake_railway.rs"]
mod fake_railway;
#[path = "../tests/support/fake_service.rs"]
mod fake_service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollbackd::config::Config;
use rollbackd::engine::{RollbackRequest, Trigger};
use rollbackd::provider::config::{ProviderConfig, RailwayConfig};
use rollbackd::rules::Policy;
use rollbackd::secret::Secret;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    rollbackd::install_crypto_provider();
    let service = fake_service::FakeService::start();
    service.set(|k| k.health_delay_ms = 200);
    let config = Config::default();
    let client = rollbackd::verify::client().unwrap();
    let mut walls = Vec::new();
    let mut sums = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let v = rollbackd::verify::verify(
            &client,
            &service.url(),
            &config.verify,
            Duration::ZERO,
            Duration::from_secs(60),
            &|_| {},
        )
        .await;
        assert!(v.passed);
        walls.push(started.elapsed());
        sums.push(v.sum_of_latencies);
    }
    let wall = median(&mut walls);
    let sum = median(&mut sums);
    println!("health verification (8 checks in 4 phases, each check 200 ms), median of 5:");
    println!("  wall time            {:7.1} ms", ms(wall));
    println!("  sum of check latency {:7.1} ms", ms(sum));
    println!("  wall / sum           {:7.2}   (concurrent phases: about 0.5 expected; 1.0 would mean serial)", wall.as_secs_f64() / sum.as_secs_f64());

    service.set(|k| k.health_delay_ms = 0);
    let mut overheads = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..10 {
        let railway = fake_railway::FakeRailway::start();
        railway.set(|k| k.rollback_takes = Duration::from_millis(50));
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.service.base_url = Some(service.url());
        config.engine.state_dir = dir.path().to_path_buf();
        config.engine.poll_interval = Duration::from_millis(50);
        config.verify.initial_wait = Duration::ZERO;
        config.provider = Some(ProviderConfig::Railway(RailwayConfig {
            endpoint: railway.endpoint(),
            token: Some(Secret::new(fake_railway::TOKEN)),
            project_id: Some("p1".into()),
            service_id: Some("s1".into()),
            ..RailwayConfig::default()
        }));
        let engine = Arc::new(rollbackd::cli::wiring::engine(&config).unwrap());
        let report = engine
            .run(
                RollbackRequest {
                    trigger: Trigger::Manual,
                    policy: Policy::Auto,
                    reason: "benchmark".into(),
                    deployment_id: None,
                    skip_db: true,
                    base_url: None,
                    pending_id: None,
                },
                &|_| {},
            )
            .await;
        assert!(report.success, "{:?}", report.error);
        totals.push(report.duration);
        overheads.push(report.duration.saturating_sub(report.waiting));
    }
    let total = median(&mut totals);
    let overhead = median(&mut overheads);
    let worst = *overheads.iter().max().unwrap();
    println!("full rollback against the fake Railway API and fake service, median of 10:");
    println!("  total                {:7.1} ms", ms(total));
    println!(
        "  waiting (platform, service, polls) {:7.1} ms",
        ms(total - overhead)
    );
    println!(
        "  engine overhead      {:7.1} ms (worst {:.1} ms; target < 100 ms: {})",
        ms(overhead),
        ms(worst),
        if worst < Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
