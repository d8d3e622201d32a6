//! After a verified rollback, before its record: `[gitops]`'s pull request,
//! so git says what production now runs (`crate::gitops` does the work).

use super::run::Run;
use super::Engine;

impl Engine {
    /// After a verified rollback, `[gitops]`'s pull request, recorded with
    /// the run (a restart that finishes the run asks again and finds the
    /// one it opened).
    pub(super) async fn propose_revert(&self, run: &mut Run<'_>) {
        let (Some(gitops), Some(plan)) = (&self.gitops, &run.plan) else {
            return;
        };
        if !run.success() || run.revert.is_some() {
            return;
        }
        if self.is_stopping() {
            let record = crate::gitops::RevertRecord {
                result: crate::gitops::RevertResult::Failed,
                url: None,
                branch: None,
                detail: "rollbackd was stopping; open the pull request by hand".into(),
            };
            crate::telemetry::events::gitops_pull_request(&run.id, &record);
            run.revert = Some(record);
            return;
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
        run.revert = Some(record);
    }
}
