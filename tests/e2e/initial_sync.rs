//! The walking skeleton end to end: CIPP connection → discovery → preview → confirm → the
//! initial sync through Temporal, then the database is checked against what the seeding
//! implies (contacts, links, review items, run and tenant-result rows).

use std::collections::BTreeMap;

use anyhow::Result;
use entra_sync::demo::{run_scenario, tenant_role, ApiClient, TenantRole};
use entra_sync_simulator::SimulatorConfig;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipp_initial_sync_writes_what_the_seeding_implies() -> Result<()> {
    let config = SimulatorConfig::default();
    let stack = Stack::start(config.clone()).await?;
    let master = ApiClient::new(&stack.api_url, &stack.master_key)?;
    let cipp_url = stack.simulator.cipp_base_url();
    let outcome = stack
        .run(run_scenario(
            &master,
            &cipp_url,
            &config.cipp_api_token,
            &config,
            |_| {},
        ))
        .await?;
    let msp = stack.simulator.msp();
    let seeded = &outcome.seeded;

    // The preview gave every tenant the state its seeding implies.
    let states: BTreeMap<String, String> = outcome.preview["items"]
        .as_array()
        .expect("preview items")
        .iter()
        .map(|item| {
            (
                item["entra_tenant_id"].as_str().unwrap_or("").to_owned(),
                item["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (index, tenant) in msp.tenants.iter().enumerate() {
        let expected = match tenant_role(index) {
            TenantRole::AutoMatched => "auto_matched",
            TenantRole::SecondaryDomain | TenantRole::TwoClients | TenantRole::SimilarName => {
                "needs_review"
            }
            TenantRole::Unrelated => "unmatched",
        };
        assert_eq!(
            states.get(&tenant.tenant_id).map(String::as_str),
            Some(expected),
            "preview state of {}: {}",
            tenant.display_name,
            outcome.preview
        );
    }

    // The run row and one completed tenant result per mapped tenant, with the implied counts.
    let tenant_id = Uuid::parse_str(&outcome.tenant_id)?;
    let run_id = Uuid::parse_str(outcome.sync_run["run_id"].as_str().expect("run_id"))?;
    let (status, kind, trigger, finished): (String, String, String, bool) = sqlx::query_as(
        "SELECT status, kind, trigger, finished_at IS NOT NULL FROM runs WHERE tenant_id = $1 AND run_id = $2",
    )
    .bind(tenant_id)
    .bind(run_id)
    .fetch_one(&stack.pool)
    .await?;
    assert_eq!(
        (status.as_str(), kind.as_str(), trigger.as_str(), finished),
        ("completed", "sync", "initial", true)
    );

    let results: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT mt.entra_tenant_id, r.status, r.counts
         FROM run_tenant_results r
         JOIN managed_tenants mt ON mt.tenant_id = r.tenant_id AND mt.managed_tenant_id = r.managed_tenant_id
         WHERE r.tenant_id = $1 AND r.run_id = $2",
    )
    .bind(tenant_id)
    .bind(run_id)
    .fetch_all(&stack.pool)
    .await?;
    assert_eq!(
        results.len(),
        seeded.tenants.len(),
        "one tenant result per mapped tenant"
    );
    for (entra_tenant_id, status, counts) in &results {
        let expected = &seeded.tenants[entra_tenant_id];
        let name = &expected.display_name;
        assert_eq!(status, "completed", "{name}");
        assert_eq!(counts["eligible"], expected.eligible, "{name} eligible");
        assert_eq!(counts["linked"], expected.linked, "{name} linked");
        assert_eq!(counts["created"], expected.created(), "{name} created");
        assert_eq!(counts["queued"], expected.queued(), "{name} queued");
        assert_eq!(
            counts["skipped"]["guest"].as_u64().unwrap_or(0),
            expected.guests,
            "{name} guests skipped"
        );
        assert_eq!(
            counts["skipped"]["disabled"].as_u64().unwrap_or(0),
            expected.disabled,
            "{name} disabled skipped"
        );
        assert_eq!(counts["errors"], 0, "{name} errors");
    }

    // Contacts, links and review items in Postgres.
    let created: u64 = seeded.tenants.values().map(|tenant| tenant.created()).sum();
    let linked: u64 = seeded.tenants.values().map(|tenant| tenant.linked).sum();
    let multiple: u64 = seeded
        .tenants
        .values()
        .map(|tenant| tenant.multiple_candidates)
        .sum();
    let other_client: u64 = seeded
        .tenants
        .values()
        .map(|tenant| tenant.other_client)
        .sum();
    let contacts = stack
        .count(&format!(
            "SELECT count(*) FROM contacts WHERE tenant_id = '{tenant_id}'"
        ))
        .await?;
    assert_eq!(
        contacts as u64,
        seeded.contacts_seeded + created,
        "contacts = seeded + created"
    );
    let links = stack
        .count(&format!(
            "SELECT count(*) FROM links WHERE tenant_id = '{tenant_id}'"
        ))
        .await?;
    assert_eq!(links as u64, linked + created, "links = linked + created");
    let linked_to_seeded = stack
        .count(&format!(
            "SELECT count(*) FROM links l JOIN contacts c ON c.tenant_id = l.tenant_id AND c.contact_id = l.contact_id
             WHERE l.tenant_id = '{tenant_id}' AND l.created_by_run_id = '{run_id}' AND c.created_at < (SELECT started_at FROM runs WHERE run_id = '{run_id}')"
        ))
        .await?;
    assert_eq!(
        linked_to_seeded as u64, linked,
        "links to pre-existing contacts"
    );
    let reasons: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(*) FROM review_items WHERE tenant_id = $1 AND status = 'open' GROUP BY reason ORDER BY reason",
    )
    .bind(tenant_id)
    .fetch_all(&stack.pool)
    .await?;
    let reasons: BTreeMap<String, i64> = reasons.into_iter().collect();
    assert_eq!(
        reasons.get("multiple_candidates").copied().unwrap_or(0) as u64,
        multiple
    );
    assert_eq!(
        reasons
            .get("candidate_in_other_client")
            .copied()
            .unwrap_or(0) as u64,
        other_client
    );
    assert_eq!(
        reasons.values().sum::<i64>() as u64,
        multiple + other_client,
        "no other review reasons"
    );

    // Every create and link is audited.
    let audited = stack
        .count(&format!("SELECT count(*) FROM contact_changes WHERE tenant_id = '{tenant_id}' AND run_id = '{run_id}'"))
        .await?;
    assert!(
        audited as u64 >= created + linked,
        "audit rows {audited} < {}",
        created + linked
    );

    // The API reports the same run.
    let admin = master.with_key(&outcome.admin_key);
    let run = admin
        .get(&format!("/api/v1/integrations/entra/sync/runs/{run_id}"))
        .await?;
    assert_eq!(run["totals"]["created"], created);
    assert_eq!(run["totals"]["linked"], linked);
    Ok(())
}
