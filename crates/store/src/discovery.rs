//! Managed tenants as discovery finds them. Discovery upserts what a successful listing
//! returned and marks the rest `missing`; it never deletes a managed tenant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::StoreError;
use crate::{Result, Store};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDomain {
    pub name: String,
    pub is_default: bool,
    pub is_initial: bool,
}

/// One tenant of a successful listing (GDAP or CIPP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredTenantRecord {
    pub entra_tenant_id: String,
    pub display_name: String,
    pub domains: Vec<TenantDomain>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagedTenantStatus {
    Active,
    Missing,
}

impl ManagedTenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedTenantStatus::Active => "active",
            ManagedTenantStatus::Missing => "missing",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedTenantRecord {
    pub managed_tenant_id: Uuid,
    pub entra_tenant_id: String,
    pub display_name: String,
    pub domains: Vec<TenantDomain>,
    pub status: ManagedTenantStatus,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub last_discovery_run_id: Option<Uuid>,
}

/// What one discovery changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryOutcome {
    pub discovered: u64,
    pub added: u64,
    pub marked_missing: u64,
    /// Tenants whose domains could not be read this time and kept the ones stored before.
    pub domains_kept: u64,
}

#[derive(FromRow)]
pub(crate) struct ManagedTenantRow {
    managed_tenant_id: Uuid,
    entra_tenant_id: String,
    display_name: String,
    domains: serde_json::Value,
    status: String,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    last_discovery_run_id: Option<Uuid>,
}

pub(crate) const MANAGED_TENANT_COLUMNS: &str =
    "managed_tenant_id, entra_tenant_id, display_name, \
     domains, status, first_seen_at, last_seen_at, last_discovery_run_id";

impl ManagedTenantRow {
    pub(crate) fn into_record(self) -> ManagedTenantRecord {
        ManagedTenantRecord {
            managed_tenant_id: self.managed_tenant_id,
            entra_tenant_id: self.entra_tenant_id,
            display_name: self.display_name,
            // The column is only ever written from `TenantDomain` lists.
            domains: serde_json::from_value(self.domains).unwrap_or_default(),
            status: if self.status == "missing" {
                ManagedTenantStatus::Missing
            } else {
                ManagedTenantStatus::Active
            },
            first_seen_at: self.first_seen_at,
            last_seen_at: self.last_seen_at,
            last_discovery_run_id: self.last_discovery_run_id,
        }
    }
}

/// Marks the PSA tenant's active managed tenants a listing did not return as missing (`$1`
/// tenant, `$2` the listed Entra tenant ids). The listed ids are one hashed set (`NOT IN`
/// over their unnesting; none is NULL): `NOT (… = ANY($2))` is hashed only in a custom plan,
/// and a prepared statement's generic plan would scan the whole list for each managed tenant.
pub(crate) const MARK_MISSING: &str =
    "UPDATE managed_tenants SET status = 'missing', missing_since = now()
     WHERE tenant_id = $1 AND status = 'active'
       AND entra_tenant_id NOT IN (SELECT unnest($2::text[]))";

impl Store {
    /// Records a *successful* listing: upserts every tenant in it (reviving missing ones) and
    /// marks every other active managed tenant `missing`. Also writes the discovery counts to
    /// the run's totals. A failed listing must not call this.
    pub async fn record_discovery(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        tenants: &[DiscoveredTenantRecord],
    ) -> Result<DiscoveryOutcome> {
        self.record_discovery_keeping_domains(tenant_id, run_id, tenants, &[])
            .await
    }

    /// [`Store::record_discovery`] for a listing in which the domains of some tenants
    /// (`domains_unreadable`, Entra tenant ids) could not be read: those tenants keep the
    /// domains stored before (an empty list would silently drop them from domain matching),
    /// and their number is recorded in the run's totals as `domains_unreadable`.
    pub async fn record_discovery_keeping_domains(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        tenants: &[DiscoveredTenantRecord],
        domains_unreadable: &[String],
    ) -> Result<DiscoveryOutcome> {
        let domains_unreadable: Vec<String> = domains_unreadable
            .iter()
            .map(|id| id.trim().to_lowercase())
            .collect();
        // One row per Entra tenant id (a listing may repeat one); the last occurrence wins.
        let mut unique: BTreeMap<String, &DiscoveredTenantRecord> = BTreeMap::new();
        for tenant in tenants {
            let entra_tenant_id = tenant.entra_tenant_id.trim().to_lowercase();
            if entra_tenant_id.is_empty() {
                return Err(StoreError::Invalid("empty_entra_tenant_id".to_owned()));
            }
            unique.insert(entra_tenant_id, tenant);
        }
        let mut ids = Vec::with_capacity(unique.len());
        let mut names = Vec::with_capacity(unique.len());
        let mut domains = Vec::with_capacity(unique.len());
        for (entra_tenant_id, tenant) in &unique {
            ids.push(entra_tenant_id.clone());
            let display_name = tenant.display_name.trim();
            names.push(if display_name.is_empty() {
                entra_tenant_id.clone()
            } else {
                display_name.to_owned()
            });
            let tenant_domains: Vec<TenantDomain> = tenant
                .domains
                .iter()
                .map(|domain| TenantDomain {
                    name: domain.name.trim().to_lowercase(),
                    is_default: domain.is_default,
                    is_initial: domain.is_initial,
                })
                .filter(|domain| !domain.name.is_empty())
                .collect();
            domains.push(
                serde_json::to_string(&tenant_domains)
                    .map_err(|_| StoreError::Invalid("domains".to_owned()))?,
            );
        }

        let mut transaction = self.pool.begin().await?;
        let inserted: Vec<bool> = sqlx::query_scalar(
            "INSERT INTO managed_tenants (tenant_id, entra_tenant_id, display_name, domains,
                                          last_discovery_run_id)
             SELECT $1, id, name, domains::jsonb, $2
             FROM UNNEST($3::text[], $4::text[], $5::text[]) AS input(id, name, domains)
             ON CONFLICT (tenant_id, entra_tenant_id) DO UPDATE SET
                 display_name = excluded.display_name,
                 domains = CASE WHEN excluded.entra_tenant_id = ANY($6)
                                THEN managed_tenants.domains ELSE excluded.domains END,
                 status = 'active',
                 missing_since = NULL,
                 last_seen_at = now(),
                 last_discovery_run_id = excluded.last_discovery_run_id
             RETURNING (xmax = 0)",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(&ids)
        .bind(&names)
        .bind(&domains)
        .bind(&domains_unreadable)
        .fetch_all(&mut *transaction)
        .await?;
        let marked_missing = sqlx::query(MARK_MISSING)
            .bind(tenant_id)
            .bind(&ids)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        let outcome = DiscoveryOutcome {
            discovered: ids.len() as u64,
            added: inserted.iter().filter(|inserted| **inserted).count() as u64,
            marked_missing,
            domains_kept: ids
                .iter()
                .filter(|id| domains_unreadable.contains(id))
                .count() as u64,
        };
        sqlx::query("UPDATE runs SET totals = $3 WHERE tenant_id = $1 AND run_id = $2")
            .bind(tenant_id)
            .bind(run_id)
            .bind(serde_json::json!({
                "discovered": outcome.discovered,
                "added": outcome.added,
                "marked_missing": outcome.marked_missing,
                "domains_unreadable": outcome.domains_kept,
            }))
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    /// Every managed tenant of the PSA tenant, active and missing, by display name.
    pub async fn list_managed_tenants(&self, tenant_id: Uuid) -> Result<Vec<ManagedTenantRecord>> {
        let rows: Vec<ManagedTenantRow> = sqlx::query_as(&format!(
            "SELECT {MANAGED_TENANT_COLUMNS} FROM managed_tenants
             WHERE tenant_id = $1 ORDER BY lower(display_name), managed_tenant_id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(ManagedTenantRow::into_record)
            .collect())
    }

    pub async fn get_managed_tenant(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<ManagedTenantRecord> {
        let row: ManagedTenantRow = sqlx::query_as(&format!(
            "SELECT {MANAGED_TENANT_COLUMNS} FROM managed_tenants
             WHERE tenant_id = $1 AND managed_tenant_id = $2"
        ))
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(row.into_record())
    }
}
