//! Loading rule files: read, parse, expand templates, validate. Every problem
//! in every file is collected and reported together, each naming its file,
//! group and rule, so one `rollbackd rules check` run shows all there is to fix.
//! Loading is all-or-nothing: a caller gets a whole [`RuleSet`] or errors.
//! Finding and reading the files (and what can never be a rule file) is
//! `files.rs`.
//!
//! Just over 600 lines with its comments (under 600 of code; the tests,
//! one per problem a user can make, are in `load/tests.rs`): parsing and
//! validating a rule file is one pass that collects every problem with its
//! place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};
use serde::Deserialize;

use super::model::*;
use super::template;
use crate::duration;

/// Template variables available to rule files (`{{service}}` and friends).
pub type Variables = BTreeMap<String, String>;

/// One problem in one rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: PathBuf,
    pub group: Option<String>,
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(group) = &self.group {
            write!(f, ": group {group:?}")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, ", rule {rule:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A configured rule path does not exist or cannot be listed.
    #[error("rule path {}: {cause} (check watch.rule_paths in the config)", path.display())]
    Path {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// One or more files have problems; all of them are listed.
    #[error("{} problem(s) in rule files:\n{}", .0.len(), render(.0))]
    Invalid(Vec<RuleError>),
}

fn render(errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads and validates every rule file under `paths`.
pub fn load_paths(
    paths: &[PathBuf],
    vars: &Variables,
    default_interval: Duration,
) -> Result<RuleSet, LoadError> {
    let (files, mut errors) = super::files::rule_files(paths)?;
    let mut set = RuleSet::default();
    for file in &files {
        match super::files::read(file) {
            Ok(text) => parse_file(file, &text, vars, default_interval, &mut set, &mut errors),
            Err(e) => errors.push(e),
        }
    }
    set.files = files;
    let mut seen = BTreeMap::new();
    for group in &set.groups {
        if let Some(first) = seen.insert(group.name.clone(), group.file.clone()) {
            errors.push(RuleError {
                file: group.file.clone(),
                group: Some(group.name.clone()),
                rule: None,
                message: format!(
                    "group name already used in {}; group names must be unique across all rule files",
                    first.display()
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    interval: Option<String>,
    #[serde(default)]
    rules: Vec<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(alias = "alert")]
    name: String,
    expr: Option<String>,
    above: Option<f64>,
    below: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    on_no_data: Option<NoDataPolicy>,
    on_error: Option<ErrorPolicy>,
    min_traffic: Option<RawGuard>,
    #[serde(default)]
    policy: Policy,
    probe: Option<RawProbe>,
    blame: Option<RawBlame>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlame {
    enabled: Option<bool>,
    baseline: Option<String>,
    onset_window: Option<String>,
    max_baseline_share: Option<f64>,
    min_factor: Option<f64>,
    min_margin: Option<f64>,
    #[serde(default)]
    inhibit: Vec<RawInhibitor>,
    versions: Option<RawVersions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibitor {
    name: Option<String>,
    expr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersions {
    label: Option<String>,
    expr: Option<String>,
    errors: Option<String>,
    requests: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    expr: String,
    above: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    url: String,
    timeout: Option<String>,
    failures: Option<u32>,
    #[serde(default)]
    expect_status: Vec<u16>,
    #[serde(default)]
    body: Option<crate::expect::BodyCheck>,
}

/// Collects the errors of one rule while it is being validated.
struct RuleCtx<'a> {
    file: &'a Path,
    group: &'a str,
    rule: String,
    errors: Vec<RuleError>,
}

impl RuleCtx<'_> {
    fn error(&mut self, message: impl Into<String>) {
        self.errors.push(RuleError {
            file: self.file.to_path_buf(),
            group: Some(self.group.to_string()),
            rule: Some(self.rule.clone()),
            message: message.into(),
        });
    }

    fn expand(&mut self, field: &str, text: &str, vars: &Variables) -> Option<String> {
        match template::expand(text, vars) {
            Ok(out) => Some(out),
            Err(missing) => {
                let names = missing
                    .iter()
                    .map(|m| format!("{{{{{m}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.error(format!(
                    "{field}: template variable(s) {names} have no value; set them under [variables] \
                     in the config (service, environment and base_url come from [service])"
                ));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, text: Option<&str>) -> Duration {
        match text.map(duration::parse) {
            None => Duration::ZERO,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.error(format!("{field}: {e}"));
                Duration::ZERO
            }
        }
    }

    fn promql(&mut self, field: &str, expr: &str) {
        match parser::parse(expr) {
            Err(e) => self.error(format!("{field}: invalid PromQL: {}", e.trim())),
            Ok(ast) => match ast.value_type() {
                ValueType::Vector | ValueType::Scalar => {
                    if is_filtering_comparison(&ast) {
                        self.error(format!(
                            "{field}: the expression ends in a comparison that filters series, so an \
                             empty result would mean both \"healthy\" and \"no data\"; put the value in \
                             {field} and the threshold in `above:` or `below:`"
                        ));
                    }
                }
                other => self.error(format!(
                    "{field}: the expression returns a {other}; it must return an instant vector or \
                     a scalar (wrap range selectors in a function such as rate())"
                )),
            },
        }
    }
}

fn is_filtering_comparison(expr: &Expr) -> bool {
    match expr {
        Expr::Paren(p) => is_filtering_comparison(&p.expr),
        Expr::Binary(b) => b.op.is_comparison_operator() && !b.return_bool(),
        _ => false,
    }
}

pub(crate) fn parse_file(
    file: &Path,
    text: &str,
    vars: &Variables,
    default_interval: Duration,
    set: &mut RuleSet,
    errors: &mut Vec<RuleError>,
) {
    let file_error = |message: String| RuleError {
        file: file.to_path_buf(),
        group: None,
        rule: None,
        message,
    };
    if text.trim().is_empty() {
        return;
    }
    let raw: RawFile = match serde_norway::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(file_error(format!(
                "{e} (a rule file is `groups:` with a list of groups, each with `name` and `rules`)"
            )));
            return;
        }
    };
    for (gi, group) in raw.groups.into_iter().enumerate() {
        let group_name = if group.name.trim().is_empty() {
            errors.push(file_error(format!("groups[{gi}]: `name` is empty")));
            format!("#{gi}")
        } else {
            group.name.clone()
        };
        let interval = match group.interval.as_deref().map(duration::parse) {
            None => default_interval,
            Some(Ok(d)) if d > Duration::ZERO => d,
            Some(Ok(_)) => {
                errors.push(RuleError {
                    group: Some(group_name.clone()),
                    ..file_error("interval: must be greater than 0".into())
                });
                default_interval
            }
            Some(Err(e)) => {
                errors.push(RuleError {
                    group: Some(group_name.clone()),
                    ..file_error(format!("interval: {e}"))
                });
                default_interval
            }
        };
        let mut rules = Vec::new();
        let mut names = BTreeSet::new();
        for (ri, value) in group.rules.into_iter().enumerate() {
            let label = value
                .get("name")
                .or_else(|| value.get("alert"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("#{}", ri + 1));
            let mut ctx = RuleCtx {
                file,
                group: &group_name,
                rule: label.clone(),
                errors: Vec::new(),
            };
            if !names.insert(label.clone()) {
                ctx.error("another rule in this group has the same name; names must be unique within a group");
            }
            match serde_norway::from_value::<RawRule>(value) {
                Err(e) => ctx.error(e.to_string()),
                Ok(raw) => {
                    if let Some(rule) = validate_rule(raw, vars, &mut ctx) {
                        if ctx.errors.is_empty() {
                            rules.push(rule);
                        }
                    }
                }
            }
            errors.extend(ctx.errors);
        }
        set.groups.push(Group {
            name: group_name,
            file: file.to_path_buf(),
            interval,
            rules,
        });
    }
}

fn validate_rule(mut raw: RawRule, vars: &Variables, ctx: &mut RuleCtx) -> Option<Rule> {
    if raw.name.trim().is_empty() {
        ctx.error("`name` is empty");
    }
    let for_ = ctx.duration("for", raw.for_.as_deref());
    let keep_firing_for = ctx.duration("keep_firing_for", raw.keep_firing_for.as_deref());
    let mut labels = BTreeMap::new();
    for (key, value) in &raw.labels {
        if !is_label_name(key) {
            ctx.error(format!(
                "labels: {key:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        if let Some(v) = ctx.expand(&format!("labels.{key}"), value, vars) {
            labels.insert(key.clone(), v);
        }
    }
    let mut annotations = BTreeMap::new();
    for (key, value) in &raw.annotations {
        if let Some(v) = ctx.expand(&format!("annotations.{key}"), value, vars) {
            annotations.insert(key.clone(), v);
        }
    }
    let blame = match raw.blame.take() {
        None => RuleBlame::default(),
        Some(b) => validate_blame(b, vars, ctx),
    };
    let kind = match raw.probe {
        Some(probe) => {
            for (present, field) in [
                (raw.expr.is_some(), "expr"),
                (raw.above.is_some(), "above"),
                (raw.below.is_some(), "below"),
                (raw.min_traffic.is_some(), "min_traffic"),
                (raw.on_no_data.is_some(), "on_no_data"),
                (raw.on_error.is_some(), "on_error"),
            ] {
                if present {
                    ctx.error(format!(
                        "`{field}` does not apply to a probe rule (a probe fires after `probe.failures` \
                         consecutive failed checks); remove it or split this into two rules"
                    ));
                }
            }
            validate_probe(probe, vars, ctx).map(RuleKind::Probe)
        }
        None => validate_query(&raw, vars, ctx).map(RuleKind::Query),
    }?;
    Some(Rule {
        name: raw.name,
        kind,
        for_,
        keep_firing_for,
        labels,
        annotations,
        policy: raw.policy,
        blame,
    })
}

/// `blame:`: each value checked, every expression parsed. Inhibitors may
/// end in a filtering comparison (`up{job="payments"} == 0`): like an
/// alert's expression, a series in the answer means the condition holds.
fn validate_blame(raw: RawBlame, vars: &Variables, ctx: &mut RuleCtx) -> RuleBlame {
    let positive = |ctx: &mut RuleCtx, field: &str, text: Option<&str>| {
        let d = text.map(|t| ctx.duration(field, Some(t)));
        if d == Some(Duration::ZERO) {
            ctx.error(format!("{field}: must be greater than 0"));
        }
        d
    };
    let baseline = positive(ctx, "blame.baseline", raw.baseline.as_deref());
    let onset_window = positive(ctx, "blame.onset_window", raw.onset_window.as_deref());
    if let Some(share) = raw.max_baseline_share {
        if !(share > 0.0 && share <= 1.0) {
            ctx.error("blame.max_baseline_share must be above 0 and at most 1 (a share of the baseline's evaluations)");
        }
    }
    if let Some(factor) = raw.min_factor {
        if !(factor.is_finite() && factor >= 1.0) {
            ctx.error("blame.min_factor must be a number of at least 1 (how many times worse than the baseline)");
        }
    }
    if let Some(margin) = raw.min_margin {
        if !(margin.is_finite() && margin >= 0.0) {
            ctx.error("blame.min_margin must be a finite number of at least 0");
        }
    }
    let mut inhibit = Vec::new();
    for (i, raw) in raw.inhibit.into_iter().enumerate() {
        let name = raw.name.unwrap_or_else(|| format!("inhibit[{i}]"));
        if inhibit.iter().any(|x: &Inhibitor| x.name == name) {
            ctx.error(format!("blame.inhibit: two inhibitors are named {name:?}"));
        }
        let field = format!("blame.inhibit[{i}].expr");
        if let Some(expr) = ctx.expand(&field, &raw.expr, vars) {
            any_vector(ctx, &field, &expr);
            inhibit.push(Inhibitor { name, expr });
        }
    }
    let versions = raw.versions.map(|v| {
        if let Some(label) = &v.label {
            if !is_label_name(label) {
                ctx.error(format!(
                    "blame.versions.label: {label:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                ));
            }
        }
        if v.errors.is_some() != v.requests.is_some() {
            ctx.error("blame.versions: `errors` and `requests` go together (failed and all requests per version)");
        }
        if v.expr.is_none() && v.errors.is_none() && v.requests.is_none() {
            ctx.error("blame.versions: needs `expr` (the value per version) or `errors` with `requests` (counts per version)");
        }
        let expand = |ctx: &mut RuleCtx, key: &str, text: Option<String>| {
            let field = format!("blame.versions.{key}");
            let expr = text.and_then(|t| ctx.expand(&field, &t, vars));
            if let Some(e) = &expr {
                ctx.promql(&field, e);
            }
            expr
        };
        VersionCompare {
            label: v.label,
            expr: expand(ctx, "expr", v.expr),
            errors: expand(ctx, "errors", v.errors),
            requests: expand(ctx, "requests", v.requests),
        }
    });
    RuleBlame {
        enabled: raw.enabled,
        baseline,
        onset_window,
        max_baseline_share: raw.max_baseline_share,
        min_factor: raw.min_factor,
        min_margin: raw.min_margin,
        inhibit,
        versions,
    }
}

/// An expression that answers series or a number, comparisons allowed.
fn any_vector(ctx: &mut RuleCtx, field: &str, expr: &str) {
    match parser::parse(expr) {
        Err(e) => ctx.error(format!("{field}: invalid PromQL: {}", e.trim())),
        Ok(ast) if !matches!(ast.value_type(), ValueType::Vector | ValueType::Scalar) => {
            ctx.error(format!(
                "{field}: the expression returns a {}; it must return an instant vector",
                ast.value_type()
            ))
        }
        Ok(_) => {}
    }
}

fn validate_query(raw: &RawRule, vars: &Variables, ctx: &mut RuleCtx) -> Option<QueryRule> {
    let Some(expr) = raw.expr.as_deref() else {
        ctx.error("`expr` is missing: a rule needs either `expr` with `above`/`below`, or `probe`");
        return None;
    };
    let expr = ctx.expand("expr", expr, vars);
    if let Some(expr) = &expr {
        ctx.promql("expr", expr);
    }
    let condition = match (raw.above, raw.below) {
        (Some(threshold), None) => Some(Condition {
            op: Comparison::Above,
            threshold,
        }),
        (None, Some(threshold)) => Some(Condition {
            op: Comparison::Below,
            threshold,
        }),
        (Some(_), Some(_)) => {
            ctx.error("has both `above` and `below`; keep one (write two rules for a band)");
            None
        }
        (None, None) => {
            ctx.error(
                "needs a threshold: `above: N` (breach when the value is greater) or `below: N`",
            );
            None
        }
    };
    if let Some(c) = &condition {
        if !c.threshold.is_finite() {
            ctx.error("the threshold must be a finite number");
        }
    }
    let min_traffic = match &raw.min_traffic {
        None => None,
        Some(guard) => {
            let expr = ctx.expand("min_traffic.expr", &guard.expr, vars);
            if let Some(e) = &expr {
                ctx.promql("min_traffic.expr", e);
            }
            if !guard.above.is_finite() {
                ctx.error("min_traffic.above must be a finite number");
            }
            expr.map(|expr| TrafficGuard {
                expr,
                above: guard.above,
            })
        }
    };
    Some(QueryRule {
        expr: expr?,
        condition: condition?,
        on_no_data: raw.on_no_data.unwrap_or_default(),
        on_error: raw.on_error.unwrap_or_default(),
        min_traffic,
    })
}

fn validate_probe(raw: RawProbe, vars: &Variables, ctx: &mut RuleCtx) -> Option<ProbeRule> {
    let url = ctx.expand("probe.url", &raw.url, vars)?;
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => ctx.error(format!(
            "probe.url: {url:?} uses {:?}; only http and https are probed",
            u.scheme()
        )),
        Err(e) => ctx.error(format!(
            "probe.url: {url:?} is not a URL ({e}); write it like \"{{{{base_url}}}}/health\""
        )),
    }
    let timeout = match raw.timeout.as_deref() {
        None => Duration::from_secs(5),
        Some(t) => ctx.duration("probe.timeout", Some(t)),
    };
    if timeout.is_zero() {
        ctx.error("probe.timeout must be greater than 0");
    }
    let failures = raw.failures.unwrap_or(3);
    if failures == 0 {
        ctx.error("probe.failures must be at least 1");
    }
    for status in &raw.expect_status {
        if !(100..=599).contains(status) {
            ctx.error(format!(
                "probe.expect_status: {status} is not an HTTP status"
            ));
        }
    }
    if let Some(body) = &raw.body {
        let mut problems = Vec::new();
        body.validate("probe", &mut problems);
        for p in problems {
            ctx.error(p);
        }
    }
    Some(ProbeRule {
        url,
        timeout,
        failures,
        expect: crate::expect::Expect {
            status: raw.expect_status,
            body: raw.body,
        },
    })
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
