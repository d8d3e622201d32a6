//! `rollbackd state`: moving the state between backends (`import`), and
//! the journals of unfinished rollbacks (`journals`, `quarantine`).

use super::{CliError, Exit, StateCommand};
use crate::config::Config;
use crate::state::{Doc, StateDir};

/// `rollbackd state …`.
pub(super) fn state(config: &Config, cmd: StateCommand) -> Exit {
    match cmd {
        StateCommand::Import { from, force } => import(config, &from, force),
        StateCommand::Journals { json } => journals(config, json),
        StateCommand::Quarantine { id } => quarantine(config, &id),
    }
}

/// `rollbackd state journals [--json]`.
fn journals(config: &Config, json: bool) -> Exit {
    let state = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let store = crate::engine::journal::JournalStore::new(state);
    let each = store.each()?;
    let unreadable = each.iter().filter(|(_, j)| j.is_err()).count();
    if json {
        let rows: Vec<serde_json::Value> = each
            .iter()
            .map(|(name, read)| match read {
                Ok(j) => serde_json::json!({
                    "name": name,
                    "location": store.path(&j.id),
                    "id": j.id,
                    "pid": j.pid,
                    "started": j.event.timestamp,
                    "last_step": j.steps.last().map(|m| m.step.as_str()),
                    "readable": true,
                }),
                Err(e) => serde_json::json!({
                    "name": name,
                    "id": journal_id(name),
                    "readable": false,
                    "error": e.to_string(),
                }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if each.is_empty() {
        println!("no unfinished rollbacks");
    } else {
        for (name, read) in &each {
            match read {
                Ok(j) => println!(
                    "{}  started {}  last step {}  (pid {})",
                    j.id,
                    j.event.timestamp,
                    j.steps.last().map_or("none", |m| m.step.as_str()),
                    j.pid
                ),
                Err(e) => println!("{}  UNREADABLE: {e}", journal_id(name)),
            }
        }
        if unreadable > 0 {
            println!(
                "\nno rollback starts while a journal cannot be read. Repair it, or move it aside \
                 (kept whole, never settled by rollbackd) with `rollbackd state quarantine ID`, \
                 then check by hand what that run did"
            );
        }
    }
    if unreadable > 0 {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

/// `runs/rb-1.json` -> `rb-1`.
fn journal_id(name: &str) -> &str {
    name.trim_start_matches("runs/").trim_end_matches(".json")
}

/// `rollbackd state quarantine ID`.
fn quarantine(config: &Config, id: &str) -> Exit {
    let state = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    // Never under a running rollback (it may be that run's journal).
    let _lock = super::engine_cmd::rollback_lock(&state, "quarantine the journal after it ends")?;
    let store = crate::engine::journal::JournalStore::new(state);
    let stamp = crate::clock::seconds(std::time::SystemTime::now()).replace([':', '-'], "");
    match store.quarantine(id, &stamp) {
        Ok(aside) => {
            println!(
                "journal {} moved to {}; rollbackd will not settle that run: check by hand what it did (the platform's deployments, the database's revision, the breaker)",
                journal_id(id),
                aside.display()
            );
            Ok(())
        }
        Err(e) => Err(CliError::Failed(format!(
            "{e} (`rollbackd state journals` lists the journals)"
        ))),
    }
}

/// `rollbackd state import --from DIR`.
fn import(config: &Config, from: &std::path::Path, force: bool) -> Exit {
    if config.state.backend == crate::state::config::Backend::File {
        return Err(CliError::Usage(
            "state import copies a state directory into PostgreSQL: set [state] backend = \"postgres\" first".into(),
        ));
    }
    if !from.is_dir() {
        return Err(CliError::Usage(format!(
            "--from {}: not a directory (pass the state directory, like state/)",
            from.display()
        )));
    }
    let target = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    // Not under a running rollback, and none starts while this copies.
    let _lock = super::engine_cmd::rollback_lock(&target, "import the state after it ends")?;
    let source = crate::state::FileStore::new(StateDir::new(from));
    // Nothing is copied that does not read: a broken file stops the import.
    let history = crate::history::HistoryStore::new(Doc::new(
        std::sync::Arc::new(source.clone()),
        StateDir::HISTORY,
    ));
    if let Err(e) = history.load() {
        return Err(CliError::Failed(e.to_string()));
    }
    match target.read(StateDir::HISTORY) {
        Ok(_) if !force => {
            return Err(CliError::Failed(format!(
                "{} already holds a history; nothing was copied (pass --force to replace it)",
                target.location(StateDir::HISTORY).display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read {}: {e}",
                target.location(StateDir::HISTORY).display()
            )));
        }
    }
    // The journals first and the history last: an import cut short leaves
    // no history behind, so it can simply be run again.
    let mut names: Vec<String> = match crate::state::StateStore::list(&source, "runs") {
        Ok(runs) => runs.into_iter().filter(|n| n.ends_with(".json")).collect(),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot list {}: {e}",
                from.join("runs").display()
            )));
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
                return Err(CliError::Failed(format!(
                    "cannot read {}: {e}",
                    from.join(&name).display()
                )));
            }
        };
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            return Err(CliError::Failed(format!(
                "{} is not valid JSON; nothing was copied (fix or remove it, then import again)",
                from.join(&name).display()
            )));
        }
        documents.push((name, bytes));
    }
    for (name, bytes) in &documents {
        if let Err(e) = target.write(name, bytes) {
            return Err(CliError::Failed(format!(
                "cannot write {}: {e}",
                target.location(name).display()
            )));
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
    Ok(())
}
