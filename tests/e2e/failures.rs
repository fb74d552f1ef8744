//! Failures that say what to do, on the real stack (Temporal, Postgres, the simulator over
//! HTTP): CIPP's "Failed to retrieve tenants" error row fails discovery at once as `config`
//! with the CIPP role to grant and marks no tenant missing; a `Retry-After` of a day is capped
//! (here at 3 s), the tenant shows `retrying` with its attempt, error and next attempt time
//! meanwhile, and the run completes instead of waiting a day; a run whose tenants keep being
//! throttled ends at its configured maximum duration with `run_time_limit` on each tenant.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use entra_sync_simulator::{FaultKind, FaultSpec, SimulatorConfig};
use serde_json::{json, Value};

use crate::harness::Stack;
use crate::workflow_support::prepare;

fn small() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 2,
        users: 30,
        seed: 11,
        ..SimulatorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipp_permission_error_row_fails_discovery_as_config_and_marks_nothing_missing(
) -> Result<()> {
    let stack = Stack::start(small()).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            stack.simulator.add_fault(FaultSpec::everywhere(
                FaultKind::CippTenantsPermissionRow,
                "/cipp/api/ListTenants",
            ))?;
            let started = prepared
                .admin
                .post("/api/v1/integrations/entra/discovery", json!({}))
                .await?;
            let run_id = started["run_id"].as_str().context("run_id")?;
            // Not retried as transient: the run ends well within a minute.
            let run = prepared
                .admin
                .wait_for_run(run_id, Duration::from_secs(60), |_| {})
                .await?;
            assert_eq!(run["status"], "failed", "{run}");
            assert_eq!(run["error"]["class"], "config", "{run}");
            assert_eq!(run["error"]["code"], "cipp_permission_check", "{run}");
            let remediation = run["error"]["remediation"].as_str().unwrap_or_default();
            assert!(remediation.contains("CIPP.Core.Read"), "{run}");
            assert!(
                run["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Perform a permission check"),
                "{run}"
            );
            let tenants = prepared
                .admin
                .get("/api/v1/integrations/entra/managed-tenants")
                .await?;
            let items = tenants["items"].as_array().cloned().unwrap_or_default();
            assert_eq!(items.len(), 2, "{tenants}");
            assert!(
                items.iter().all(|tenant| tenant["status"] == "active"),
                "a failed listing marks nothing missing: {tenants}"
            );
            let missing = stack
                .count("SELECT count(*) FROM managed_tenants WHERE status = 'missing'")
                .await?;
            assert_eq!(missing, 0);
            stack.simulator.clear_faults();
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_long_retry_after_is_capped_and_the_tenant_shows_retrying() -> Result<()> {
    let stack = Stack::start_with(small(), |_| {
        vec![(
            "ENTRA_SYNC__WORKER__RETRY_AFTER_CAP_SECONDS".to_owned(),
            "3".to_owned(),
        )]
    })
    .await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let throttled = stack.simulator.msp().tenants[0].tenant_id.clone();
            stack.simulator.add_fault(FaultSpec {
                kind: FaultKind::Throttle {
                    retry_after_secs: 86_400,
                },
                path_prefix: "/cipp/api/ListGraphRequest".to_owned(),
                tenant: Some(throttled.clone()),
                count: Some(1),
            })?;
            let started = prepared
                .admin
                .post("/api/v1/integrations/entra/sync", json!({"scope": "all"}))
                .await?;
            let run_id = started["run_id"].as_str().context("run_id")?.to_owned();
            let managed_tenant_id = prepared
                .managed
                .get(&throttled)
                .context("managed tenant")?
                .clone();
            // Poll until the run ends (a day's wait would outlast the deadline), noting the
            // tenant's `retrying` state on the way.
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut retrying: Option<Value> = None;
            let run = loop {
                let run = prepared
                    .admin
                    .get(&format!("/api/v1/integrations/entra/sync/runs/{run_id}"))
                    .await?;
                if let Some(tenant) = run["tenants"].as_array().and_then(|tenants| {
                    tenants
                        .iter()
                        .find(|tenant| tenant["managed_tenant_id"] == managed_tenant_id.as_str())
                }) {
                    if tenant["status"] == "retrying" && retrying.is_none() {
                        retrying = Some(tenant.clone());
                    }
                }
                if run["status"] != "running" {
                    break run;
                }
                if Instant::now() > deadline {
                    bail!("the run is still running: {run}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(run["status"], "completed", "{run}");
            let retrying = retrying.context("the throttled tenant was never shown retrying")?;
            assert_eq!(retrying["attempt"], 1, "{retrying}");
            assert_eq!(retrying["error"]["class"], "transient", "{retrying}");
            assert!(
                retrying["error"]["remediation"]
                    .as_str()
                    .is_some_and(|text| !text.is_empty()),
                "{retrying}"
            );
            let next = chrono::DateTime::parse_from_rfc3339(
                retrying["next_attempt_at"]
                    .as_str()
                    .context("next_attempt_at")?,
            )?;
            // The next attempt was planned after the cap, not after the day asked for.
            assert!(
                next < chrono::Utc::now() + chrono::Duration::hours(1),
                "{retrying}"
            );
            stack.simulator.clear_faults();
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_keeps_being_throttled_ends_at_its_maximum_duration() -> Result<()> {
    ends_at_its_maximum_duration(None).await
}

/// The same with one tenant per batch: each tenant in a child workflow of its own, the
/// deadline handed from the run to its children, and the batch that never started recorded
/// by the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_batches_that_keeps_being_throttled_ends_at_its_maximum_duration() -> Result<()> {
    ends_at_its_maximum_duration(Some(1)).await
}

async fn ends_at_its_maximum_duration(batch_tenants: Option<usize>) -> Result<()> {
    const MAX_RUN_SECONDS: u64 = 20;
    let stack = Stack::start_with(small(), |_| {
        let mut environment = vec![
            (
                "ENTRA_SYNC__WORKER__MAX_RUN_SECONDS".to_owned(),
                MAX_RUN_SECONDS.to_string(),
            ),
            // One tenant at a time, so the second tenant is still waiting when time runs out.
            (
                "ENTRA_SYNC__SYNC__MAX_PARALLEL_TENANTS".to_owned(),
                "1".to_owned(),
            ),
        ];
        if let Some(batch_tenants) = batch_tenants {
            environment.push((
                "ENTRA_SYNC__SYNC__BATCH_TENANTS".to_owned(),
                batch_tenants.to_string(),
            ));
        }
        environment
    })
    .await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            // Every users request of every tenant is throttled with a short `Retry-After`,
            // which is obeyed (below the cap), so without a bound the tenants would retry
            // until their attempts ran out.
            stack.simulator.add_fault(FaultSpec::everywhere(
                FaultKind::Throttle {
                    retry_after_secs: 4,
                },
                "/cipp/api/ListGraphRequest",
            ))?;
            let started_at = Instant::now();
            let started = prepared
                .admin
                .post("/api/v1/integrations/entra/sync", json!({"scope": "all"}))
                .await?;
            let run_id = started["run_id"].as_str().context("run_id")?.to_owned();
            let run = prepared
                .admin
                .wait_for_run(&run_id, Duration::from_secs(120), |_| {})
                .await?;
            let took = started_at.elapsed();
            stack.simulator.clear_faults();

            assert_eq!(run["status"], "failed", "{run}");
            // The bound held: the run ended at its limit (plus bookkeeping), not after its
            // tenants' ten attempts.
            assert!(
                took < Duration::from_secs(MAX_RUN_SECONDS + 30),
                "the run took {took:?}"
            );
            let tenants = run["tenants"].as_array().context("tenants")?;
            assert_eq!(tenants.len(), 2, "{run}");
            for tenant in tenants {
                assert_eq!(tenant["status"], "failed", "{tenant}");
                assert_eq!(tenant["error"]["class"], "transient", "{tenant}");
                assert_eq!(tenant["error"]["code"], "run_time_limit", "{tenant}");
                let message = tenant["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(&format!("maximum duration of {MAX_RUN_SECONDS} s")),
                    "{tenant}"
                );
                assert!(
                    tenant["error"]["remediation"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("MAX_RUN_SECONDS"),
                    "{tenant}"
                );
            }
            // The tenant that ran says why it ran out of time.
            assert!(
                tenants.iter().any(|tenant| tenant["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("http_429")),
                "{run}"
            );
            Ok(())
        })
        .await
}
