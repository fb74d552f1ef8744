//! Recurring syncs on a real Temporal server: saving settings creates, updates and (on
//! disconnect) deletes the PSA tenant's one Schedule, with overlap policy skip; a firing opens
//! its own `scheduled` runs (discovery first when the setting asks) and completes them; a
//! firing while a manual run of the same scope is in progress creates no second run; and a
//! starting worker puts a missing schedule back from the database.

use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::{FaultKind, FaultSpec, SimulatorConfig};
use entra_sync_workflows::{schedule_id_for_tenant, workflow_id_for_run};
use serde_json::json;
use temporalio_client::schedules::{ScheduleError, ScheduleOverlapPolicy};
use temporalio_client::{Client, UntypedWorkflow, WorkflowExecutionStatus};
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{
    eventually, prepare, record_history, start_sync, temporal, tuning, wait_finished, with_workers,
};

/// The schedule's interval in seconds and overlap policy (proto number), or None when absent.
async fn described(client: &Client, tenant_id: Uuid) -> Result<Option<(i64, i32, String)>> {
    let handle = client.get_schedule_handle(schedule_id_for_tenant(&tenant_id.to_string()));
    match handle.describe(Default::default()).await {
        Ok(description) => {
            let raw = description.raw();
            let schedule = raw.schedule.as_ref().context("schedule")?;
            let interval = schedule
                .spec
                .as_ref()
                .and_then(|spec| spec.interval.first())
                .and_then(|interval| interval.interval.as_ref())
                .map_or(0, |duration| duration.seconds);
            let overlap = schedule
                .policies
                .as_ref()
                .map_or(0, |policies| policies.overlap_policy);
            let task_queue = match description.action() {
                temporalio_client::schedules::ScheduleDescriptionAction::StartWorkflow(action) => {
                    format!("{}@{}", action.workflow_type(), action.task_queue())
                }
                _ => String::new(),
            };
            Ok(Some((interval, overlap, task_queue)))
        }
        Err(ScheduleError::Rpc(status))
            if status.code() == temporalio_client::tonic::Code::NotFound =>
        {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// Fires the schedule now and returns the id of the workflow the firing started.
async fn fire(client: &Client, tenant_id: Uuid, firings_before: usize) -> Result<String> {
    let handle = client.get_schedule_handle(schedule_id_for_tenant(&tenant_id.to_string()));
    handle
        .trigger(ScheduleOverlapPolicy::Unspecified, Default::default())
        .await?;
    eventually("the firing's workflow", Duration::from_secs(30), || async {
        let actions = handle.describe(Default::default()).await?.recent_actions();
        Ok((actions.len() > firings_before)
            .then(|| actions.last().map(|action| action.workflow_id.clone()))
            .flatten())
    })
    .await
}

async fn wait_closed(client: &Client, workflow_id: &str) -> Result<WorkflowExecutionStatus> {
    eventually(
        "the workflow to close",
        Duration::from_secs(120),
        || async {
            let status = client
                .get_workflow_handle::<UntypedWorkflow>(workflow_id)
                .describe(Default::default())
                .await?
                .status();
            Ok((status != WorkflowExecutionStatus::Running).then_some(status))
        },
    )
    .await
}

async fn runs(
    stack: &Stack,
    tenant_id: Uuid,
    kind: &str,
    trigger: &str,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT run_id::text, status FROM runs
         WHERE tenant_id = $1 AND kind = $2 AND trigger = $3 ORDER BY started_at",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(trigger)
    .fetch_all(&stack.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_drive_one_schedule_whose_firings_sync_without_overlapping() -> Result<()> {
    let stack = Stack::start(SimulatorConfig {
        tenants: 3,
        users: 240,
        seed: 11,
        ..SimulatorConfig::default()
    })
    .await?;
    let client = temporal(&stack).await?;
    let queue = stack.settings.temporal.task_queue.clone();
    let prepared = with_workers(&stack, vec![tuning("schedules", None)], async {
        let prepared = prepare(&stack).await?;
        let tenant_id = prepared.tenant_id;
        assert_eq!(described(&client, tenant_id).await?, None, "off by default");

        let settings = |body| {
            prepared
                .admin
                .call(reqwest::Method::PUT, "/api/v1/integrations/entra/settings", Some(body))
        };
        settings(json!({"schedule": {"enabled": true, "interval_seconds": 3600}, "discovery_before_sync": true})).await?;
        assert_eq!(
            described(&client, tenant_id).await?,
            Some((3600, 1, format!("entra_scheduled_sync@{queue}"))),
            "created with the interval and overlap policy skip"
        );
        // PUT replaces the document, so every write states the whole schedule.
        settings(json!({"schedule": {"enabled": true, "interval_seconds": 900}, "discovery_before_sync": true})).await?;
        assert_eq!(
            described(&client, tenant_id).await?.map(|(interval, overlap, _)| (interval, overlap)),
            Some((900, 1)),
            "updated in place"
        );

        // Outside 15 minutes to 30 days the settings are refused and the schedule stays.
        for interval_seconds in [60, 31 * 24 * 3600] {
            let refused = settings(json!({"schedule": {"enabled": true, "interval_seconds": interval_seconds}})).await;
            assert!(refused.is_err(), "interval {interval_seconds} accepted");
        }
        assert_eq!(
            described(&client, tenant_id).await?.map(|(interval, _, _)| interval),
            Some(900)
        );

        // A firing opens its own runs: discovery first (the setting), then the sync.
        let workflow_id = fire(&client, tenant_id, 0).await?;
        assert_eq!(wait_closed(&client, &workflow_id).await?, WorkflowExecutionStatus::Completed);
        let discoveries = runs(&stack, tenant_id, "discovery", "scheduled").await?;
        assert_eq!(discoveries.len(), 1, "{discoveries:?}");
        assert_eq!(discoveries[0].1, "completed");
        let syncs = runs(&stack, tenant_id, "sync", "scheduled").await?;
        assert_eq!(syncs.len(), 1, "{syncs:?}");
        assert_eq!(syncs[0].1, "completed");
        record_history(&client, &workflow_id, "scheduled_sync").await?;
        let tenant = tenant_id.to_string();
        record_history(&client, &workflow_id_for_run("discovery", &tenant, &discoveries[0].0), "discovery_scheduled").await?;
        record_history(&client, &workflow_id_for_run("sync", &tenant, &syncs[0].0), "sync_scheduled_child").await?;

        // A firing while a manual run of the same scope is in progress starts no second sync.
        settings(json!({"schedule": {"enabled": true, "interval_seconds": 900}, "discovery_before_sync": false})).await?;
        stack.simulator.add_fault(FaultSpec::everywhere(FaultKind::Delay { ms: 6000 }, "/cipp/api/ListGraphRequest"))?;
        let (manual, _) = start_sync(&prepared.admin).await?;
        let workflow_id = fire(&client, tenant_id, 1).await?;
        assert_eq!(wait_closed(&client, &workflow_id).await?, WorkflowExecutionStatus::Completed);
        let manual_status: String =
            sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1::uuid")
                .bind(&manual)
                .fetch_one(&stack.pool)
                .await?;
        assert_eq!(manual_status, "running", "the firing did overlap the manual run");
        let manual_run = wait_finished(&prepared.admin, &manual, Duration::from_secs(120)).await?;
        assert_eq!(manual_run["status"], "completed", "{manual_run}");
        assert_eq!(
            runs(&stack, tenant_id, "sync", "scheduled").await?.len(),
            1,
            "the overlapping firing opened no run"
        );
        let duplicated = stack
            .count(&format!(
                "SELECT count(*) FROM (SELECT managed_tenant_id, object_id FROM links
                 WHERE tenant_id = '{tenant_id}' GROUP BY 1, 2 HAVING count(*) > 1) d"
            ))
            .await?;
        assert_eq!(duplicated, 0);
        let unlinked_duplicates = stack
            .count(&format!(
                "SELECT count(*) FROM (SELECT email_normalized FROM contacts c
                 WHERE tenant_id = '{tenant_id}' AND EXISTS (SELECT 1 FROM links l
                   WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.contact_id AND l.created_by_run_id IS NOT NULL)
                 GROUP BY 1 HAVING count(*) > 1) d"
            ))
            .await?;
        assert_eq!(unlinked_duplicates, 0, "a contact was created twice");
        stack.simulator.clear_faults();
        Ok(prepared)
    })
    .await?;

    // Removed behind the service's back: the next worker start puts it back from the settings.
    client
        .get_schedule_handle(schedule_id_for_tenant(&prepared.tenant_id.to_string()))
        .delete(Default::default())
        .await?;
    assert_eq!(described(&client, prepared.tenant_id).await?, None);
    with_workers(&stack, vec![tuning("schedules-restart", None)], async {
        let restored = eventually("the schedule restored", Duration::from_secs(30), || async {
            described(&client, prepared.tenant_id).await
        })
        .await?;
        assert_eq!((restored.0, restored.1), (900, 1));

        // Disconnecting removes it at once.
        prepared
            .admin
            .post("/api/v1/integrations/entra/disconnect", json!({}))
            .await?;
        assert_eq!(described(&client, prepared.tenant_id).await?, None);
        Ok(())
    })
    .await
}
