//! The sync workflow: one run over the managed tenants in its scope. Tenants sync as bounded
//! concurrent `sync_tenant` activities, each with its own retry policy, so one tenant's failure
//! leaves the others running; the run row is always finalized, also on failure and cancel.

use std::time::Duration;

use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    workflows::join_all, ActivityExecutionError, ActivityOptions, WorkflowCancellationToken,
    WorkflowContext, WorkflowResult,
};

use crate::contract::{
    FinishRunInput, FinishRunOutput, PrepareSyncInput, RunEnd, SyncActivities, SyncRunInput,
    SyncTarget, SyncTenantInput, TenantEnd, TenantFailureInput,
};

/// Error type names (set by the activities from the error classification) that retrying cannot
/// fix: the connection must be reconnected, consent granted, or configuration changed.
pub const NON_RETRYABLE_ERROR_TYPES: [&str; 4] =
    ["reauth_required", "tenant_access", "config", "invalid"];

/// Options for short bookkeeping activities (database only).
pub(crate) fn bookkeeping_options(
    cancellation: Option<WorkflowCancellationToken>,
) -> ActivityOptions {
    let mut options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(20)
                .build(),
        )
        .build();
    options.cancellation_token = cancellation;
    options
}

/// Options for one tenant's sync: long, heartbeating (the heartbeat carries the page cursor so a
/// retry resumes where the last attempt stopped), retried with backoff unless the error class
/// says retrying is pointless.
fn tenant_sync_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(6 * 60 * 60))
        .heartbeat_timeout(Duration::from_secs(60))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(2))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(120))
                .maximum_attempts(5)
                .non_retryable_error_types(NON_RETRYABLE_ERROR_TYPES)
                .build(),
        )
        .build()
}

#[workflow]
#[derive(Default)]
pub struct SyncWorkflow;

#[workflow_methods]
impl SyncWorkflow {
    #[run(name = "entra_sync_run")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SyncRunInput,
    ) -> WorkflowResult<RunEnd> {
        let prepared = ctx
            .execute_activity(
                SyncActivities::prepare_sync,
                PrepareSyncInput {
                    tenant_id: input.tenant_id.clone(),
                    run_id: input.run_id.clone(),
                },
                bookkeeping_options(None),
            )
            .await;
        let targets = match prepared {
            Ok(prepared) => prepared.targets,
            Err(error) => {
                let forced = if ctx.cancellation_token().is_cancelled() {
                    RunEnd::Cancelled
                } else {
                    RunEnd::Failed
                };
                return finish(ctx, &input, Some(forced), Some(describe(&error))).await;
            }
        };

        let window = input.max_parallel_tenants.max(1) as usize;
        for chunk in targets.chunks(window) {
            if ctx.cancellation_token().is_cancelled() {
                break;
            }
            let syncs = chunk
                .iter()
                .map(|target| sync_one(ctx, &input, target.clone()));
            join_all(syncs).await;
        }

        let forced = ctx
            .cancellation_token()
            .is_cancelled()
            .then_some(RunEnd::Cancelled);
        finish(ctx, &input, forced, None).await
    }
}

/// Syncs one tenant; on final failure records why in the tenant result. Never fails the run.
async fn sync_one(ctx: &WorkflowContext<SyncWorkflow>, input: &SyncRunInput, target: SyncTarget) {
    let managed_tenant_id = target.managed_tenant_id.clone();
    let outcome = ctx
        .execute_activity(
            SyncActivities::sync_tenant,
            SyncTenantInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                target,
            },
            tenant_sync_options(),
        )
        .await;
    let (status, message) = match outcome {
        Ok(_) => return,
        Err(ActivityExecutionError::Cancelled(_)) => {
            (TenantEnd::Cancelled, "the run was cancelled".to_owned())
        }
        Err(error) => (TenantEnd::Failed, describe(&error)),
    };
    // Detached from the workflow's cancellation so a cancelled run still records the tenant.
    let _ = ctx
        .execute_activity(
            SyncActivities::record_tenant_failure,
            TenantFailureInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                managed_tenant_id,
                status,
                message,
            },
            bookkeeping_options(Some(WorkflowCancellationToken::new())),
        )
        .await;
}

async fn finish(
    ctx: &WorkflowContext<SyncWorkflow>,
    input: &SyncRunInput,
    forced: Option<RunEnd>,
    message: Option<String>,
) -> WorkflowResult<RunEnd> {
    let FinishRunOutput { status } = ctx
        .execute_activity(
            SyncActivities::finish_run,
            FinishRunInput {
                tenant_id: input.tenant_id.clone(),
                run_id: input.run_id.clone(),
                forced,
                message,
            },
            bookkeeping_options(Some(WorkflowCancellationToken::new())),
        )
        .await?;
    Ok(status)
}

/// The message of an activity failure without the SDK's wrapping; activities build their
/// messages from classified errors, which carry no secrets.
pub(crate) fn describe(error: &ActivityExecutionError) -> String {
    let mut message = error
        .failure()
        .and_then(|failure| failure.cause.as_ref().map(|cause| cause.message.clone()))
        .or_else(|| error.failure().map(|failure| failure.message.clone()))
        .unwrap_or_else(|| error.to_string());
    message.truncate(2000);
    message
}
