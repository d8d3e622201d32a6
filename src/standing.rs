//! A problem rollbackd keeps saying while it lasts (an unreadable journal,
//! a backup store it cannot use, another leader for its service): recorded
//! each time it is looked at, read back for `/readyz` and the API, and
//! logged only when it appears, changes or goes. A leaf: it knows nothing
//! of what the problem is.

use std::sync::{Mutex, PoisonError};

/// The problem as last seen; `None` while there is none.
#[derive(Debug, Default)]
pub(crate) struct Standing(Mutex<Option<String>>);

/// How what was just seen differs from what was held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The same as before: nothing to say.
    Same,
    /// A problem, new or different: say it.
    Now(String),
    /// The problem went: say so.
    Cleared,
}

impl Standing {
    /// Records `now`; how it differs from what was held.
    pub(crate) fn set(&self, now: Option<String>) -> Change {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *held == now {
            return Change::Same;
        }
        let was = std::mem::replace(&mut *held, now.clone());
        match (was, now) {
            (_, Some(why)) => Change::Now(why),
            (Some(_), None) => Change::Cleared,
            (None, None) => Change::Same,
        }
    }

    /// The problem as last seen.
    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_said_when_it_appears_changes_or_goes_and_not_again() {
        let s = Standing::default();
        assert_eq!(s.set(None), Change::Same);
        assert_eq!(s.set(Some("a".into())), Change::Now("a".into()));
        assert_eq!(s.set(Some("a".into())), Change::Same);
        assert_eq!(s.set(Some("b".into())), Change::Now("b".into()));
        assert_eq!(s.get().as_deref(), Some("b"));
        assert_eq!(s.set(None), Change::Cleared);
        assert_eq!(s.get(), None);
    }
}
