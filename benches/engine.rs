//! rollbackd's engine benchmark: `cargo bench --bench engine`.
//!
//! 1. Health verification: wall time of the four seed phases against the sum
//!    of their checks' latencies, with every endpoint answering in 200 ms.
//!    Checks inside a phase run concurrently, so the wall time should be the
//!    sum of each phase's slowest check (4 x 200 ms), not of all eight.
//! 2. Engine overhead: full rollbacks against the fake Railway API and the
//!    fake service; total time minus the time spent waiting on the platform,
//!    the service and polling pauses. Target: under 100 ms.
//! 3. State-store overhead: the same rollbacks with the state in a real
//!    PostgreSQL (`[state] backend = "postgres"`, a throwaway cluster) against
//!    the state directory, measured in one run. Target: under 50 ms more.
//!
//! Everything runs on loopback in this process.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{fake_railway, fake_service};

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
    let (total, overhead, worst) = rollbacks(&service, None).await;
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

    let pg = support::postgres::Postgres::start();
    let (_, pg_overhead, _) = rollbacks(&service, Some(&pg)).await;
    let extra = pg_overhead.saturating_sub(overhead);
    println!("the same rollbacks with the state in PostgreSQL, median of 10:");
    println!("  engine overhead      {:7.1} ms", ms(pg_overhead));
    println!(
        "  state-store overhead {:7.1} ms per rollback (postgres - file; target < 50 ms: {})",
        ms(extra),
        if extra < Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// Ten full rollbacks, the state in a directory or in `pg`: the medians of
/// total time and engine overhead, and the worst overhead.
async fn rollbacks(
    service: &fake_service::FakeService,
    pg: Option<&support::postgres::Postgres>,
) -> (Duration, Duration, Duration) {
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
        if let Some(pg) = pg {
            config.state.backend = rollbackd::state::config::Backend::Postgres;
            config.state.url = Some(Secret::new(pg.url()));
            // Each rollback starts from an empty history, as with a new directory.
            pg.psql(
                "app",
                "DO $$ BEGIN IF to_regclass('rollbackd.documents') IS NOT NULL THEN DELETE FROM rollbackd.documents; END IF; END $$",
            );
        }
        let engine = Arc::new(rollbackd::cli::wiring::engine(&config).unwrap());
        let report = engine
            .run(
                RollbackRequest {
                    skip_db: true,
                    ..RollbackRequest::new(Trigger::Manual, Policy::Auto, "benchmark".into())
                },
                &|_| {},
            )
            .await;
        assert!(report.success, "{:?}", report.error);
        totals.push(report.duration);
        overheads.push(report.duration.saturating_sub(report.waiting));
    }
    let worst = *overheads.iter().max().unwrap();
    (median(&mut totals), median(&mut overheads), worst)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
