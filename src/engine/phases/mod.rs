//! The five phases, one file each. A phase is a function from the run in
//! progress to a typed [`PhaseOutcome`](super::PhaseOutcome): it does its one
//! job, leaves what later phases need in the run, and never decides what
//! happens next (the orchestrator in `run.rs` does, from the outcome's kind).
//! Each runs under its budget, enforced by the orchestrator.

pub(crate) mod application;
pub(crate) mod database;
pub(crate) mod post_rollback;
pub(crate) mod pre_validation;
pub(crate) mod verification;
