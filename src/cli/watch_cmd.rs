//! `rollbackd watch`: the controller itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use super::{CliError, Exit};
use crate::api::AppState;
use crate::config::Config;
use crate::engine::dispatch::Dispatcher;
use crate::engine::pending::PendingStore;
use crate::rules::RuleEvent;
use crate::telemetry::{self, events};
use crate::watch::{GroupContext, StatusBoard, Watcher};

pub(super) async fn watch(config: Config) -> Exit {
    // Caught from the start: a SIGHUP that came before its handler would end
    // rollbackd (the signal's default) instead of reloading the rules.
    let (hangup, mut term) =
        signals().map_err(|e| CliError::Failed(format!("cannot catch SIGHUP and SIGTERM: {e}")))?;
    let super::Evaluation {
        source,
        rules: initial,
        seen,
        prometheus,
        http,
    } = super::evaluation_parts(&config)?;
    let listener = match crate::api::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Err(CliError::Reported);
        }
    };
    telemetry::metrics_handle();
    let supervisor = crate::supervise::global();
    supervisor.spawn_forever("metrics upkeep", telemetry::upkeep());

    let board = Arc::new(StatusBoard::default());
    let (events_tx, events_rx) = mpsc::channel(1024);
    let engine = engine(&config).await?;
    let pending = Arc::new(match (&engine, config.state.backend) {
        (Some(engine), crate::state::config::Backend::Postgres) => PendingStore::mirrored(
            crate::state::Doc::new(engine.state().clone(), "pending.json"),
        ),
        _ => PendingStore::default(),
    });
    // Present from the start, so dashboards show 0 rather than no data.
    crate::telemetry::events::pending_confirmations(0);
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let events_tx_alerts = events_tx.clone();
    let blame_source = prometheus.clone();
    let ctx = GroupContext {
        source: prometheus,
        http,
        board: board.clone(),
        events: events_tx,
        max_concurrent_queries: config.watch.max_concurrent_queries,
        query_timeout: config.prometheus.timeout,
        clock: crate::clock::Clock::system(),
        align_to_scrapes: config.watch.align_to_scrapes,
        service: config.service.name.clone(),
    };
    let app = crate::api::router(AppState {
        board: board.clone(),
        grace: config.prometheus.timeout,
        engine: engine.clone(),
        pending: pending.clone(),
        commands: engine.as_ref().map(|_| commands_tx),
        token: config.server.api_token.clone(),
        alerts: match (&config.alertmanager, &engine) {
            (Some(am), Some(_)) => Some(crate::api::AlertIntake {
                config: am.clone(),
                events: events_tx_alerts,
                seen: Default::default(),
            }),
            _ => None,
        },
        supervisor: supervisor.clone(),
    });
    tracing::info!(
        listen = %config.server.listen,
        prometheus = %crate::secret::redact_url(&config.prometheus.url),
        "rollbackd watching"
    );
    let server = supervisor.spawn_forever(
        "http server",
        crate::api::serve(listener, app, (&config.server).into()),
    );
    if let Some(engine) = &engine {
        // Before any drill can run: what a killed drill left behind.
        crate::drill::sweep::sweep(engine).await;
        if let Some(store) = engine.db.as_ref().and_then(|db| db.store.clone()) {
            supervisor.spawn_forever(
                "backup store check",
                watch_backup_store(engine.clone(), store),
            );
        }
    }
    let mut drills = None;
    if let (Some(engine), false) = (&engine, config.drills.is_empty()) {
        let staging = super::wiring::staging_engines(&config);
        match crate::drill::schedule::start(engine.clone(), &config.drills, staging).await {
            Ok(scheduler) => drills = Some(scheduler),
            Err(e) => {
                return Err(CliError::Failed(e.to_string()));
            }
        }
    }
    let mut running = None;
    let stopping = engine.clone();
    match engine {
        Some(engine) => {
            let dispatcher = Dispatcher::new(engine, board, pending).with_blame(
                crate::blame::Blamer::new(blame_source, config.blame.clone()),
            );
            running = Some(dispatcher.running());
            supervisor.spawn_forever("dispatcher", dispatcher.run(events_rx, commands_rx));
        }
        None => {
            supervisor.spawn_forever("event log", consume(events_rx));
        }
    }

    let watcher = Watcher::start(source, initial, ctx);
    // SIGTERM, Ctrl-C or a failed task stop it the same way.
    let stop = async {
        tokio::select! {
            _ = shutdown_signal(&mut term) => {}
            _ = supervisor.failed() => {}
        }
        supervisor.stopping();
    };
    let result = watcher
        .run_until(config.watch.reload_interval, seen, hangup, stop)
        .await;
    shut_down(&config, running, stopping, drills).await;
    server.abort();
    if let Some(failure) = supervisor.failure() {
        return Err(CliError::TaskFailed(failure.to_string()));
    }
    result.map_err(|e| CliError::Failed(format!("cannot listen for signals: {e}")))?;
    tracing::info!("rollbackd stopped");
    Ok(())
}

/// The engine `watch` rolls back with (none without a `[provider]`), once
/// it has read the history and settled what a killed rollbackd left.
async fn engine(config: &Config) -> Result<Option<Arc<crate::engine::Engine>>, CliError> {
    if config.provider.is_none() {
        return Ok(None);
    }
    let engine = super::wiring::daemon_engine(config).map_err(CliError::usage)?;
    // A history file rollbackd cannot read stops it here, before it could act.
    engine.history().load()?;
    // A rollback a killed rollbackd left unfinished is settled before
    // anything else. Beside several replicas, the leader settles them
    // when it takes over (the dispatcher's upkeep). A journal it cannot
    // read does not stop it (a restart would meet it again, and again):
    // it watches, says so (the log, `rollbackd_journals_unreadable`,
    // `/readyz`) and starts no rollback until the journal is repaired or
    // quarantined.
    let recovered = if config.state.backend == crate::state::config::Backend::File {
        engine.recover().await
    } else {
        engine.unfinished().map(|_| Vec::new()).map_err(Into::into)
    };
    match recovered {
        Ok(settled) => {
            for s in &settled {
                tracing::warn!(rollback = %s.id(), "{}", s.summary());
            }
        }
        Err(crate::engine::RecoveryError::Journal(e)) => {
            eprintln!("rollbackd: {e}; watching, but no rollback starts until it is repaired or quarantined (`rollbackd state journals`, `rollbackd state quarantine ID`)");
        }
        Err(e) => return Err(e.into()),
    }
    engine.breaker_state(std::time::SystemTime::now());
    Ok(Some(Arc::new(engine)))
}

/// Stops what `watch` started, in order: the running rollback finishes
/// its phase and journals, a running drill cleans up, the notifications
/// already queued go out.
async fn shut_down(
    config: &Config,
    running: Option<crate::engine::dispatch::RunningRollback>,
    engine: Option<Arc<crate::engine::Engine>>,
    drills: Option<crate::drill::schedule::Scheduled>,
) {
    if let (Some(running), Some(engine)) = (&running, &engine) {
        // The running rollback finishes the phase it is in (bounded by that
        // phase's budget), journals it and stops; the next start finishes it.
        engine.stop();
        let b = &config.engine.budgets;
        let limit = [b.pre_validation, b.database, b.application, b.verification]
            .into_iter()
            .max()
            .unwrap_or_default()
            + b.post_rollback;
        crate::engine::dispatch::finish_running(running, limit).await;
    }
    if let Some(drills) = drills {
        // A drill running now removes its scratch database and dump first.
        drills.stop(Duration::from_secs(30)).await;
    }
    if let Some(notifiers) = engine.as_ref().and_then(|e| e.notifiers()) {
        // What the run just reported (its end, a failure) still goes out;
        // what cannot is said in the log rather than lost silently.
        notifiers.flush(Duration::from_secs(10)).await;
    }
}

/// Without a provider, a firing event is logged and counted, and nothing is
/// changed.
async fn consume(mut events: mpsc::Receiver<RuleEvent>) {
    while let Some(event) = events.recv().await {
        let RuleEvent::Fired(event) = event else {
            continue;
        };
        events::trigger_received(
            &event,
            "none",
            "no [provider] is configured, so rollbackd only watches; nothing was changed",
        );
    }
}

/// SIGHUP (reload the rules) and SIGTERM (stop), caught from here on.
fn signals() -> std::io::Result<(Signal, Signal)> {
    Ok((
        signal(SignalKind::hangup())?,
        signal(SignalKind::terminate())?,
    ))
}

async fn shutdown_signal(term: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Whether `[database.backup_store]` can be used, at start and every 15
/// minutes: its copies are listed (nothing is written). Once `watch` started
/// in silence with a store it could not use, and every emergency backup
/// stayed on the pod.
async fn watch_backup_store(
    engine: Arc<crate::engine::Engine>,
    store: Arc<crate::db::store::BackupStore>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(15 * 60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let problem =
            match tokio::time::timeout(std::time::Duration::from_secs(30), store.list()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("{} did not answer within 30s", store.url())),
            };
        engine.set_store_problem(problem);
    }
}
