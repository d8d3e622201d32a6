//! `rollbackd drill run NAME` and `drill list`: a drill now, each check
//! printed with its time and result; the drills, their schedules, last
//! results and next runs.

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use super::engine_cmd::print_json;
use super::{CliError, DrillCommand, Exit};
use crate::config::Config;
use crate::drill;
use crate::history::{EventKind, TriggerKind};

pub(super) async fn drill(config: &Config, cmd: DrillCommand) -> Exit {
    match cmd {
        DrillCommand::Run { name, json } => run(config, &name, json).await,
        DrillCommand::List { json } => list(config, json),
    }
}

fn find<'a>(config: &'a Config, name: &str) -> Result<&'a drill::config::DrillConfig, CliError> {
    config
        .drills
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config.drills.iter().map(|d| d.name.as_str()).collect();
            CliError::Usage(if names.is_empty() {
                format!("no drill is called {name:?}: the config has no [[drills]]")
            } else {
                format!(
                    "no drill is called {name:?}; the config has {}",
                    names.join(", ")
                )
            })
        })
}

async fn run(config: &Config, name: &str, json: bool) -> Exit {
    let drill = find(config, name)?;
    let engine = super::wiring::engine(config).map_err(CliError::usage)?;
    let tty = !json && std::io::stdout().is_terminal();
    let started = std::time::Instant::now();
    let progress = move |check: &'static str, done: Option<&drill::Check>| {
        let at = started.elapsed().as_secs_f64();
        match done {
            None if tty => {
                print!("[{at:6.1}s] {check:<10} ...");
                let _ = std::io::stdout().flush();
            }
            None => {}
            Some(c) if !json => {
                let line = format!(
                    "[{at:6.1}s] {check:<10} {:<7} {:5.1}s  {}",
                    c.result.as_str().to_uppercase(),
                    c.duration_seconds,
                    c.detail
                );
                if tty {
                    println!("\r{line}");
                } else {
                    println!("{line}");
                }
            }
            Some(_) => {}
        }
    };
    let staging = super::wiring::staging_engines(config);
    let report = match drill::run(
        &engine,
        drill,
        TriggerKind::Manual,
        Some(&staging),
        &progress,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return Err(CliError::Failed(format!("drill {name}: {e}")));
        }
    };
    if json {
        print_json(&report)?;
    } else {
        let failed = report.failed();
        println!(
            "drill {} {} in {:.1}s{}",
            report.name,
            report.result().to_uppercase(),
            report.duration_seconds,
            if failed.is_empty() {
                String::new()
            } else {
                format!(": {}", failed.join(", "))
            }
        );
    }
    if let Some(why) = &report.not_recorded {
        eprintln!("rollbackd: {why}");
    }
    if report.passed {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

#[derive(serde::Serialize)]
struct Listed {
    name: String,
    kind: &'static str,
    schedule: String,
    timezone: String,
    next_run: Option<String>,
    last_run: Option<String>,
    last_result: Option<&'static str>,
    last_failed: Vec<String>,
}

fn list(config: &Config, json: bool) -> Exit {
    let state = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let store = crate::history::HistoryStore::new(crate::state::Doc::new(
        state,
        crate::state::StateDir::HISTORY,
    ));
    let history = match store.load() {
        Ok(h) => h.events,
        Err(e) => {
            return Err(CliError::Failed(e.to_string()));
        }
    };
    let now = SystemTime::now();
    let rows: Vec<Listed> = config
        .drills
        .iter()
        .map(|d| {
            let last = history.iter().rev().find(|e| {
                e.kind == EventKind::Drill && e.drill.as_ref().is_some_and(|r| r.name == d.name)
            });
            Listed {
                name: d.name.clone(),
                kind: d.kind.as_str(),
                schedule: d.schedule.clone(),
                timezone: d.timezone.clone(),
                next_run: d
                    .next_run(now)
                    .ok()
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                last_run: last.map(|e| e.timestamp.clone()),
                last_result: last.map(|e| if e.success { "passed" } else { "failed" }),
                last_failed: last
                    .and_then(|e| e.drill.as_ref())
                    .map(|r| {
                        r.checks
                            .iter()
                            .filter(|c| c.result == crate::history::CheckResult::Failed)
                            .map(|c| c.name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no drills: add [[drills]] to the config (see docs/drills.md)");
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<22} {:<16} {:<22} LAST",
        "DRILL", "KIND", "SCHEDULE", "TIME ZONE", "NEXT RUN (UTC)"
    );
    for r in rows {
        let last = match (&r.last_run, r.last_result) {
            (Some(at), Some(result)) if r.last_failed.is_empty() => format!("{result} at {at}"),
            (Some(at), Some(result)) => {
                format!("{result} at {at} ({})", r.last_failed.join(", "))
            }
            _ => "never run".into(),
        };
        println!(
            "{:<16} {:<10} {:<22} {:<16} {:<22} {last}",
            r.name,
            r.kind,
            r.schedule,
            r.timezone,
            r.next_run.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}
