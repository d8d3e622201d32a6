//! rollbackd: an autonomous rollback controller. It watches Prometheus,
//! decides from rules kept in git whether the latest deploy broke production,
//! and rolls the service back safely.
//!
//! Layout: `rules` (types, loading, the pure state machine), `source`
//! (Prometheus), `watch` (evaluation loop and reload), `blame` (is the live
//! deployment to blame for a breach?), `engine` (the rollback
//! phases, guards, breaker, confirmations), `provider` (Railway, Argo CD,
//! commands), `gitops` (a pull request in git after a rollback),
//! `verify` (HTTP health checks), `history` (the audit trail), `api`
//! (rollbackd's own HTTP server), `telemetry` (logs and metrics), `duration`
//! (Prometheus-style durations), `child` (commands that die with rollbackd), `supervise` (tasks whose failure stops
//! `watch`), `secret` and `service` (leaves every
//! section may hold), `config` (assembles each subsystem's own `config`
//! section), `cli`.

pub mod api;
pub mod backtest;
pub mod blame;
pub mod child;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod drill;
pub mod duration;
pub mod engine;
pub mod expect;
pub mod gitops;
pub mod history;
pub mod init;
pub mod notify;
pub mod pg;
pub mod provider;
pub mod rules;
pub mod secret;
pub mod service;
pub mod source;
pub mod standing;
pub mod state;
pub mod supervise;
pub mod telemetry;
pub mod tls;
pub mod verify;
pub mod watch;

#[cfg(test)]
mod fuzz;

/// Installs rustls's ring provider once per process, before any HTTP client
/// is built; rollbackd has exactly one TLS stack.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
