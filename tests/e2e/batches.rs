//! A run over more managed tenants than one batch (`sync.batch_tenants`, here 3) runs each
//! batch as a child `SyncBatchWorkflow` on the real Temporal server: the run completes with
//! every tenant's result, its children exist under ids derived from the run's workflow id, run
//! one after another with at most `max_parallel_tenants` tenants in flight, and the run's own
//! history holds no tenant activity; a cancel mid-run reaches the running child and the run
//! ends `cancelled` with a result for every tenant, also those whose batch never started.

use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::{FaultKind, FaultSpec, SimulatorConfig};
use entra_sync_workflows::{batch_workflow_id, workflow_id_for_run};
use serde_json::Value;
use temporalio_client::{Client, UntypedWorkflow};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{
    prepare, record_history, start_sync, temporal, wait_finished, wait_for_a_tenant,
};

const TENANTS: usize = 8;
const BATCH: usize = 3;
const LANES: usize = 2;

async fn events(client: &Client, workflow_id: &str) -> Result<Vec<HistoryEvent>> {
    Ok(client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .fetch_history(Default::default())
        .into_events()
        .await?)
}

fn activity_name(event: &HistoryEvent) -> Option<&str> {
    match &event.attributes {
        Some(Attributes::ActivityTaskScheduledEventAttributes(scheduled)) => scheduled
            .activity_type
            .as_ref()
            .map(|kind| kind.name.as_str()),
        _ => None,
    }
}

/// The most `sync_tenant` activities scheduled and not yet closed at once in a history.
fn peak_tenants(events: &[HistoryEvent]) -> usize {
    let mut open_ids = std::collections::BTreeSet::new();
    let mut peak = 0;
    for event in events {
        if activity_name(event) == Some("sync_tenant") {
            open_ids.insert(event.event_id);
            peak = peak.max(open_ids.len());
        }
        let closed = match &event.attributes {
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => a.scheduled_event_id,
            Some(Attributes::ActivityTaskFailedEventAttributes(a)) => a.scheduled_event_id,
            Some(Attributes::ActivityTaskCanceledEventAttributes(a)) => a.scheduled_event_id,
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => a.scheduled_event_id,
            _ => continue,
        };
        open_ids.remove(&closed);
    }
    peak
}

/// The most children open at once in the run's history, and how many were started.
fn children_in_flight(events: &[HistoryEvent]) -> (usize, usize) {
    let (mut open, mut peak, mut started) = (0usize, 0usize, 0usize);
    for event in events {
        match &event.attributes {
            Some(Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(_)) => {
                open += 1;
                started += 1;
                peak = peak.max(open);
            }
            Some(
                Attributes::ChildWorkflowExecutionCompletedEventAttributes(_)
                | Attributes::ChildWorkflowExecutionFailedEventAttributes(_)
                | Attributes::ChildWorkflowExecutionCanceledEventAttributes(_)
                | Attributes::ChildWorkflowExecutionTerminatedEventAttributes(_)
                | Attributes::ChildWorkflowExecutionTimedOutEventAttributes(_)
                | Attributes::StartChildWorkflowExecutionFailedEventAttributes(_),
            ) => open = open.saturating_sub(1),
            _ => {}
        }
    }
    (peak, started)
}

fn closed(events: &[HistoryEvent]) -> bool {
    events.iter().any(|event| {
        matches!(
            event.attributes,
            Some(
                Attributes::WorkflowExecutionCompletedEventAttributes(_)
                    | Attributes::WorkflowExecutionFailedEventAttributes(_)
                    | Attributes::WorkflowExecutionCanceledEventAttributes(_)
            )
        )
    })
}

fn tenants(run: &Value) -> Result<Vec<Value>> {
    Ok(run["tenants"].as_array().context("tenants")?.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_more_tenants_than_a_batch_runs_in_child_workflows_and_cancels_them_all(
) -> Result<()> {
    let config = SimulatorConfig {
        tenants: TENANTS,
        users: TENANTS * 40,
        seed: 21,
        ..SimulatorConfig::default()
    };
    let stack = Stack::start_with(config, |_| {
        vec![
            (
                "ENTRA_SYNC__SYNC__BATCH_TENANTS".to_owned(),
                BATCH.to_string(),
            ),
            (
                "ENTRA_SYNC__SYNC__MAX_PARALLEL_TENANTS".to_owned(),
                LANES.to_string(),
            ),
        ]
    })
    .await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let client = temporal(&stack).await?;
            let tenant_id = prepared.tenant_id.to_string();

            // A run of 8 tenants in batches of 3: three children, every tenant completed.
            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(180)).await?;
            assert_eq!(run["status"], "completed", "{run}");
            let results = tenants(&run)?;
            assert_eq!(results.len(), TENANTS, "{run}");
            for tenant in &results {
                assert_eq!(tenant["status"], "completed", "{tenant}");
            }
            let workflow_id = workflow_id_for_run("sync", &tenant_id, &run_id);
            let parent = events(&client, &workflow_id).await?;
            assert!(
                parent
                    .iter()
                    .all(|event| activity_name(event) != Some("sync_tenant")),
                "the run's own history holds no tenant's activity"
            );
            let (peak_children, started_children) = children_in_flight(&parent);
            assert_eq!(started_children, TENANTS.div_ceil(BATCH));
            assert_eq!(peak_children, 1, "children run one after another");
            let mut synced = 0;
            for index in 0..TENANTS.div_ceil(BATCH) {
                let child = events(&client, &batch_workflow_id(&workflow_id, index)).await?;
                assert!(closed(&child), "batch {index} closed");
                let in_child = child
                    .iter()
                    .filter(|event| activity_name(event) == Some("sync_tenant"))
                    .count();
                assert_eq!(
                    in_child,
                    BATCH.min(TENANTS - index * BATCH),
                    "batch {index}"
                );
                assert!(
                    peak_tenants(&child) <= LANES,
                    "batch {index} kept the window"
                );
                synced += in_child;
            }
            assert_eq!(synced, TENANTS);
            assert!(
                events(
                    &client,
                    &batch_workflow_id(&workflow_id, TENANTS.div_ceil(BATCH))
                )
                .await
                .is_err(),
                "no child beyond the last batch"
            );
            record_history(&client, &workflow_id, "sync_batched").await?;
            record_history(
                &client,
                &batch_workflow_id(&workflow_id, 0),
                "sync_batched_child",
            )
            .await?;

            // Cancel while the first batch is mid-way: every page answers slowly.
            stack.simulator.add_fault(FaultSpec::everywhere(
                FaultKind::Delay { ms: 1500 },
                "/cipp/api/ListGraphRequest",
            ))?;
            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run_uuid = Uuid::parse_str(&run_id)?;
            wait_for_a_tenant(&stack.pool, run_uuid, false).await?;
            prepared
                .admin
                .post(
                    &format!("/api/v1/integrations/entra/sync/runs/{run_id}/cancel"),
                    serde_json::json!({}),
                )
                .await?;
            let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(120)).await?;
            assert_eq!(run["status"], "cancelled", "{run}");
            let results = tenants(&run)?;
            assert_eq!(results.len(), TENANTS, "every tenant is recorded: {run}");
            let cancelled = results
                .iter()
                .filter(|tenant| tenant["status"] == "cancelled")
                .count();
            for tenant in &results {
                assert!(
                    tenant["status"] == "completed" || tenant["status"] == "cancelled",
                    "{tenant}"
                );
            }
            assert!(
                cancelled >= TENANTS - BATCH,
                "at least the batches not started are cancelled: {run}"
            );
            let workflow_id = workflow_id_for_run("sync", &tenant_id, &run_id);
            let first_child = events(&client, &batch_workflow_id(&workflow_id, 0)).await?;
            assert!(
                first_child.iter().any(|event| matches!(
                    event.attributes,
                    Some(Attributes::WorkflowExecutionCancelRequestedEventAttributes(
                        _
                    ))
                )),
                "the cancel reached the running child"
            );
            assert!(closed(&first_child), "the cancelled child closed");
            let parent = events(&client, &workflow_id).await?;
            assert_eq!(
                children_in_flight(&parent).1,
                1,
                "no batch starts after the cancel"
            );
            record_history(&client, &workflow_id, "sync_batched_cancelled").await?;
            record_history(
                &client,
                &batch_workflow_id(&workflow_id, 0),
                "sync_batched_cancelled_child",
            )
            .await?;
            Ok(())
        })
        .await
}
