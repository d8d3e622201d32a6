//! `rollbackd check`, `rollbackd rules check` and `rollbackd rules eval`.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::{CliError, Exit};
use crate::config::Config;
use crate::duration::Pretty;
use crate::rules::{AlertState, RuleKind};
use crate::watch::evaluate::{self, Outcome};
use crate::watch::RuleSource;

/// Validates rule files (and, for `rollbackd check`, says the config is fine).
pub(super) fn check(config: &Config, paths: &[PathBuf], whole_config: bool) -> Exit {
    // Exactly what `watch` checks: the provider, the database, the
    // notifiers and the state are built (nothing is connected to).
    if whole_config && config.provider.is_some() {
        if let Err(e) = super::wiring::engine(config) {
            return Err(CliError::Usage(e.to_string()));
        }
    }
    let mut source = RuleSource::from_config(&config.watch, config.template_variables());
    if !paths.is_empty() {
        source.paths = paths.to_vec();
    }
    match source.load() {
        Err(e) => {
            eprintln!("{e}");
            Err(CliError::Reported)
        }
        Ok(set) => {
            if whole_config {
                // The Prometheus client is built as `watch` builds it: its
                // headers and TLS files are read now.
                if let Err(e) = crate::source::prometheus::Prometheus::new(&config.prometheus) {
                    return Err(CliError::Usage(e.to_string()));
                }
                if config.prometheus.tls.insecure_skip_verify {
                    println!(
                        "WARNING: prometheus.tls.insecure_skip_verify is on: ANY certificate is accepted from Prometheus; use prometheus.tls.ca_file"
                    );
                }
                println!(
                    "config OK: Prometheus {}, listening on {}",
                    crate::secret::redact_url(&config.prometheus.url),
                    config.server.listen
                );
            }
            for group in &set.groups {
                println!(
                    "{}: group {:?} every {}",
                    group.file.display(),
                    group.name,
                    Pretty(group.interval)
                );
                for rule in &group.rules {
                    println!("  {rule}");
                }
            }
            println!(
                "rules OK: {} group(s), {} rule(s)",
                set.groups.len(),
                set.rule_count()
            );
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct EvalRow {
    group: String,
    rule: String,
    value: Option<f64>,
    condition: String,
    outcome: &'static str,
    breaching: bool,
    state: AlertState,
    would_fire: String,
    detail: Option<String>,
}

/// Evaluates every rule once, now, and prints what it found.
pub(super) async fn eval(config: &Config, only: Option<&str>, json: bool) -> Exit {
    let super::Evaluation {
        rules: set,
        prometheus,
        http,
        ..
    } = super::evaluation_parts(config)?;
    let now = SystemTime::now();
    let mut rows = Vec::new();
    for (group, rule) in set.rules() {
        if only.is_some_and(|name| name != rule.name) {
            continue;
        }
        let answer = evaluate::fetch(rule, prometheus.as_ref(), &http, now).await;
        let mut failures = 0;
        let e = evaluate::interpret(rule, answer, &mut failures);
        let mut runtime = crate::watch::RuleRuntime::new(rule.clone());
        runtime.state.step(now, e.input.clone());
        let state = runtime.state.overall();
        let would_fire = match (e.breaching(), state, &rule.kind) {
            (_, AlertState::Firing, _) => "yes".to_string(),
            (true, _, _) => format!("yes, if it lasts {}", Pretty(rule.for_)),
            (false, _, RuleKind::Probe(p)) if e.outcome == Outcome::ProbeFailed => {
                format!("after {} consecutive failures", p.failures)
            }
            (false, _, _) => "no".to_string(),
        };
        rows.push(EvalRow {
            group: group.name.clone(),
            rule: rule.name.clone(),
            value: e.value,
            condition: rule.condition_text(),
            outcome: e.outcome.as_str(),
            breaching: e.breaching(),
            state,
            would_fire,
            detail: e.detail.clone(),
        });
    }
    if rows.is_empty() {
        if let Some(name) = only {
            eprintln!("no rule named {name:?}; `rollbackd rules check` lists the rules");
            return Err(CliError::Reported);
        }
    }
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("cannot encode the result: {e}");
                return Err(CliError::Reported);
            }
        }
    } else {
        print_table(&rows);
        println!(
            "(one evaluation from a fresh state; a running `rollbackd watch` shows its own state at /api/v1/rules)"
        );
    }
    Ok(())
}

fn print_table(rows: &[EvalRow]) {
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.group.clone(),
                r.rule.clone(),
                r.value.map_or("-".into(), |v| format!("{v:.6}")),
                r.condition.clone(),
                r.outcome.to_string(),
                r.state.to_string(),
                r.would_fire.clone(),
            ]
        })
        .collect();
    let header = [
        "GROUP",
        "RULE",
        "VALUE",
        "CONDITION",
        "OUTCOME",
        "STATE",
        "WOULD FIRE",
    ];
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&header.map(String::from));
    for (row, r) in table.iter().zip(rows) {
        print(row);
        if let Some(detail) = &r.detail {
            println!("    {detail}");
        }
    }
}
