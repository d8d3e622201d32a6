//! Rules: their types, how they are loaded and checked from files kept in git,
//! the pure pending/firing state machine, and the rules' domain data that
//! other subsystems share: firing events, rule status, value formatting.
//! Nothing here talks to Prometheus or reads the clock; the watcher supplies
//! both.

pub(crate) mod event;
pub(crate) mod files;
pub(crate) mod load;
pub(crate) mod model;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod template;
pub(crate) mod value;

pub use event::{FiringEvent, RuleEvent, ALERTMANAGER_GROUP};
pub use load::{load_paths, LoadError, RuleError, Variables};
pub use model::*;
pub use state::{AlertState, Input, RuleState, Transition};
pub use status::{ActiveSeries, RuleStatus};
