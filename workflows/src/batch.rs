//! A sync run over more managed tenants than one page of targets (`PrepareSyncOutput::more`):
//! the run's workflow reads every page of targets, then runs each page as a child
//! `SyncBatchWorkflow` — one after another, each with the run's whole window of
//! `max_parallel_tenants` lanes — so the run's own history grows by a handful of events per
//! batch and each child's by about five per tenant of its page, whatever the number of tenants.
//! A run whose targets fit in one page never gets here and syncs its tenants itself, exactly as
//! before batches existed (`sync.rs`).
//!
//! What stays the same as in a run of one page: the run's workflow alone finalizes the run row
//! (`finish_run`, once, after every child closed); a cancel of the run reaches the running
//! child (cancellation type `WaitCancellationCompleted`: the run waits until the child has
//! recorded its tenants) and the batches not started yet are recorded as cancelled; the run's
//! maximum duration is one workflow-time deadline that every child gets and obeys; and at most
//! `max_parallel_tenants` tenants sync at once across the run. Children's workflow ids are
//! `{run's workflow id}-batch-{index}`, so a run's children are found from its id alone.

use std::time::{Duration, UNIX_EPOCH};

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    workflows::join_all, ChildWorkflowCancellationType, ChildWorkflowOptions, ParentClosePolicy,
    WorkflowCancellationToken, WorkflowContext, WorkflowIdReusePolicy, WorkflowResult,
};

use crate::contract::{
    BatchTimeLimit, PrepareSyncInput, RunEnd, SyncActivities, SyncBatchInput, SyncBatchOutput,
    SyncRunInput, SyncTarget, TenantEnd, CONTRACT_VERSION,
};
use crate::sync::{
    bookkeeping_options, describe, finish, lane, local_small_tenants, record_ended, RunContext,
    SmallGroups, TimeLimit, CANCELLED, NOT_STARTED,
};
use crate::SyncWorkflow;

/// The workflow id of a run's `index`-th batch (from 0): derived from the run's workflow id.
pub fn batch_workflow_id(run_workflow_id: &str, index: usize) -> String {
    format!("{run_workflow_id}-batch-{index}")
}

/// Runs a run's targets in batches: `first` is the first page `prepare_sync` returned (with
/// `more` set). Reads the remaining pages, runs each as a child, then finalizes the run.
pub(crate) async fn run_in_batches(
    ctx: &WorkflowContext<SyncWorkflow>,
    input: &SyncRunInput,
    first: Vec<SyncTarget>,
    limit: Option<TimeLimit>,
) -> WorkflowResult<RunEnd> {
    // Every page first, so the run's targets are fixed when it starts, as in a run of one
    // page. The reads are detached from cancellation: a run cancelled now still learns every
    // target, so each is recorded.
    let mut batches = vec![first];
    while let Some(after) = batches
        .last()
        .and_then(|page| page.last())
        .map(|target| target.managed_tenant_id.clone())
    {
        let page = ctx
            .execute_activity(
                SyncActivities::prepare_sync,
                PrepareSyncInput {
                    tenant_id: input.tenant_id.clone(),
                    run_id: input.run_id.clone(),
                    after: Some(after),
                },
                bookkeeping_options(Some(WorkflowCancellationToken::new())),
            )
            .await;
        match page {
            Ok(page) => {
                let more = page.more && !page.targets.is_empty();
                if !page.targets.is_empty() {
                    batches.push(page.targets);
                }
                if !more {
                    break;
                }
            }
            Err(error) => {
                // Not every target is known: no tenant has started, and the run fails as a
                // run whose `prepare_sync` failed does.
                let forced = if ctx.cancellation_token().is_cancelled() {
                    RunEnd::Cancelled
                } else {
                    RunEnd::Failed
                };
                return finish(ctx, input, Some(forced), Some(describe(&error))).await;
            }
        }
    }

    for (index, batch) in batches.iter().enumerate() {
        if ctx.cancellation_token().is_cancelled() {
            record_ended(ctx, input, batch, TenantEnd::Cancelled, CANCELLED, None).await;
            continue;
        }
        let time_limit = match limit {
            None => None,
            Some(limit) if limit.left(ctx).is_none() => {
                record_ended(
                    ctx,
                    input,
                    batch,
                    TenantEnd::Failed,
                    NOT_STARTED,
                    Some(limit.seconds),
                )
                .await;
                continue;
            }
            Some(limit) => Some(BatchTimeLimit {
                seconds: limit.seconds,
                deadline_unix_ms: limit
                    .deadline
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| {
                        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                    }),
            }),
        };
        run_batch(ctx, input, index, batch, time_limit).await;
    }

    let forced = ctx
        .cancellation_token()
        .is_cancelled()
        .then_some(RunEnd::Cancelled);
    finish(ctx, input, forced, None).await
}

/// Runs one batch as a child and waits for it to close. A child that could not start, or that
/// failed, gets its tenants recorded here (a tenant whose result already ended keeps it).
async fn run_batch(
    ctx: &WorkflowContext<SyncWorkflow>,
    input: &SyncRunInput,
    index: usize,
    batch: &[SyncTarget],
    time_limit: Option<BatchTimeLimit>,
) {
    let child_input = SyncBatchInput {
        version: CONTRACT_VERSION,
        tenant_id: input.tenant_id.clone(),
        run_id: input.run_id.clone(),
        targets: batch.to_vec(),
        lanes: input.max_parallel_tenants.max(1),
        time_limit,
    };
    let options = ChildWorkflowOptions::builder()
        .workflow_id(batch_workflow_id(ctx.workflow_id(), index))
        .cancel_type(ChildWorkflowCancellationType::WaitCancellationCompleted)
        .parent_close_policy(ParentClosePolicy::RequestCancel)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .build();
    let outcome = match ctx
        .start_child_workflow(SyncBatchWorkflow::run, child_input, options)
        .await
    {
        Ok(started) => started
            .result()
            .await
            .map(|_| ())
            .map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(mut message) = outcome {
        message.truncate(2000);
        let status = if ctx.cancellation_token().is_cancelled() {
            TenantEnd::Cancelled
        } else {
            TenantEnd::Failed
        };
        record_ended(ctx, input, batch, status, &message, None).await;
    }
}

/// One batch of a run's targets, synced in a sliding window of lanes exactly as a run of one
/// page syncs its targets (`sync::lane`). Targets it had not started when the run was
/// cancelled, or when the run's time ran out, are recorded before it returns; it never
/// finalizes the run.
#[workflow]
#[derive(Default)]
pub struct SyncBatchWorkflow;

#[workflow_methods]
impl SyncBatchWorkflow {
    #[run(name = "entra_sync_batch")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SyncBatchInput,
    ) -> WorkflowResult<SyncBatchOutput> {
        let run_input = SyncRunInput {
            version: input.version,
            tenant_id: input.tenant_id.clone(),
            run_id: input.run_id.clone(),
            max_parallel_tenants: input.lanes.max(1),
        };
        let limit = input.time_limit.map(|limit| TimeLimit {
            seconds: limit.seconds,
            deadline: UNIX_EPOCH + Duration::from_millis(limit.deadline_unix_ms),
        });
        let run = RunContext::new(
            &run_input,
            &input.targets,
            input.lanes,
            SmallGroups::of(ctx),
            local_small_tenants(ctx, &input.targets),
            limit,
        );
        join_all((0..run.window()).map(|_| lane(ctx, &run))).await;

        let rest = run.not_started();
        let (started, not_started) = (input.targets.len() - rest.len(), rest.len());
        if ctx.cancellation_token().is_cancelled() {
            record_ended(
                ctx,
                &run_input,
                &rest,
                TenantEnd::Cancelled,
                CANCELLED,
                None,
            )
            .await;
        } else if let Some(limit) = limit {
            let seconds = Some(limit.seconds);
            record_ended(
                ctx,
                &run_input,
                &rest,
                TenantEnd::Failed,
                NOT_STARTED,
                seconds,
            )
            .await;
        }
        Ok(SyncBatchOutput {
            started: u32::try_from(started).unwrap_or(u32::MAX),
            not_started: u32::try_from(not_started).unwrap_or(u32::MAX),
        })
    }
}
