//! rollbackd: an autonomous rollback controller. It watches Prometheus,
//! decides from rules kept in git whether the latest deploy broke production,
//! and rolls the service back safely.
//!
//! Layout (docs/architecture.md has the whole tree and the module graph):
//! `rules` (types, loading, the pure state machine), `source` (Prometheus),
//! `watch` (evaluation loop and reload), `backtest` (the rules replayed over
//! Prometheus's history), `blame` (is the live deployment to blame for a
//! breach?), `engine` (the rollback pipeline, guards, breaker,
//! confirmations), `provider` (Railway, Argo CD, commands), `gitops` (a pull
//! request in git after a rollback), `db` (backups, restores, downgrades),
//! `pg` (PostgreSQL connections), `state` (the state store: files or
//! PostgreSQL, leadership), `verify` and `expect` (health checks), `drill`
//! (rehearsed rollbacks), `notify` (Slack, PagerDuty, e-mail, webhooks),
//! `history` (the audit trail) and `record` (the records it shares with
//! notifications and metrics), `api` (rollbackd's own HTTP server),
//! `telemetry` (logs and metrics, through typed events), `init` (rules from
//! a service's own metrics), leaves (`clock`, `duration`, `child`,
//! `supervise`, `secret`, `service`, `standing`, `tls`), `config`
//! (assembles each subsystem's own section), `cli`.
//!
//! What tests, benches and the binary use is `pub`; the rest is
//! `pub(crate)`, and `unreachable_pub` keeps it so.

#![warn(unreachable_pub)]

pub(crate) mod api;
pub(crate) mod backtest;
pub(crate) mod blame;
pub(crate) mod child;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod db;
pub(crate) mod drill;
pub(crate) mod duration;
pub mod engine;
pub(crate) mod expect;
pub mod gitops;
pub mod history;
pub(crate) mod init;
pub(crate) mod notify;
pub(crate) mod pg;
pub mod provider;
pub(crate) mod record;
pub mod rules;
pub mod secret;
pub(crate) mod service;
pub(crate) mod source;
pub(crate) mod standing;
pub mod state;
pub(crate) mod supervise;
pub mod telemetry;
pub(crate) mod tls;
pub mod verify;
pub(crate) mod watch;

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
