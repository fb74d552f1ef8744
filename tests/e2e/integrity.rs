//! Contact integrity on the real stack (Temporal, Postgres, the simulator over HTTP): runs of
//! different scopes that pass the same managed tenant, a review resolved with
//! `link_existing` during a run, and a provider page without its collection never make a
//! present user inactive.

use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::{FaultKind, FaultSpec, SimulatorConfig};
use serde_json::json;
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{prepare, start_sync, wait_finished};

const DEADLINE: Duration = Duration::from_secs(180);

const INACTIVE: &str = "SELECT count(*) FROM contacts WHERE NOT is_active";

fn config(tenants: usize, users: usize) -> SimulatorConfig {
    SimulatorConfig {
        tenants,
        users,
        seed: 11,
        ..SimulatorConfig::default()
    }
}

/// A scheduled-like "all" run and a manual "this client" run overlap on one managed tenant,
/// and an admin links a queued user while they run: the two runs sync the tenant one after
/// the other (their tenant results do not overlap in time), both complete, and no contact is
/// made inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_and_a_review_link_inactivate_no_present_user() -> Result<()> {
    let stack = Stack::start(config(2, 600)).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let admin = &prepared.admin;
            let (first, _) = start_sync(admin).await?;
            let first = wait_finished(admin, &first, DEADLINE).await?;
            assert_eq!(first["status"], "completed", "{first}");
            let open_items = admin
                .get("/api/v1/integrations/entra/reconciliation-queue?status=open")
                .await?;
            let item = open_items["items"]
                .as_array()
                .and_then(|items| items.first())
                .cloned()
                .context("prepare queues users with two candidate contacts")?;

            // Slow pages keep both runs in progress while the review is resolved.
            stack.simulator.add_fault(FaultSpec::everywhere(FaultKind::Delay { ms: 1500 }, "/cipp/api/ListGraphRequest"))?;
            let client_id: Uuid = sqlx::query_scalar(
                "SELECT client_id FROM review_items WHERE item_id = $1",
            )
            .bind(Uuid::parse_str(item["item_id"].as_str().context("item_id")?)?)
            .fetch_one(&stack.pool)
            .await?;
            let (all_run, _) = start_sync(admin).await?;
            let client_run = admin
                .post(
                    "/api/v1/integrations/entra/sync",
                    json!({"scope": "client", "client_id": client_id}),
                )
                .await?;
            let client_run = client_run["run_id"].as_str().context("run_id")?.to_owned();
            assert_ne!(all_run, client_run, "different scopes make different runs");
            let contact_id = item["candidates"][0]["contact_id"]
                .as_str()
                .context("candidate")?;
            admin
                .post(
                    &format!(
                        "/api/v1/integrations/entra/reconciliation-queue/{}/resolve",
                        item["item_id"].as_str().context("item_id")?
                    ),
                    json!({"action": "link_existing", "contact_id": contact_id}),
                )
                .await?;

            for run_id in [&all_run, &client_run] {
                let run = wait_finished(admin, run_id, DEADLINE).await?;
                assert_eq!(run["status"], "completed", "{run}");
            }
            assert_eq!(stack.count(INACTIVE).await?, 0, "no present user inactivated");
            let linked_active: bool =
                sqlx::query_scalar("SELECT is_active FROM contacts WHERE contact_id = $1")
                    .bind(Uuid::parse_str(contact_id)?)
                    .fetch_one(&stack.pool)
                    .await?;
            assert!(linked_active);
            // One run at a time per managed tenant: the two runs' results for the shared
            // tenant do not overlap.
            let overlapping = stack
                .count(&format!(
                    "SELECT count(*) FROM run_tenant_results a
                     JOIN run_tenant_results b ON b.managed_tenant_id = a.managed_tenant_id
                     WHERE a.run_id = '{all_run}' AND b.run_id = '{client_run}'
                       AND a.started_at < b.finished_at AND b.started_at < a.finished_at"
                ))
                .await?;
            assert_eq!(overlapping, 0, "the runs synced the shared tenant one at a time");
            let shared = stack
                .count(&format!(
                    "SELECT count(*) FROM run_tenant_results WHERE run_id = '{client_run}'"
                ))
                .await?;
            assert_eq!(shared, 1);
            println!(
                "overlapping runs: 2 runs completed, shared tenant synced one at a time, inactivated: 0"
            );
            Ok(())
        })
        .await
}

/// A CIPP page that answers 200 without its `Results` array fails that tenant with class
/// `invalid` on the first attempt; nobody is inactivated or held, and the other tenant
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_its_collection_fails_the_tenant_and_inactivates_nobody() -> Result<()> {
    let stack = Stack::start(config(2, 300)).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let admin = &prepared.admin;
            let (first, _) = start_sync(admin).await?;
            let first = wait_finished(admin, &first, DEADLINE).await?;
            assert_eq!(first["status"], "completed", "{first}");

            let broken = stack.simulator.msp().tenants[0].tenant_id.clone();
            stack.simulator.add_fault(FaultSpec {
                kind: FaultKind::OkBody {
                    body: r#"{"Results":null,"Metadata":{}}"#.to_owned(),
                    content_type: None,
                },
                path_prefix: "/cipp/api/ListGraphRequest".to_owned(),
                tenant: Some(broken.clone()),
                count: None,
            })?;
            let (second, _) = start_sync(admin).await?;
            let run = wait_finished(admin, &second, DEADLINE).await?;
            assert_eq!(run["status"], "partial", "{run}");
            let managed = prepared.managed.get(&broken).context("managed tenant")?;
            let tenants = run["tenants"].as_array().context("tenants")?;
            let failed = tenants
                .iter()
                .find(|tenant| tenant["managed_tenant_id"] == managed.as_str())
                .context("the broken tenant's result")?;
            assert_eq!(failed["status"], "failed", "{failed}");
            assert_eq!(failed["error"]["class"], "invalid", "{failed}");
            assert_eq!(stack.count(INACTIVE).await?, 0);
            assert_eq!(
                stack
                    .count("SELECT count(*) FROM pending_inactivations")
                    .await?,
                0,
                "nothing queued or held"
            );
            Ok(())
        })
        .await
}

/// Discovery keeps what it knew: when CIPP's tenant listing fails (a 403 on `ListTenants`),
/// the discovery run fails and no managed tenant is marked missing or loses its domains; once
/// CIPP answers again a discovery completes with the same tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_listing_marks_no_tenant_missing() -> Result<()> {
    let stack = Stack::start(config(3, 150)).await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let admin = &prepared.admin;
            let domains_before: Vec<String> = sqlx::query_scalar(
                "SELECT domains::text FROM managed_tenants ORDER BY entra_tenant_id",
            )
            .fetch_all(&stack.pool)
            .await?;
            stack.simulator.add_fault(FaultSpec::everywhere(
                FaultKind::CippForbidden,
                "/cipp/api/ListTenants",
            ))?;
            let started = admin
                .post("/api/v1/integrations/entra/discovery", json!({}))
                .await?;
            let run_id = started["run_id"].as_str().context("run_id")?.to_owned();
            let run = wait_finished(admin, &run_id, DEADLINE).await?;
            assert_eq!(run["status"], "failed", "{run}");
            let missing = "SELECT count(*) FROM managed_tenants WHERE status = 'missing'";
            assert_eq!(stack.count(missing).await?, 0);
            let domains_after: Vec<String> = sqlx::query_scalar(
                "SELECT domains::text FROM managed_tenants ORDER BY entra_tenant_id",
            )
            .fetch_all(&stack.pool)
            .await?;
            assert_eq!(domains_after, domains_before);

            stack.simulator.clear_faults();
            let started = admin
                .post("/api/v1/integrations/entra/discovery", json!({}))
                .await?;
            let run_id = started["run_id"].as_str().context("run_id")?.to_owned();
            let run = wait_finished(admin, &run_id, DEADLINE).await?;
            assert_eq!(run["status"], "completed", "{run}");
            assert_eq!(stack.count(missing).await?, 0);
            Ok(())
        })
        .await
}
