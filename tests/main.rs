//! rollbackd's integration tests, one module per subject, in one test
//! binary: cargo runs test binaries one after another, so one binary lets
//! `--test-threads` run the slow real-process tests of every subject side
//! by side (and links once). Each module's top note says what it covers;
//! `cargo test --test integration gitops::` runs one subject.

mod support;

// The longest test first (see accuracy.rs).
mod accuracy;
mod alertmanager;
mod architecture;
mod argocd;
mod backtest;
mod backup_store;
mod blame;
mod cli;
mod crash;
mod database;
mod db_target;
mod db_tls;
mod deploy;
mod docs;
mod drill;
mod engine;
mod gitops;
mod hardening;
mod init;
mod notify;
mod replicas;
mod rollback_cli;
mod sigv4;
mod startup_logs;
mod watch;
