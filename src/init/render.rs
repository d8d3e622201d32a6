//! The files `rollbackd init` writes: a rule file whose comments say which
//! series each rule reads, why, and what its back-test found, and a config
//! skeleton for the chosen provider. Pure text.

use super::conventions::Proposal;

/// The rate window, the group's interval and `for` of every proposed rule.
pub(crate) const WINDOW: &str = "2m";
pub(crate) const INTERVAL: &str = "15s";
pub(crate) const FOR: &str = "2m";

/// One proposed rule with its back-test.
pub(crate) struct Proposed {
    pub proposal: Proposal,
    pub threshold: f64,
    /// `(candidate, firings)`, lowest candidate first; empty when there was
    /// no history to back-test.
    pub firings: Vec<(f64, usize)>,
    /// How the threshold was chosen, for the comment and the summary.
    pub why: String,
}

impl Proposed {
    /// `0 firings at 0.5 %; 4 at 0.1 %`-style, the chosen one marked.
    pub(crate) fn table(&self) -> String {
        self.firings
            .iter()
            .map(|(c, n)| {
                let mark = if *c == self.threshold {
                    " <- proposed"
                } else {
                    ""
                };
                format!("{}: {n}{mark}", self.proposal.unit.show(*c))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn expr_block(expr: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    expr.replace("{window}", WINDOW)
        .lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// The rule file. `header` lines become its opening comment.
pub(crate) fn rules_file(group: &str, header: &[String], rules: &[Proposed]) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    out.push_str(&format!(
        "groups:\n  - name: {group}\n    interval: {INTERVAL}\n    rules:\n"
    ));
    for r in rules {
        let p = &r.proposal;
        out.push_str(&format!("      # Reads {}.\n", p.reads));
        out.push_str(&format!("      # {}\n", r.why));
        if !r.firings.is_empty() {
            out.push_str(&format!(
                "      # Firings in the back-test: {}.\n",
                r.table()
            ));
        }
        out.push_str(&format!("      - name: {}\n        expr: |\n", p.name));
        out.push_str(&expr_block(&p.expr, 10));
        out.push_str(&format!(
            "        above: {}\n        for: {FOR}\n",
            number(r.threshold)
        ));
        if let Some(guard) = &p.min_traffic {
            out.push_str(
                "        # Judged only above one request a second: at a handful of requests\n",
            );
            out.push_str("        # one unlucky request is a large share.\n");
            out.push_str("        min_traffic:\n          expr: |\n");
            out.push_str(&expr_block(guard, 12));
            out.push_str("          above: 1\n");
        }
        out.push_str(&format!(
            "        policy: dry_run\n        labels:\n          severity: critical\n        annotations:\n          summary: \"{} ({})\"\n\n",
            p.summary,
            p.unit.show(r.threshold)
        ));
    }
    out.push_str(
        "      # Asked by rollbackd itself, not through Prometheus: it works even when\n      \
         # scraping is broken. {{base_url}} is [service] base_url.\n      \
         - name: HealthCheckFailing\n        probe:\n          url: \"{{base_url}}/health\"\n          \
         timeout: 5s\n          failures: 3\n        policy: dry_run\n        labels:\n          \
         severity: critical\n        annotations:\n          summary: \"/health failed 3 times in a row\"\n",
    );
    out
}

/// A threshold as YAML writes it: no float noise.
pub(crate) fn number(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The configuration skeleton.
pub(crate) fn config_file(
    prometheus: &str,
    service: &str,
    rules_dir: &str,
    provider: &str,
) -> String {
    let provider_section = match provider {
        "railway" => {
            "[provider]\ntype = \"railway\"\n\
             # The token: RAILWAY_TOKEN (a project token) or RAILWAY_API_TOKEN in the environment.\n\
             project_id = \"REPLACE-with-the-project-id\"\n\
             service_id = \"REPLACE-with-the-service-id\"\n\
             environment_id = \"REPLACE-with-the-environment-id\"\n"
        }
        "argocd" => {
            "[provider]\ntype = \"argocd\"\n\
             server = \"https://argocd.example.com\"   # REPLACE\n\
             application = \"REPLACE-with-the-application\"\n\
             # The token: token_file, or ARGOCD_AUTH_TOKEN in the environment\n\
             # (an account that may get, update and sync the application).\n\
             # token_file = \"/var/run/secrets/argocd/token\"\n"
        }
        _ => {
            "[provider]\ntype = \"command\"\n\
             # Commands that print the deployments as JSON, one deployment's status,\n\
             # and roll back to ROLLBACKD_DEPLOYMENT_ID (docs/rolling-back.md, \"Command\").\n\
             list = [\"./deploys.sh\", \"list\"]\n\
             status = [\"./deploys.sh\", \"status\"]\n\
             rollback = [\"./deploys.sh\", \"rollback\"]\n"
        }
    };
    format!(
        "# rollbackd's configuration, written by `rollbackd init`. Every rule starts\n\
         # as `policy: dry_run`: rollbackd logs what it would do and changes nothing.\n\
         # Check it with `rollbackd check`; run it with `rollbackd watch`.\n\n\
         [prometheus]\nurl = \"{prometheus}\"\n\n\
         [watch]\nrule_paths = [\"{rules_dir}\"]\n\n\
         [service]\nname = \"{service}\"\n\
         # Where the service answers /health: the probe rule and the checks after a rollback.\n\
         base_url = \"http://127.0.0.1:8000\"   # REPLACE\n\n\
         [state]\n# The history, the breaker and the journals live in engine.state_dir.\n\n\
         {provider_section}"
    )
}

/// For a service with none of the known conventions: the rules to fill in.
pub(crate) fn template(selector: &str) -> String {
    let sel = if selector.is_empty() {
        String::new()
    } else {
        format!("{selector}, ")
    };
    format!(
        "groups:\n  - name: service\n    interval: {INTERVAL}\n    rules:\n      \
         - name: HighErrorRate\n        expr: |\n          \
         (sum(rate(REQUESTS{{{sel}STATUS=~\"5..\"}}[{WINDOW}])) or vector(0))\n            /\n          \
         sum(rate(REQUESTS{{{sel_trim}}}[{WINDOW}]))\n        above: 0.01\n        for: {FOR}\n        \
         policy: dry_run\n",
        sel_trim = selector
    )
}
