//! `rollbackd init`: discovers a service's series, proposes rules with
//! back-tested thresholds (`init/`), and prints or writes the rule file and
//! a config skeleton. It never overwrites a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{CliError, Exit};
use crate::config::Config;
use crate::init::{self, conventions, render, InitError};
use crate::source::prometheus::Prometheus;

/// The longest history `init` back-tests over.
const MAX_HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Prometheus's URL (default: prometheus.url from the config).
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// The service's scrape job (`job="NAME"`).
    #[arg(long, value_name = "NAME", conflicts_with = "selector")]
    pub job: Option<String>,
    /// Or a label selector for the service's series: '{namespace="shop", app="web"}'.
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The provider whose config skeleton to write.
    #[arg(long, default_value = "command", value_parser = ["command", "railway", "argocd"])]
    pub provider: String,
    /// Where `--write` puts rollbackd.toml and rules/.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Write the files (never over an existing one) instead of printing them.
    #[arg(long, conflicts_with = "dry_run")]
    pub write: bool,
    /// Print the files (the default).
    #[arg(long)]
    pub dry_run: bool,
    /// How much history to back-test the thresholds over (at most 7d).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub history: String,
}

/// The matchers inside the braces, checked by the PromQL parser.
fn selector(args: &InitArgs) -> Result<(String, String), String> {
    match (&args.job, &args.selector) {
        (Some(job), None) => {
            if job.trim().is_empty() {
                return Err("--job: empty; name the service's scrape job".into());
            }
            let escaped = job.replace('\\', "\\\\").replace('"', "\\\"");
            Ok((format!("job=\"{escaped}\""), job.clone()))
        }
        (None, Some(text)) => {
            let inner = text
                .trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim();
            if inner.is_empty() {
                return Err("--selector: empty; write label matchers like '{namespace=\"shop\", app=\"web\"}'".into());
            }
            promql_parser::parser::parse(&format!("{{{inner}}}")).map_err(|e| {
                format!("--selector {text:?} is not a PromQL selector: {e}; write it like '{{namespace=\"shop\", app=\"web\"}}'")
            })?;
            Ok((inner.to_string(), "service".into()))
        }
        _ => Err(
            "say which service: --job NAME (its scrape job) or --selector '{label=\"value\"}'"
                .into(),
        ),
    }
}

/// A name usable as the rule group's and the file's.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    match s.trim_matches('-').is_empty() {
        true => "service".into(),
        false => s.trim_matches('-').to_string(),
    }
}

pub(super) async fn init(config: &Config, args: InitArgs) -> Exit {
    let (selector, name) = match selector(&args) {
        Ok(s) => s,
        Err(e) => return Err(CliError::Usage(e)),
    };
    let history = match crate::duration::parse(&args.history) {
        Ok(d) if !d.is_zero() && d <= MAX_HISTORY => d,
        Ok(_) => {
            return Err(CliError::Usage(format!(
                "--history {}: between 1m and 7d (Prometheus's history the thresholds are back-tested over)",
                args.history
            )))
        }
        Err(e) => return Err(CliError::Usage(format!("--history: {e}"))),
    };
    let mut prom_config = config.prometheus.clone();
    if let Some(url) = &args.prometheus {
        prom_config.url = url.clone();
    }
    let prometheus = match Prometheus::new(&prom_config) {
        Ok(p) => p,
        Err(e) => return Err(CliError::Usage(format!("--prometheus: {e}"))),
    };
    // Whole seconds: the header names the range, and a back-test of the
    // same range must meet the same evaluation times.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let to = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
    let from = to - history;
    let catalog = match init::discover(&prometheus, &selector, from, to).await {
        Ok(c) => c,
        Err(e) => {
            return Err(CliError::Failed(format!("init: {e}")));
        }
    };
    let found = conventions::recognise(&catalog, &selector);
    if found.proposals.is_empty() {
        let names: Vec<&str> = catalog.names.iter().map(String::as_str).collect();
        let shown = names
            .iter()
            .take(25)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let more = names.len().saturating_sub(25);
        eprintln!(
            "rollbackd: init: {{{selector}}} has {} metric(s): {shown}{}; none is a request counter by status code \
             or a pool gauge rollbackd knows (OpenTelemetry http_server_request_duration_seconds, Micrometer \
             http_server_requests_seconds, ingress-nginx nginx_ingress_controller_requests, Istio istio_requests_total, \
             Prometheus clients' http_requests_total, HikariCP, OpenTelemetry and Go database pools). \
             A rule file to fill in is printed below: replace REQUESTS and STATUS with your counter and its status label.",
            names.len(),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
        print!("{}", render::template(&selector));
        return Err(CliError::Reported);
    }
    let group = slug(&name);
    let rules = match load_proposed(&group, &found.proposals, config) {
        Ok(r) => r,
        Err(e) => {
            return Err(CliError::Failed(format!("init: {e}")));
        }
    };
    let interval = crate::duration::parse(render::INTERVAL).expect("a valid interval");
    let proposed = init::propose(&prometheus, found.proposals, &rules, interval, from, to).await;
    let header = vec![
        format!(
            "Rules for {{{selector}}}, written by `rollbackd init` from {}.",
            crate::secret::redact_url(&prom_config.url)
        ),
        format!("Found: {}.", found.conventions.join("; ")),
        format!(
            "Back-tested over {} to {} at this group's interval ({}).",
            crate::clock::seconds(from),
            crate::clock::seconds(to),
            render::INTERVAL
        ),
        String::new(),
        "Every rule starts as `policy: dry_run`: rollbackd logs what it would do and".into(),
        "changes nothing. Move a rule to `confirm`, then `auto`, once its back-test".into(),
        "and its dry runs have earned your trust.".into(),
    ];
    let rules_text = render::rules_file(&group, &header, &proposed);
    let rules_dir = "rules";
    let rules_path = format!("{rules_dir}/{group}.yml");
    let config_text = render::config_file(&prom_config.url, &name, rules_dir, &args.provider);
    for p in &proposed {
        let table = if p.firings.is_empty() {
            "not back-tested".to_string()
        } else {
            p.table()
        };
        eprintln!(
            "{:<16} {:>8}   {}",
            p.proposal.name,
            p.proposal.unit.show(p.threshold),
            table
        );
    }
    if !args.write {
        println!("# ---- {rules_path} ----");
        print!("{rules_text}");
        println!("# ---- rollbackd.toml ----");
        print!("{config_text}");
        eprintln!("rollbackd: init: printed only; --write --out DIR writes rollbackd.toml and {rules_path}");
        return Ok(());
    }
    let files = [
        (args.out.join("rollbackd.toml"), config_text),
        (args.out.join(&rules_path), rules_text),
    ];
    if let Some((path, _)) = files.iter().find(|(p, _)| p.exists()) {
        return Err(CliError::Usage(format!(
            "{} exists; init never overwrites a file: move it away, or pick another --out",
            path.display()
        )));
    }
    for (path, text) in &files {
        if let Err(e) = write_new(path, text) {
            return Err(CliError::Failed(format!(
                "init: cannot write {}: {e}",
                path.display()
            )));
        }
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The proposals as the rule loader reads them (the defaults as thresholds;
/// the back-test changes only the threshold).
fn load_proposed(
    group: &str,
    proposals: &[conventions::Proposal],
    config: &Config,
) -> Result<Vec<crate::rules::Rule>, InitError> {
    let drafts: Vec<render::Proposed> = proposals
        .iter()
        .map(|p| render::Proposed {
            proposal: p.clone(),
            threshold: p.default,
            firings: Vec::new(),
            why: String::new(),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("rollbackd-init-{}", std::process::id()));
    let file = dir.join("proposed.yml");
    let loaded = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, render::rules_file(group, &[], &drafts)))
        .map_err(|e| InitError::Rules(e.to_string()))
        .and_then(|()| {
            let mut vars = config.template_variables();
            vars.entry("base_url".into())
                .or_insert_with(|| "http://127.0.0.1:8000".into());
            crate::rules::load::load_paths(
                std::slice::from_ref(&file),
                &vars,
                config.watch.evaluation_interval,
            )
            .map_err(|e| InitError::Rules(e.to_string()))
        });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(loaded?.groups.into_iter().flat_map(|g| g.rules).collect())
}

/// Writes `text` to a new file at `path` (its directory made), never
/// replacing one that appeared meanwhile.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
