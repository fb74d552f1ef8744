//! The include-groups filter end to end (SPEC §5.2): one managed tenant's filter override names
//! one simulated security group; after a sync through Temporal only that group's eligible users
//! became contacts there, the rest are counted under `not_in_included_group`, and the other
//! managed tenant (no override) syncs as before.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_domain::filter::filter_user;
use entra_sync_domain::model::{DirectoryUser, Filters};
use entra_sync_simulator::{SimUser, SimulatorConfig};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{prepare, start_sync, wait_finished};

/// The simulated user as the sync sees it through CIPP, for the filter rules before groups.
fn directory_user(user: &SimUser) -> DirectoryUser {
    DirectoryUser {
        object_id: user.id.clone(),
        display_name: Some(user.display_name.clone()),
        mail: user.mail.clone(),
        user_principal_name: Some(user.user_principal_name.clone()),
        other_mails: user.other_mails.clone(),
        proxy_addresses: user.proxy_addresses.clone(),
        account_enabled: Some(user.account_enabled),
        user_type: Some(user.user_type.clone()),
        assigned_license_count: user.assigned_licenses.len(),
        ..DirectoryUser::default()
    }
}

async fn counts(stack: &Stack, run_id: &str, managed_tenant_id: &str) -> Result<Value> {
    let (counts,): (Value,) = sqlx::query_as(
        "SELECT counts FROM run_tenant_results WHERE run_id = $1 AND managed_tenant_id = $2",
    )
    .bind(Uuid::parse_str(run_id)?)
    .bind(Uuid::parse_str(managed_tenant_id)?)
    .fetch_one(&stack.pool)
    .await?;
    Ok(counts)
}

async fn linked_object_ids(stack: &Stack, managed_tenant_id: &str) -> Result<BTreeSet<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT object_id FROM links WHERE managed_tenant_id = $1")
            .bind(Uuid::parse_str(managed_tenant_id)?)
            .fetch_all(&stack.pool)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id.to_lowercase()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_of_an_included_group_become_contacts() -> Result<()> {
    let stack = Stack::start(SimulatorConfig {
        tenants: 2,
        users: 300,
        seed: 7,
        ..SimulatorConfig::default()
    })
    .await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let msp = stack.simulator.msp();
            let filtered = &msp.tenants[0];
            let other = &msp.tenants[1];
            let group = filtered
                .groups
                .iter()
                .find(|group| group.display_name == "Sales")
                .context("a Sales group")?;
            let members: BTreeSet<String> = group
                .member_ids
                .iter()
                .map(|id| id.to_lowercase())
                .collect();
            let filtered_managed = prepared.managed[&filtered.tenant_id].clone();
            let other_managed = prepared.managed[&other.tenant_id].clone();

            prepared
                .admin
                .call(
                    reqwest::Method::PUT,
                    &format!(
                        "/api/v1/integrations/entra/managed-tenants/{filtered_managed}/filters"
                    ),
                    Some(json!({"include_groups": [group.id.to_uppercase()]})),
                )
                .await?;

            // The preflight applies the same group filter (membership loaded), writing nothing.
            let preflight = prepared
                .admin
                .post(
                    "/api/v1/integrations/entra/sync/preflight",
                    json!({"scope": "all"}),
                )
                .await?;
            let preflight_filtered = preflight["tenants"]
                .as_array()
                .and_then(|tenants| {
                    tenants
                        .iter()
                        .find(|tenant| tenant["managed_tenant_id"] == filtered_managed.as_str())
                })
                .cloned()
                .context("the filtered tenant in the preflight")?;
            assert_eq!(preflight_filtered["error"], Value::Null, "{preflight}");
            assert_eq!(preflight_filtered["complete"], true, "{preflight}");
            assert!(
                preflight_filtered["counts"]["skipped"]["not_in_included_group"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0,
                "the preflight skips users outside the group: {preflight}"
            );
            assert_eq!(
                preflight_filtered["inactivations"]["guard_would_hold"], false,
                "{preflight}"
            );
            assert!(
                linked_object_ids(&stack, &filtered_managed)
                    .await?
                    .is_empty(),
                "the preflight wrote nothing"
            );

            let (run_id, _) = start_sync(&prepared.admin).await?;
            let finished =
                wait_finished(&prepared.admin, &run_id, Duration::from_secs(180)).await?;
            assert_eq!(finished["status"], "completed", "{finished}");

            // Users the default filters let through but who are not in the group.
            let expected_outside = filtered
                .users
                .iter()
                .filter(|user| !user.deleted && !members.contains(&user.id.to_lowercase()))
                .filter(|user| filter_user(&directory_user(user), &Filters::default()).is_none())
                .count() as u64;
            assert!(
                expected_outside > 0,
                "the group should leave eligible users out"
            );
            let filtered_counts = counts(&stack, &run_id, &filtered_managed).await?;
            assert_eq!(
                filtered_counts["skipped"]["not_in_included_group"].as_u64(),
                Some(expected_outside),
                "{filtered_counts}"
            );
            assert_eq!(
                preflight_filtered["counts"]["skipped"]["not_in_included_group"].as_u64(),
                Some(expected_outside),
                "the preflight saw what the sync did: {preflight}"
            );
            let linked = linked_object_ids(&stack, &filtered_managed).await?;
            assert!(!linked.is_empty(), "group members became contacts");
            assert!(
                linked.is_subset(&members),
                "only group members are linked: {:?}",
                linked.difference(&members).collect::<Vec<_>>()
            );
            assert_eq!(
                filtered_counts["created"].as_u64().unwrap_or(0)
                    + filtered_counts["linked"].as_u64().unwrap_or(0),
                linked.len() as u64
            );

            // The other managed tenant has no override and ignores groups.
            let other_counts = counts(&stack, &run_id, &other_managed).await?;
            assert_eq!(
                other_counts["skipped"]["not_in_included_group"]
                    .as_u64()
                    .unwrap_or(0),
                0,
                "{other_counts}"
            );
            let other_members: BTreeSet<String> = other.groups[1]
                .member_ids
                .iter()
                .map(|id| id.to_lowercase())
                .collect();
            let other_linked = linked_object_ids(&stack, &other_managed).await?;
            assert!(
                !other_linked.is_subset(&other_members),
                "without a group filter non-members are synced too"
            );
            Ok(())
        })
        .await
}
