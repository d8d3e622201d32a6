//! After a verified rollback, before its record: `[gitops]`'s pull request,
//! so git says what production now runs (`crate::gitops` does the work).

use super::run::Run;
use super::Engine;
use crate::gitops::RevertRecord;

impl Engine {
    /// After a verified rollback, `[gitops]`'s pull request, or why none
    /// was opened; `None` when there is nothing to propose. A restart that
    /// finishes the run asks again and finds the one it opened.
    pub(super) async fn propose_revert(&self, run: &Run<'_>) -> Option<RevertRecord> {
        let (Some(gitops), Some(plan)) = (&self.gitops, &run.plan) else {
            return None;
        };
        if !run.success() {
            return None;
        }
        if self.is_stopping() {
            let record = RevertRecord {
                result: crate::gitops::RevertResult::Failed,
                url: None,
                branch: None,
                detail: "rollbackd was stopping; open the pull request by hand".into(),
            };
            crate::telemetry::events::gitops_pull_request(&run.id, &record);
            return Some(record);
        }
        let event = run.event();
        let incident = crate::gitops::Incident {
            rollback_id: &run.id,
            from: &plan.current,
            target: &plan.target,
            event: &event,
        };
        let record = gitops.propose(&incident).await;
        run.note(record.to_string());
        Some(record)
    }
}
