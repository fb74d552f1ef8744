//! What the console's overview shows beyond the integration status: token health, the
//! partner tenant, failing tenants grouped by cause, the next scheduled sync, and names for
//! managed tenants and clients.

use std::collections::BTreeMap;

use entra_sync_store::connection::ConnectionCredentials;
use entra_sync_store::runs::{RunKind, RunScope, RunStatus, RunTrigger};
use serde::Serialize;
use uuid::Uuid;

use super::Caller;
use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Serialize)]
pub(crate) struct FailureGroup {
    pub(crate) code: String,
    pub(crate) class: String,
    pub(crate) message: String,
    pub(crate) remediation: String,
    /// Display names of the managed tenants failing this way.
    pub(crate) tenants: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HealthView {
    /// Direct connections: when the saved access token expires (it is refreshed before).
    pub(crate) token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the credentials were last written (connect or token refresh).
    pub(crate) credentials_updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) partner_tenant_id: Option<String>,
    pub(crate) partner_tenant_name: Option<String>,
    pub(crate) last_successful_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The last scheduled run's start plus the interval, or now plus the interval when none
    /// ran yet; None while the schedule is off or nothing is connected.
    pub(crate) next_scheduled_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) failures: Vec<FailureGroup>,
    pub(crate) running_sync_run_id: Option<Uuid>,
}

/// The overview's health section.
pub(crate) async fn health(state: &AppState, caller: &Caller) -> Result<HealthView, ApiError> {
    let tenant_id = caller.user.tenant_id;
    let connection = state.store.get_connection(tenant_id).await?;
    let (token_expires_at, credentials_updated_at, connected) = match &connection {
        Some(record) => (
            match &record.credentials {
                Some(ConnectionCredentials::Direct(token_set)) => Some(token_set.expires_at),
                _ => None,
            },
            record.credentials.as_ref().map(|_| record.updated_at),
            record.credentials.is_some(),
        ),
        None => (None, None, false),
    };
    let partner = state.store.partner_tenant(tenant_id).await?;
    let names: BTreeMap<Uuid, String> = state
        .store
        .list_managed_tenants(tenant_id)
        .await?
        .into_iter()
        .map(|tenant| (tenant.managed_tenant_id, tenant.display_name))
        .collect();
    let page = entra_sync_store::page::PageRequest {
        limit: Some(50),
        cursor: None,
    };
    let runs = state
        .store
        .list_runs(tenant_id, Some(RunKind::Sync), &page)
        .await?
        .items;
    let last_successful_sync_at = runs
        .iter()
        .filter(|run| run.status == RunStatus::Completed)
        .filter_map(|run| run.finished_at)
        .max();
    let running_sync_run_id = runs
        .iter()
        .find(|run| run.status == RunStatus::Running && run.scope == RunScope::All)
        .map(|run| run.run_id);
    // Failing tenants: the last finished run's failed tenant results, grouped by code.
    let mut groups: BTreeMap<String, FailureGroup> = BTreeMap::new();
    if let Some(run) = runs.iter().find(|run| run.status != RunStatus::Running) {
        for result in &run.tenants {
            let Some(error) = &result.error else { continue };
            let text = |key: &str| {
                error
                    .get(key)
                    .and_then(|value| value.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let group = groups.entry(text("code")).or_insert_with(|| FailureGroup {
                code: text("code"),
                class: text("class"),
                message: text("message"),
                remediation: text("remediation"),
                tenants: Vec::new(),
            });
            group.tenants.push(
                names
                    .get(&result.managed_tenant_id)
                    .cloned()
                    .unwrap_or_else(|| result.managed_tenant_id.to_string()),
            );
        }
    }
    let settings = state.store.load_settings(tenant_id).await?;
    let next_scheduled_sync_at = (settings.schedule.enabled && connected).then(|| {
        let interval = chrono::Duration::seconds(
            i64::try_from(settings.schedule.interval_seconds).unwrap_or(86_400),
        );
        let last = runs
            .iter()
            .filter(|run| run.trigger == RunTrigger::Scheduled)
            .map(|run| run.started_at)
            .max();
        let now = chrono::Utc::now();
        match last {
            Some(last) if last + interval > now => last + interval,
            _ => now + interval,
        }
    });
    Ok(HealthView {
        token_expires_at,
        credentials_updated_at,
        partner_tenant_id: partner.as_ref().map(|(id, _)| id.clone()),
        partner_tenant_name: partner.map(|(_, name)| name),
        last_successful_sync_at,
        next_scheduled_sync_at,
        failures: groups.into_values().collect(),
        running_sync_run_id,
    })
}

/// Managed tenant id → display name, and client id → name, for labelling ids on pages.
pub(crate) async fn names(
    state: &AppState,
    caller: &Caller,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), ApiError> {
    let tenant_id = caller.user.tenant_id;
    let tenants = state
        .store
        .list_managed_tenants(tenant_id)
        .await?
        .into_iter()
        .map(|tenant| (tenant.managed_tenant_id.to_string(), tenant.display_name))
        .collect();
    let clients = state
        .store
        .all_clients(tenant_id)
        .await?
        .into_iter()
        .map(|client| (client.client_id.to_string(), client.name))
        .collect();
    Ok((tenants, clients))
}

/// Who a run's `requested_by` names, in words a person recognizes: the requesting user's
/// email for `user:<id>`, "the schedule" for a scheduled run (or a run without a requester),
/// and the stored text itself for anything else (a user deleted since, an operator tool).
pub(crate) async fn actor_name(
    state: &AppState,
    caller: &Caller,
    requested_by: Option<&str>,
) -> Result<String, ApiError> {
    let Some(requested_by) = requested_by else {
        return Ok("the schedule".to_owned());
    };
    if requested_by == "schedule" {
        return Ok("the schedule".to_owned());
    }
    let Some(user_id) = requested_by
        .strip_prefix("user:")
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return Ok(requested_by.to_owned());
    };
    match state
        .store
        .get_psa_user(caller.user.tenant_id, user_id)
        .await
    {
        Ok(user) => Ok(user.email),
        Err(entra_sync_store::error::StoreError::NotFound) => Ok(requested_by.to_owned()),
        Err(error) => Err(error.into()),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct MappedTenantView {
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) display_name: String,
    pub(crate) last_sync_status: Option<String>,
    pub(crate) last_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) last_run_id: Option<Uuid>,
}

#[derive(Debug, Serialize)]
pub(crate) struct MappedClientView {
    pub(crate) client_id: Uuid,
    pub(crate) name: String,
    pub(crate) tenants: Vec<MappedTenantView>,
}

/// Each client with a mapped managed tenant, with each tenant's latest sync result (from the
/// last 100 sync runs).
pub(crate) async fn mapped_clients(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<MappedClientView>, ApiError> {
    use entra_sync_store::mapping::MappingDecision;
    let tenant_id = caller.user.tenant_id;
    let mappings = state.store.list_mappings(tenant_id).await?;
    let tenants: BTreeMap<Uuid, String> = state
        .store
        .list_managed_tenants(tenant_id)
        .await?
        .into_iter()
        .map(|tenant| (tenant.managed_tenant_id, tenant.display_name))
        .collect();
    let clients = state.store.all_clients(tenant_id).await?;
    let runs = state
        .store
        .list_runs(
            tenant_id,
            Some(RunKind::Sync),
            &entra_sync_store::page::PageRequest {
                limit: Some(100),
                cursor: None,
            },
        )
        .await?
        .items;
    let mut views = Vec::new();
    for client in clients {
        let mut mapped = Vec::new();
        for mapping in mappings.iter().filter(|mapping| {
            mapping.client_id == Some(client.client_id)
                && mapping.decision != MappingDecision::Skipped
        }) {
            // Runs are newest first: the first result found is the latest.
            let latest = runs.iter().find_map(|run| {
                run.tenants
                    .iter()
                    .find(|result| result.managed_tenant_id == mapping.managed_tenant_id)
                    .map(|result| (run.run_id, result))
            });
            mapped.push(MappedTenantView {
                managed_tenant_id: mapping.managed_tenant_id,
                display_name: tenants
                    .get(&mapping.managed_tenant_id)
                    .cloned()
                    .unwrap_or_else(|| mapping.managed_tenant_id.to_string()),
                last_sync_status: latest.map(|(_, result)| result.status.as_str().to_owned()),
                last_sync_at: latest
                    .map(|(_, result)| result.finished_at.unwrap_or(result.started_at)),
                last_run_id: latest.map(|(run_id, _)| run_id),
            });
        }
        if !mapped.is_empty() {
            views.push(MappedClientView {
                client_id: client.client_id,
                name: client.name,
                tenants: mapped,
            });
        }
    }
    Ok(views)
}
