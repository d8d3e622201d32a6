//! `rollbackd state import`: moving the state between backends.

use super::{Exit, StateCommand};
use crate::config::Config;
use crate::state::{Doc, StateDir};

/// `rollbackd state import --from DIR`.
pub fn state(config: &Config, cmd: StateCommand) -> Exit {
    let StateCommand::Import { from, force } = cmd;
    if config.state.backend == crate::state::config::Backend::File {
        return Exit::Usage(
            "state import copies a state directory into PostgreSQL: set [state] backend = \"postgres\" first".into(),
        );
    }
    if !from.is_dir() {
        return Exit::Usage(format!(
            "--from {}: not a directory (pass the state directory, like state/)",
            from.display()
        ));
    }
    let target = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Exit::Usage(e.to_string()),
    };
    // Not under a running rollback, and none starts while this copies.
    let _lock = match super::engine_cmd::rollback_lock(&target, "import the state after it ends") {
        Ok(lock) => lock,
        Err(exit) => return exit,
    };
    let source = crate::state::FileStore::new(StateDir::new(&from));
    // Nothing is copied that does not read: a broken file stops the import.
    let history = crate::history::HistoryStore::new(Doc::new(
        std::sync::Arc::new(source.clone()),
        StateDir::HISTORY,
    ));
    if let Err(e) = history.load() {
        eprintln!("rollbackd: {e}");
        return Exit::Failed;
    }
    match target.read(StateDir::HISTORY) {
        Ok(_) if !force => {
            eprintln!(
                "rollbackd: {} already holds a history; nothing was copied (pass --force to replace it)",
                target.location(StateDir::HISTORY).display()
            );
            return Exit::Failed;
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            eprintln!(
                "rollbackd: cannot read {}: {e}",
                target.location(StateDir::HISTORY).display()
            );
            return Exit::Failed;
        }
    }
    // The journals first and the history last: an import cut short leaves
    // no history behind, so it can simply be run again.
    let mut names: Vec<String> = match crate::state::StateStore::list(&source, "runs") {
        Ok(runs) => runs.into_iter().filter(|n| n.ends_with(".json")).collect(),
        Err(e) => {
            eprintln!(
                "rollbackd: cannot list {}: {e}",
                from.join("runs").display()
            );
            return Exit::Failed;
        }
    };
    names.extend([StateDir::REVISIONS, StateDir::BREAKER, StateDir::HISTORY].map(String::from));
    // Everything is read and checked before anything is written.
    let mut documents = Vec::new();
    for name in names {
        let bytes = match crate::state::StateStore::read(&source, &name) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                eprintln!("rollbackd: cannot read {}: {e}", from.join(&name).display());
                return Exit::Failed;
            }
        };
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            eprintln!(
                "rollbackd: {} is not valid JSON; nothing was copied (fix or remove it, then import again)",
                from.join(&name).display()
            );
            return Exit::Failed;
        }
        documents.push((name, bytes));
    }
    for (name, bytes) in &documents {
        if let Err(e) = target.write(name, bytes) {
            eprintln!(
                "rollbackd: cannot write {}: {e}",
                target.location(name).display()
            );
            return Exit::Failed;
        }
        println!(
            "copied {} -> {}",
            from.join(name).display(),
            target.location(name).display()
        );
    }
    println!(
        "{} documents copied; rollbackd now reads its state from PostgreSQL",
        documents.len()
    );
    Exit::Ok
}
