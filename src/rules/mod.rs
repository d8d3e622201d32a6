//! Rules: their types, how they are loaded and checked from files kept in git,
//! and the pure pending/firing state machine. Nothing here talks to
//! Prometheus or reads the clock; the watcher supplies both.

pub mod duration;
pub mod load;
pub mod model;
pub mod state;
pub mod template;

pub use load::{load_paths, LoadError, RuleError, Variables};
pub use model::*;
pub use state::{AlertState, Input, RuleState, Transition};
