//! Determinism guard: every workflow history recorded under `tests/histories/` (real runs on a
//! Temporal dev server: completed, partial, cancelled, scheduled with discovery, and their
//! child runs; a run in batches of child workflows, completed and cancelled, with a child; the
//! sync runs once more as recorded after the `local-bookkeeping` patch, `*_local_bookkeeping`;
//! after the `larger-small-groups` patch, a completed run and a batch child,
//! `*_larger_small_groups`, and two direct delta runs of small tenants in a group, one of them
//! with a tenant handed back, `sync_delta_group*`; the same two after the `local-small-tenants`
//! patch, `*_local_small_tenants`) must replay against the current workflow code without a
//! nondeterminism error.
//! A change to a workflow that would break running workflows fails here; after an intended
//! change, guard it with `ctx.patched(…)` or re-record the histories (see
//! `tests/e2e/workflow_support.rs`, `ENTRA_SYNC_RECORD_HISTORIES`).

use std::path::PathBuf;

use entra_sync_workflows::contract::{FinishRunInput, RunEnd, SyncActivities, SyncRunInput};
use entra_sync_workflows::trace::trace_header_interceptor;
use entra_sync_workflows::{
    DiscoveryWorkflow, ScheduledSyncWorkflow, SyncBatchWorkflow, SyncWorkflow,
};
use temporalio_client::WorkflowHistory;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

fn histories() -> Vec<(String, Vec<u8>)> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("tests/histories exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(&path).expect("readable history"))
        })
        .collect()
}

#[tokio::test]
async fn recorded_histories_replay_against_the_current_workflows() {
    let histories = histories();
    assert!(
        histories.len() >= 10,
        "expected the recorded histories, found {}",
        histories.len()
    );
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<SyncWorkflow>()
            .expect("register sync")
            .register_workflow::<SyncBatchWorkflow>()
            .expect("register sync batch")
            .register_workflow::<DiscoveryWorkflow>()
            .expect("register discovery")
            .register_workflow::<ScheduledSyncWorkflow>()
            .expect("register scheduled sync")
            // As the worker runs them: the trace-header interceptor issues no command of its
            // own, so histories recorded without it replay with it.
            .workflow_interceptor(trace_header_interceptor())
            .build(),
    )
    .expect("replayer");
    for (name, bytes) in histories {
        let history = WorkflowHistory::from_json(&bytes).expect("history JSON");
        if let Err(error) = replayer.replay_workflow(history).await {
            panic!("{name} no longer replays: {error}");
        }
    }
}

/// A sync workflow under the real name that finishes the run before preparing it: the kind of
/// reordering a careless edit makes.
#[workflow]
#[derive(Default)]
struct ReorderedSync;

#[workflow_methods]
impl ReorderedSync {
    #[run(name = "entra_sync_run")]
    async fn run(ctx: &mut WorkflowContext<Self>, input: SyncRunInput) -> WorkflowResult<RunEnd> {
        let output = ctx
            .execute_activity(
                SyncActivities::finish_run,
                FinishRunInput {
                    tenant_id: input.tenant_id,
                    run_id: input.run_id,
                    forced: None,
                    message: None,
                },
                ActivityOptions::with_start_to_close_timeout(std::time::Duration::from_secs(60))
                    .build(),
            )
            .await?;
        Ok(output.status)
    }
}

/// The guard can fail: a reordered workflow is reported as nondeterministic.
#[tokio::test]
async fn a_reordered_sync_workflow_fails_replay() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<ReorderedSync>()
            .expect("register")
            .build(),
    )
    .expect("replayer");
    let (_, bytes) = histories()
        .into_iter()
        .find(|(name, _)| name == "sync_completed.json")
        .expect("sync_completed.json is recorded");
    let history = WorkflowHistory::from_json(&bytes).expect("history JSON");
    match replayer.replay_workflow(history).await {
        Err(WorkflowReplayError::Replay(WorkflowReplayFailure::Nondeterminism { .. })) => {}
        other => panic!("expected a nondeterminism failure, got {other:?}"),
    }
}
