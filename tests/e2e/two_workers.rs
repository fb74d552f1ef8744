//! Two workers on one task queue share a run's tenants (each may hold only two activities, so
//! a window of four tenants cannot fit on one) and produce exactly what one worker produces
//! from the same data in another database; either way at most `max_parallel_tenants` tenants
//! are in flight at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use entra_sync_simulator::{FaultKind, FaultSpec, SimulatorConfig};
use entra_sync_workflows::workflow_id_for_run;
use temporalio_client::UntypedWorkflow;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::harness::Stack;
use crate::workflow_support::{
    prepare, snapshot, start_sync, temporal, tuning, wait_finished, with_workers, Snapshot,
};

/// The run's window of tenants in flight, smaller than its 6 tenants.
const LANES: usize = 4;

fn data() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 6,
        users: 900,
        seed: 99,
        ..SimulatorConfig::default()
    }
}

/// Syncs everything with the given workers; returns the snapshot and, per worker identity, how
/// many `sync_tenant` attempts it ran.
async fn sync_with(
    stack: &Stack,
    workers: Vec<entra_sync::runtime::WorkerTuning>,
) -> Result<(Snapshot, BTreeMap<String, usize>)> {
    let client = temporal(stack).await?;
    with_workers(stack, workers, async {
        let prepared = prepare(stack).await?;
        // Slow pages keep each tenant's activity busy long enough for the window to fill.
        stack.simulator.add_fault(FaultSpec::everywhere(
            FaultKind::Delay { ms: 300 },
            "/cipp/api/ListGraphRequest",
        ))?;
        let (run_id, _) = start_sync(&prepared.admin).await?;
        let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(120)).await?;
        assert_eq!(run["status"], "completed", "{run}");
        let workflow_id = workflow_id_for_run("sync", &prepared.tenant_id.to_string(), &run_id);
        let events = client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id.as_str())
            .fetch_history(Default::default())
            .into_events()
            .await?;
        let mut sync_tenant_events = BTreeSet::new();
        let mut by_worker = BTreeMap::new();
        // Scheduled-but-not-closed `sync_tenant` activities, in history order: the window.
        let (mut open, mut peak) = (0usize, 0usize);
        for event in &events {
            match &event.attributes {
                Some(Attributes::ActivityTaskScheduledEventAttributes(scheduled))
                    if scheduled
                        .activity_type
                        .as_ref()
                        .map(|kind| kind.name.as_str())
                        == Some("sync_tenant") =>
                {
                    sync_tenant_events.insert(event.event_id);
                    open += 1;
                    peak = peak.max(open);
                }
                Some(Attributes::ActivityTaskCompletedEventAttributes(closed))
                    if sync_tenant_events.contains(&closed.scheduled_event_id) =>
                {
                    open -= 1;
                }
                Some(Attributes::ActivityTaskStartedEventAttributes(started))
                    if sync_tenant_events.contains(&started.scheduled_event_id) =>
                {
                    *by_worker.entry(started.identity.clone()).or_insert(0) += 1;
                }
                _ => {}
            }
        }
        // `max_parallel_tenants` is LANES and there are 6 tenants: the window fills up and
        // never overflows.
        assert_eq!(peak, LANES, "tenants in flight at once");
        let snapshot = snapshot(&stack.pool, prepared.tenant_id, &run_id).await?;
        Ok((snapshot, by_worker))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_run_and_produce_what_one_worker_produces() -> Result<()> {
    let lanes = |_: &_| {
        vec![(
            "ENTRA_SYNC__SYNC__MAX_PARALLEL_TENANTS".to_owned(),
            LANES.to_string(),
        )]
    };
    let shared = Stack::start_with(data(), lanes).await?;
    let alone = Stack::start_with(data(), lanes).await?;
    let (shared_snapshot, by_worker) = sync_with(
        &shared,
        vec![tuning("worker-a", Some(2)), tuning("worker-b", Some(2))],
    )
    .await?;
    let (alone_snapshot, alone_by_worker) = sync_with(&alone, vec![tuning("solo", None)]).await?;

    assert_eq!(by_worker.values().sum::<usize>(), 6, "{by_worker:?}");
    assert!(
        by_worker.get("worker-a").is_some_and(|count| *count > 0)
            && by_worker.get("worker-b").is_some_and(|count| *count > 0),
        "both workers ran tenants of the run: {by_worker:?}"
    );
    assert_eq!(alone_by_worker.keys().collect::<Vec<_>>(), vec!["solo"]);
    assert_eq!(shared_snapshot.tenant_results.len(), 6);
    assert_eq!(shared_snapshot, alone_snapshot);
    Ok(())
}
