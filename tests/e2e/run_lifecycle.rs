//! Runs are honest and deduplicated, on a real Temporal server: 50 concurrent "sync all"
//! requests make one run; a request after it finished makes a new run and leaves the old one's
//! history alone; one tenant without consent fails at once (no retries) while the others
//! complete (`partial`); a transient failure is retried by Temporal for its tenant alone; a run with no usable connection ends `failed`; a cancelled run ends
//! `cancelled`; and a run whose workflow is terminated (no cleanup code runs) is finalized by
//! the worker's reconciler instead of staying `running`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::{ConsentFault, FaultKind, FaultSpec, SimulatorConfig};
use entra_sync_workflows::workflow_id_for_run;
use serde_json::Value;
use temporalio_client::{UntypedWorkflow, WorkflowTerminateOptions};
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{
    eventually, prepare, record_history, start_sync, temporal, tuning, wait_finished, with_workers,
};

fn small(tenants: usize, users: usize) -> SimulatorConfig {
    SimulatorConfig {
        tenants,
        users,
        seed: 7,
        ..SimulatorConfig::default()
    }
}

/// Every users page answers after `ms`, so a run stays in progress long enough to act on.
fn slow_pages(stack: &Stack, ms: u64) -> Result<()> {
    stack.simulator.add_fault(FaultSpec::everywhere(
        FaultKind::Delay { ms },
        "/cipp/api/ListGraphRequest",
    ))?;
    Ok(())
}

async fn run_row(stack: &Stack, run_id: &str) -> Result<(String, Option<String>, Option<Value>)> {
    Ok(
        sqlx::query_as("SELECT status, finished_at::text, totals FROM runs WHERE run_id = $1")
            .bind(Uuid::parse_str(run_id)?)
            .fetch_one(&stack.pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sync_requests_make_one_run_and_a_later_request_a_new_one() -> Result<()> {
    let stack = Stack::start(small(3, 240)).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            // Slow enough that all 50 requests arrive while the run is in progress.
            slow_pages(&stack, 2000)?;
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let admin = prepared.admin.with_key(&prepared.admin_key);
                requests.spawn(async move { start_sync(&admin).await });
            }
            let mut run_ids = BTreeSet::new();
            let mut fresh = 0;
            while let Some(answer) = requests.join_next().await {
                let (run_id, deduplicated) = answer??;
                run_ids.insert(run_id);
                fresh += usize::from(!deduplicated);
            }
            assert_eq!(
                run_ids.len(),
                1,
                "every request got the same run: {run_ids:?}"
            );
            assert_eq!(fresh, 1, "exactly one request started the run");
            let first = run_ids.into_iter().next().context("run id")?;
            let sync_runs = stack
                .count(&format!(
                    "SELECT count(*) FROM runs WHERE tenant_id = '{}' AND kind = 'sync'",
                    prepared.tenant_id
                ))
                .await?;
            assert_eq!(sync_runs, 1);

            let finished = wait_finished(&prepared.admin, &first, Duration::from_secs(120)).await?;
            assert_eq!(finished["status"], "completed", "{finished}");
            let before = run_row(&stack, &first).await?;

            stack.simulator.clear_faults();
            let (second, deduplicated) = start_sync(&prepared.admin).await?;
            assert!(!deduplicated, "a finished run is not reused");
            assert_ne!(
                second, first,
                "a new request after the run finished is a new run"
            );
            let finished =
                wait_finished(&prepared.admin, &second, Duration::from_secs(120)).await?;
            assert_eq!(finished["status"], "completed", "{finished}");
            assert_eq!(
                run_row(&stack, &first).await?,
                before,
                "the finished run's row is not rewritten by the next run"
            );
            let client = temporal(&stack).await?;
            let workflow_id = workflow_id_for_run("sync", &prepared.tenant_id.to_string(), &second);
            record_history(&client, &workflow_id, "sync_completed").await?;
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_consent_fails_alone_without_retries_and_the_run_is_partial() -> Result<()>
{
    let stack = Stack::start(small(4, 320)).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let msp = stack.simulator.msp();
            let broken = msp.tenants[1].tenant_id.clone();
            stack
                .simulator
                .set_consent_fault(&broken, Some(ConsentFault::Aadsts65001))?;
            stack.simulator.clear_request_log();

            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(120)).await?;
            assert_eq!(run["status"], "partial", "{run}");
            let broken_managed = &prepared.managed[&broken];
            for tenant in run["tenants"].as_array().context("tenants")? {
                if tenant["managed_tenant_id"] == broken_managed.as_str() {
                    assert_eq!(tenant["status"], "failed", "{tenant}");
                    assert_eq!(tenant["error"]["class"], "tenant_access", "{tenant}");
                } else {
                    assert_eq!(tenant["status"], "completed", "{tenant}");
                }
            }
            assert_eq!(run["tenants"].as_array().map(Vec::len), Some(4));
            // A non-retryable class is not retried: the broken tenant's users were asked once.
            let asked = stack
                .simulator
                .request_log()
                .iter()
                .filter(|request| request.path.ends_with("/ListGraphRequest"))
                .filter(|request| {
                    request
                        .query
                        .as_deref()
                        .is_some_and(|query| query.contains(&broken))
                })
                .count();
            assert_eq!(asked, 1, "the tenant_access failure was retried");
            let client = temporal(&stack).await?;
            let workflow_id = workflow_id_for_run("sync", &prepared.tenant_id.to_string(), &run_id);
            record_history(&client, &workflow_id, "sync_partial").await?;

            // Without a connection every tenant fails for good, and the run says so.
            prepared
                .admin
                .post(
                    "/api/v1/integrations/entra/disconnect",
                    serde_json::json!({}),
                )
                .await?;
            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(120)).await?;
            assert_eq!(run["status"], "failed", "{run}");
            assert!(run["finished_at"].is_string(), "{run}");
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_terminated_runs_never_stay_running() -> Result<()> {
    let stack = Stack::start(small(2, 6000)).await?;
    let tunings = vec![tuning("lifecycle-worker", None)];
    with_workers(&stack, tunings, async {
        let prepared = prepare(&stack).await?;
        let client = temporal(&stack).await?;
        // Three pages per tenant, each slow: the run is mid-way for seconds.
        slow_pages(&stack, 1500)?;

        // Cancel through the API while tenants are mid-way.
        let (run_id, _) = start_sync(&prepared.admin).await?;
        wait_for_progress(&stack, &run_id).await?;
        prepared
            .admin
            .post(
                &format!("/api/v1/integrations/entra/sync/runs/{run_id}/cancel"),
                serde_json::json!({}),
            )
            .await?;
        let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(90)).await?;
        assert_eq!(run["status"], "cancelled", "{run}");
        for tenant in run["tenants"].as_array().context("tenants")? {
            assert_ne!(tenant["status"], "running", "{tenant}");
        }
        let workflow_id = workflow_id_for_run("sync", &prepared.tenant_id.to_string(), &run_id);
        record_history(&client, &workflow_id, "sync_cancelled").await?;

        // Terminate: the workflow runs no code at all, so only the reconciler can end the run.
        let (run_id, _) = start_sync(&prepared.admin).await?;
        wait_for_progress(&stack, &run_id).await?;
        let workflow_id = workflow_id_for_run("sync", &prepared.tenant_id.to_string(), &run_id);
        client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id.as_str())
            .terminate(
                WorkflowTerminateOptions::builder()
                    .reason("test: the workflow disappears without cleanup".to_owned())
                    .build(),
            )
            .await?;
        let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(60)).await?;
        assert_eq!(run["status"], "failed", "{run}");
        let error: Value = sqlx::query_scalar("SELECT error FROM runs WHERE run_id = $1")
            .bind(Uuid::parse_str(&run_id)?)
            .fetch_one(&stack.pool)
            .await?;
        assert_eq!(error["code"], "workflow_terminated", "{error}");
        for tenant in run["tenants"].as_array().context("tenants")? {
            assert_ne!(tenant["status"], "running", "{tenant}");
        }
        Ok(())
    })
    .await
}

/// Waits until the run has committed at least one page.
async fn wait_for_progress(stack: &Stack, run_id: &str) -> Result<()> {
    let run_id = Uuid::parse_str(run_id)?;
    eventually("a page committed", Duration::from_secs(60), || async {
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT max((counts->>'seen')::bigint) FROM run_tenant_results WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&stack.pool)
        .await?;
        Ok(seen.filter(|seen| *seen > 0).map(|_| ()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_by_temporal_for_that_tenant_alone() -> Result<()> {
    let stack = Stack::start(small(3, 240)).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let msp = stack.simulator.msp();
            let flaky = msp.tenants[0].tenant_id.clone();
            // Five 504s: more than one activity attempt's HTTP retries (five requests), so
            // only a second `sync_tenant` attempt, scheduled by Temporal, gets through.
            stack.simulator.add_fault(FaultSpec {
                kind: FaultKind::GatewayTimeout,
                path_prefix: "/cipp/api/ListGraphRequest".to_owned(),
                tenant: Some(flaky.clone()),
                count: Some(5),
            })?;
            stack.simulator.clear_request_log();
            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(120)).await?;
            assert_eq!(run["status"], "completed", "{run}");
            let requests_for = |tenant: &str| {
                stack
                    .simulator
                    .request_log()
                    .iter()
                    .filter(|request| request.path.ends_with("/ListGraphRequest"))
                    .filter(|request| {
                        request
                            .query
                            .as_deref()
                            .is_some_and(|query| query.contains(tenant))
                    })
                    .count()
            };
            assert_eq!(
                requests_for(&flaky),
                6,
                "five failures, then the retried attempt"
            );
            for other in &msp.tenants[1..] {
                assert_eq!(requests_for(&other.tenant_id), 1, "{}", other.display_name);
            }
            Ok(())
        })
        .await
}
