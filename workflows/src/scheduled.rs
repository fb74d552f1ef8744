//! The scheduled sync workflow, started by a PSA tenant's Temporal Schedule. A schedule cannot
//! create a run row before it fires, so this workflow opens its runs itself through the
//! `open_scheduled_run` activity (which deduplicates exactly as a manual "Sync now" does),
//! optionally runs discovery first, and runs each opened run as a child workflow whose id is
//! `workflow_id_for_run`, so scheduled, manual and initial runs look the same to the API, the
//! cancel endpoint and the run reconciler.

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowContext, WorkflowIdReusePolicy, WorkflowResult,
};

use crate::contract::{
    DiscoveryRunInput, FinishRunInput, OpenScheduledRunInput, OpenScheduledRunOutput, RunEnd,
    RunKindName, ScheduleSettingsInput, ScheduledSyncInput, ScheduledSyncOutput, SyncActivities,
    SyncRunInput, CONTRACT_VERSION,
};
use crate::sync::bookkeeping_options;
use crate::{workflow_id_for_run, DiscoveryWorkflow, SyncWorkflow};

#[workflow]
#[derive(Default)]
pub struct ScheduledSyncWorkflow;

#[workflow_methods]
impl ScheduledSyncWorkflow {
    #[run(name = "entra_scheduled_sync")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ScheduledSyncInput,
    ) -> WorkflowResult<ScheduledSyncOutput> {
        let settings = ctx
            .execute_activity(
                SyncActivities::load_schedule_settings,
                ScheduleSettingsInput {
                    tenant_id: input.tenant_id.clone(),
                },
                bookkeeping_options(None),
            )
            .await?;

        let mut output = ScheduledSyncOutput::default();
        if settings.discovery_before_sync {
            let opened = open(ctx, &input, RunKindName::Discovery).await?;
            output.discovery_run_id = Some(opened.run_id.clone());
            if !opened.deduplicated {
                // Whatever discovery ends as, the sync still runs for the tenants already
                // mapped: a failed listing marks nothing missing (SPEC §3).
                let child_input = DiscoveryRunInput {
                    version: CONTRACT_VERSION,
                    tenant_id: input.tenant_id.clone(),
                    run_id: opened.run_id.clone(),
                };
                let workflow_id = workflow_id_for_run(
                    RunKindName::Discovery.as_str(),
                    &input.tenant_id,
                    &opened.run_id,
                );
                match ctx
                    .start_child_workflow(
                        DiscoveryWorkflow::run,
                        child_input,
                        child_options(workflow_id),
                    )
                    .await
                {
                    Ok(started) => {
                        let _ = started.result().await;
                    }
                    Err(error) => {
                        fail_unstarted(ctx, &input, &opened.run_id, error.to_string()).await?;
                    }
                }
            }
        }

        let opened = open(ctx, &input, RunKindName::Sync).await?;
        output.sync_run_id = opened.run_id.clone();
        output.deduplicated = opened.deduplicated;
        if opened.deduplicated {
            // A run of the same scope (manual or an earlier firing) is still going: it covers
            // this firing, exactly like a second press of "Sync All Tenants Now".
            return Ok(output);
        }
        let child_input = SyncRunInput {
            version: CONTRACT_VERSION,
            tenant_id: input.tenant_id.clone(),
            run_id: opened.run_id.clone(),
            max_parallel_tenants: settings.max_parallel_tenants.max(1),
        };
        let workflow_id =
            workflow_id_for_run(RunKindName::Sync.as_str(), &input.tenant_id, &opened.run_id);
        match ctx
            .start_child_workflow(SyncWorkflow::run, child_input, child_options(workflow_id))
            .await
        {
            Ok(started) => {
                output.status = Some(started.result().await.unwrap_or(RunEnd::Failed));
            }
            Err(error) => {
                fail_unstarted(ctx, &input, &opened.run_id, error.to_string()).await?;
                output.status = Some(RunEnd::Failed);
            }
        }
        Ok(output)
    }
}

/// Child runs are asked to cancel (and so finalize their run rows) when this workflow is
/// cancelled or terminated; a run id names exactly one workflow, so its id is never reused.
fn child_options(workflow_id: String) -> ChildWorkflowOptions {
    ChildWorkflowOptions::builder()
        .workflow_id(workflow_id)
        .parent_close_policy(ParentClosePolicy::RequestCancel)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .build()
}

async fn open(
    ctx: &WorkflowContext<ScheduledSyncWorkflow>,
    input: &ScheduledSyncInput,
    kind: RunKindName,
) -> WorkflowResult<OpenScheduledRunOutput> {
    Ok(ctx
        .execute_activity(
            SyncActivities::open_scheduled_run,
            OpenScheduledRunInput {
                tenant_id: input.tenant_id.clone(),
                kind,
            },
            bookkeeping_options(None),
        )
        .await?)
}

/// A run whose workflow could not be started is finished as failed right away, so it never
/// stays `running` without a workflow.
async fn fail_unstarted(
    ctx: &WorkflowContext<ScheduledSyncWorkflow>,
    input: &ScheduledSyncInput,
    run_id: &str,
    mut message: String,
) -> WorkflowResult<()> {
    message.truncate(2000);
    ctx.execute_activity(
        SyncActivities::finish_run,
        FinishRunInput {
            tenant_id: input.tenant_id.clone(),
            run_id: run_id.to_owned(),
            forced: Some(RunEnd::Failed),
            message: Some(message),
        },
        bookkeeping_options(Some(temporalio_sdk::WorkflowCancellationToken::new())),
    )
    .await?;
    Ok(())
}
