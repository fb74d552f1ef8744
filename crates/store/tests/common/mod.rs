//! Setup the store's integration tests share: a PSA tenant's managed tenants discovered and
//! mapped, as an admin would have left them before a sync.

use entra_sync_store::discovery::DiscoveredTenantRecord;
use entra_sync_store::mapping::{MappingAction, MappingDecisionInput};
use entra_sync_store::runs::{NewRun, RunKind, RunScope, RunTrigger};
use entra_sync_store::Store;
use uuid::Uuid;

/// Records `records` in a discovery run of `tenant_id` and maps every managed tenant they
/// make to `client_id`; returns the managed tenants' ids in the order of `records`.
pub async fn discover_and_map(
    store: &Store,
    tenant_id: Uuid,
    client_id: Uuid,
    records: &[DiscoveredTenantRecord],
) -> Vec<Uuid> {
    let managed_tenant_ids = discover(store, tenant_id, records).await;
    map_to(store, tenant_id, &managed_tenant_ids, client_id).await;
    managed_tenant_ids
}

/// Starts a manual discovery run of `tenant_id`; returns its id.
pub async fn start_discovery(store: &Store, tenant_id: Uuid) -> Uuid {
    store
        .start_run(&NewRun {
            tenant_id,
            kind: RunKind::Discovery,
            trigger: RunTrigger::Manual,
            scope: RunScope::All,
            requested_by: None,
        })
        .await
        .expect("discovery run")
        .run_id
}

/// Records `records` in a discovery run of `tenant_id`; returns the managed tenants' ids in
/// the order of `records`.
pub async fn discover(
    store: &Store,
    tenant_id: Uuid,
    records: &[DiscoveredTenantRecord],
) -> Vec<Uuid> {
    let discovery_run_id = start_discovery(store, tenant_id).await;
    store
        .record_discovery(tenant_id, discovery_run_id, records)
        .await
        .expect("discovery");
    let listed = store
        .list_managed_tenants(tenant_id)
        .await
        .expect("managed tenants");
    records
        .iter()
        .map(|record| {
            listed
                .iter()
                .find(|tenant| tenant.entra_tenant_id == record.entra_tenant_id)
                .expect("discovered")
                .managed_tenant_id
        })
        .collect()
}

/// Maps each of `managed_tenant_ids` to `client_id`, as an admin confirming them would.
pub async fn map_to(store: &Store, tenant_id: Uuid, managed_tenant_ids: &[Uuid], client_id: Uuid) {
    let decisions: Vec<MappingDecisionInput> = managed_tenant_ids
        .iter()
        .map(|managed_tenant_id| MappingDecisionInput {
            managed_tenant_id: *managed_tenant_id,
            action: MappingAction::Map { client_id },
        })
        .collect();
    store
        .confirm_mappings(tenant_id, &decisions, "admin@msp.example")
        .await
        .expect("mapping");
}
