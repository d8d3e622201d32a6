//! `history`: the audit trail, newest first, and one entry in full with the
//! evidence it was decided on (`--show ID`).

use super::engine_cmd::print_json;
use super::{CliError, Exit};
use crate::config::Config;
use crate::state::{Doc, StateDir};

fn load_history(
    config: &Config,
) -> Result<(crate::history::History, std::path::PathBuf), CliError> {
    let state = match super::wiring::state(config) {
        Ok((state, _)) => state,
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let store = crate::history::HistoryStore::new(Doc::new(state, StateDir::HISTORY));
    match store.load() {
        Ok(h) => Ok((h, store.path())),
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}

/// `rollbackd history --show ID`: one entry in full, with its evidence.
pub(super) fn history_entry(config: &Config, id: &str, json: bool) -> Exit {
    let (history, path) = load_history(config)?;
    let Some(e) = history
        .events
        .iter()
        .rev()
        .find(|e| e.id.as_deref() == Some(id))
    else {
        return Err(CliError::Usage(format!(
            "no history entry {id:?} in {} (`rollbackd history` lists the entries; `--json` shows their ids)",
            path.display()
        )));
    };
    if json {
        return print_json(e);
    }
    println!("{} {} at {}", e.kind, id, e.timestamp);
    println!(
        "  trigger: {}  policy: {}",
        e.trigger,
        e.policy.as_deref().unwrap_or("-")
    );
    println!("  reason:  {}", e.reason);
    for r in &e.rules {
        let value = r
            .value
            .map_or("no value".into(), crate::rules::value::short);
        println!(
            "  rule:    {}/{} {value} ({})",
            r.group, r.rule, r.condition
        );
    }
    if let Some(err) = &e.error {
        println!("  result:  {err}");
    } else if e.is_rollback() {
        println!(
            "  result:  {} from {} to {} in {:.1} s",
            if e.success { "succeeded" } else { "failed" },
            e.from_deployment_id.as_deref().unwrap_or("-"),
            e.target_deployment_id.as_deref().unwrap_or("-"),
            e.duration_seconds
        );
    }
    if let Some(revert) = &e.revert {
        println!("  {revert}");
    }
    match &e.blame {
        None => println!("  blame:   not judged"),
        Some(j) => print_judgement(j),
    }
    Ok(())
}

fn print_judgement(j: &crate::blame::Judgement) {
    let short = crate::rules::value::short;
    println!("  blame:   {j}");
    println!("           judged in {:.3} s", j.seconds);
    for r in &j.rules {
        println!(
            "    {}/{}: {} ({}): {}",
            r.group,
            r.rule,
            r.verdict.as_str(),
            r.reason.as_str(),
            r.summary
        );
        if let (Some(onset), Some(after)) = (&r.onset, r.onset_after_go_live_seconds) {
            println!("      onset {onset}, {after:.0} s after go-live");
        }
        for (name, w) in [("baseline", &r.baseline), ("since go-live", &r.post)] {
            if let Some(w) = w {
                println!(
                    "      {name} {} .. {}: {} evaluations, {} usable, {} breaching, median {}",
                    w.from,
                    w.to,
                    w.points,
                    w.usable,
                    w.breaching,
                    w.median.map_or("-".into(), short)
                );
            }
        }
        if let Some(v) = &r.versions {
            println!(
                "      {} {}={} {} (n {}) against {}={} {} (n {}): statistic {}, p = {:.3e}",
                v.test,
                v.label,
                v.new,
                short(v.new_value),
                short(v.new_n),
                v.label,
                v.old,
                short(v.old_value),
                short(v.old_n),
                short(v.statistic),
                v.p_value
            );
        }
    }
    for i in &j.inhibitors {
        println!(
            "    inhibitor {}: {}",
            i.name,
            match (&i.error, i.holds) {
                (Some(e), _) => format!("could not be asked ({e})"),
                (None, true) => "holds".into(),
                (None, false) => "does not hold".into(),
            }
        );
    }
}

pub(super) fn history(config: &Config, limit: usize, json: bool) -> Exit {
    let (history, path) = load_history(config)?;
    let events: Vec<_> = history.events.iter().rev().take(limit).cloned().collect();
    if json {
        return print_json(&events);
    }
    if events.is_empty() {
        println!("no rollbacks recorded in {}", path.display());
        return Ok(());
    }
    // DETECT: deployment created -> rule firing; CALL: firing -> platform
    // call; RECOVER: deployment created -> verified healthy (seconds).
    println!(
        "{:<21} {:<11} {:<8} {:<8} {:<16} {:<16} {:>8} {:>8} {:>6} {:>8}  REASON",
        "TIME", "TYPE", "TRIGGER", "RESULT", "FROM", "TO", "SECONDS", "DETECT", "CALL", "RECOVER"
    );
    let figure = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for e in &events {
        let result = match (e.kind.as_str(), e.success) {
            ("rollback", true) => "success",
            ("rollback", false) => "failed",
            ("drill", true) => "passed",
            ("drill", false) => "failed",
            ("interrupted", _) => "-",
            _ => "refused",
        };
        // A run finished by a restarted rollbackd says so.
        let kind = if e.resumed {
            "resumed".to_string()
        } else {
            e.kind.to_string()
        };
        let d = e.detection.clone().unwrap_or_default();
        let detect = d
            .deploy_to_breach_seconds
            .zip(d.breach_to_firing_seconds)
            .map(|(a, b)| a + b);
        println!(
            "{:<21} {:<11} {:<8} {:<8} {:<16} {:<16} {:>8.1} {:>8} {:>6} {:>8}  {}",
            e.timestamp,
            kind,
            e.trigger,
            result,
            e.from_deployment_id.as_deref().unwrap_or("-"),
            e.target_deployment_id.as_deref().unwrap_or("-"),
            e.duration_seconds,
            figure(detect),
            figure(d.firing_to_call_seconds),
            figure(d.deploy_to_healthy_seconds),
            e.error
                .as_deref()
                .map_or(e.reason.clone(), |err| format!("{} ({err})", e.reason))
        );
    }
    if let Some(good) = &history.last_known_good {
        println!(
            "last known good: {} (since {})",
            good.deployment_id, good.timestamp
        );
    }
    Ok(())
}
