//! The discovery workflow: lists the customer tenants the connection manages, upserts them and
//! marks the ones no longer returned as missing; the run row is always finalized.

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use crate::contract::{DiscoverInput, DiscoveryRunInput, FinishRunInput, RunEnd, SyncActivities};
use crate::sync::{bookkeeping_options, describe};

#[workflow]
#[derive(Default)]
pub struct DiscoveryWorkflow;

#[workflow_methods]
impl DiscoveryWorkflow {
    #[run(name = "entra_discovery_run")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: DiscoveryRunInput,
    ) -> WorkflowResult<RunEnd> {
        let discovered = ctx
            .execute_activity(
                SyncActivities::discover_tenants,
                DiscoverInput {
                    tenant_id: input.tenant_id.clone(),
                    run_id: input.run_id.clone(),
                },
                bookkeeping_options(None),
            )
            .await;
        let (forced, message) = match discovered {
            Ok(_) => (Some(RunEnd::Completed), None),
            Err(error) if ctx.cancellation_token().is_cancelled() => {
                (Some(RunEnd::Cancelled), Some(describe(&error)))
            }
            Err(error) => (Some(RunEnd::Failed), Some(describe(&error))),
        };
        let output = ctx
            .execute_activity(
                SyncActivities::finish_run,
                FinishRunInput {
                    tenant_id: input.tenant_id.clone(),
                    run_id: input.run_id.clone(),
                    forced,
                    message,
                },
                bookkeeping_options(Some(temporalio_sdk::WorkflowCancellationToken::new())),
            )
            .await?;
        Ok(output.status)
    }
}
