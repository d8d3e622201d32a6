//! The pull request's body: what the change does and the incident behind
//! it, in Markdown. Pure.

use super::config::GitopsConfig;
use super::{short, Change, Incident};
use crate::provider::Deployment;

/// The pull request's body: what changed, why (the rules, their values,
/// the blame judgement), the timeline and where the history entry is.
pub(super) fn body(config: &GitopsConfig, incident: &Incident<'_>, change: &Change) -> String {
    let e = incident.event;
    let (from, target) = (incident.from, incident.target);
    let sha = |d: &Deployment| {
        d.git_sha
            .as_deref()
            .map(|s| format!(" (`{}`)", short(s)))
            .unwrap_or_default()
    };
    let mut out = format!(
        "rollbackd rolled production back from deployment `{}`{} to `{}`{} and verified it healthy. \
         This pull request makes git say the same: it {}.\n\n\
         Until it is merged, git still describes the version that was rolled back: \
         a sync or a redeploy from git brings it back.\n\n### Why\n\n{}\n",
        from.id,
        sha(from),
        target.id,
        sha(target),
        change.what,
        e.reason
    );
    if !e.rules.is_empty() {
        out.push_str("\n| rule | value | condition |\n|---|---|---|\n");
        for r in &e.rules {
            let value = r
                .value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "| {}/{} | {value} | `{}` |\n",
                r.group, r.rule, r.condition
            ));
        }
    }
    if let Some(blame) = &e.blame {
        out.push_str(&format!("\nBlame: {blame}\n"));
    }
    out.push_str("\n### Timeline\n\n");
    if let Some(d) = &e.detection {
        for (what, at) in [
            ("deployed", &d.deployed_at),
            ("first breach", &d.breached_at),
            ("rule fired", &d.fired_at),
            ("platform called", &d.called_at),
            ("verified healthy", &d.healthy_at),
        ] {
            if let Some(at) = at {
                out.push_str(&format!("- {what}: {at}\n"));
            }
        }
    }
    out.push_str("\n| phase | result | seconds | detail |\n|---|---|---|---|\n");
    for p in &e.phases {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} |\n",
            p.name.as_str(),
            p.result.as_str(),
            p.duration_seconds,
            p.detail.replace('|', "\\|")
        ));
    }
    out.push_str(&format!(
        "\n### History\n\n`rollbackd history --show {}`",
        incident.rollback_id
    ));
    if let Some(link) = &config.link {
        out.push_str(&format!(
            " or {}/api/v1/rollbacks/{}",
            link.trim_end_matches('/'),
            incident.rollback_id
        ));
    }
    out.push('\n');
    out
}
