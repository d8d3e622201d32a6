//! Blame: between "a rule fired" and "roll back", is the live deployment to
//! blame for the breach? Three verdicts: **to blame** (act under the rule's
//! policy), **not to blame** (refuse: the `blame` guard, notified and
//! recorded) and **not enough evidence** (an `auto` rule parks a `confirm`
//! instead; never a silent skip).
//!
//! - `judge.rs` decides, purely, from what was gathered: onset after
//!   go-live, the new version against the old one while both serve, the
//!   baseline before go-live, inhibitors;
//! - `gather.rs` asks Prometheus (range and instant queries, all at once,
//!   within `blame.budget`) and interprets each point as the watcher would;
//! - `stats.rs` holds the tests (two proportions, Mann-Whitney U);
//! - `config.rs` is `[blame]` and a rule's own `blame:`.
//!
//! It must never blame a deployment on missing data: no baseline is "not
//! enough evidence", and so is a judgement that runs out of time.

pub(crate) mod config;
pub(crate) mod gather;
pub(crate) mod judge;
pub(crate) mod stats;
#[cfg(test)]
mod tests;

pub(crate) use crate::record::blame::{
    InhibitorEvidence, Judgement, Reason, RuleEvidence, Verdict, VersionFigures, WindowFigures,
};
pub(crate) use gather::Blamer;
