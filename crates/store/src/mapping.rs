//! Mapping decisions: which PSA client each managed tenant syncs into. Scoring lives in the
//! domain; here are its inputs, the all-or-none confirmation, the decision history and unmap.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use crate::discovery::{ManagedTenantRecord, ManagedTenantRow, MANAGED_TENANT_COLUMNS};
use crate::error::StoreError;
use crate::psa::Client;
use crate::{Result, Store};

/// What an admin decided for one managed tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingAction {
    Map {
        client_id: Uuid,
    },
    Skip,
    /// Create a client named after the tenant, with its domains, and map to it.
    CreateClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingDecisionInput {
    pub managed_tenant_id: Uuid,
    pub action: MappingAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingDecision {
    Mapped,
    Skipped,
    CreateClient,
}

impl MappingDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            MappingDecision::Mapped => "mapped",
            MappingDecision::Skipped => "skipped",
            MappingDecision::CreateClient => "create_client",
        }
    }

    fn parse(value: &str) -> Result<MappingDecision> {
        match value {
            "mapped" => Ok(MappingDecision::Mapped),
            "skipped" => Ok(MappingDecision::Skipped),
            "create_client" => Ok(MappingDecision::CreateClient),
            _ => Err(StoreError::Invalid("unknown_mapping_decision".to_owned())),
        }
    }
}

/// The current decision for a managed tenant. `client_id` is set for `Mapped` and for
/// `CreateClient` (the client that was created), never for `Skipped`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingRecord {
    pub managed_tenant_id: Uuid,
    pub decision: MappingDecision,
    pub client_id: Option<Uuid>,
    pub decided_by: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// A managed tenant with its current decision, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewTenant {
    pub managed_tenant: ManagedTenantRecord,
    pub mapping: Option<MappingRecord>,
}

/// Everything the domain's mapping scorer needs, read in one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingPreviewInputs {
    pub tenants: Vec<PreviewTenant>,
    pub clients: Vec<Client>,
}

#[derive(FromRow)]
struct MappingRow {
    managed_tenant_id: Uuid,
    decision: String,
    client_id: Option<Uuid>,
    decided_by: Option<String>,
    decided_at: DateTime<Utc>,
}

impl MappingRow {
    fn into_record(self) -> Result<MappingRecord> {
        Ok(MappingRecord {
            managed_tenant_id: self.managed_tenant_id,
            decision: MappingDecision::parse(&self.decision)?,
            client_id: self.client_id,
            decided_by: self.decided_by,
            decided_at: self.decided_at,
        })
    }
}

impl Store {
    /// Read-only: the managed tenants (with decisions where taken) and all clients.
    pub async fn mapping_preview_inputs(&self, tenant_id: Uuid) -> Result<MappingPreviewInputs> {
        // Tenants and their decisions in one repeatable-read snapshot; the clients are read
        // meanwhile on another connection (a client added in between is either in the
        // preview or not, as if the request had come a moment earlier or later).
        let snapshot = async {
            let mut transaction = self.pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *transaction)
                .await?;
            let tenants: Vec<ManagedTenantRow> = sqlx::query_as(&format!(
                "SELECT {MANAGED_TENANT_COLUMNS} FROM managed_tenants
                 WHERE tenant_id = $1 ORDER BY lower(display_name), managed_tenant_id"
            ))
            .bind(tenant_id)
            .fetch_all(&mut *transaction)
            .await?;
            let mappings: Vec<MappingRow> = sqlx::query_as(
                "SELECT managed_tenant_id, decision, client_id, decided_by, decided_at
                 FROM mappings WHERE tenant_id = $1",
            )
            .bind(tenant_id)
            .fetch_all(&mut *transaction)
            .await?;
            transaction.commit().await?;
            Ok::<_, crate::StoreError>((tenants, mappings))
        };
        let ((tenants, mappings), clients) =
            tokio::try_join!(snapshot, self.all_clients(tenant_id))?;
        let mut mappings = mappings
            .into_iter()
            .map(|row| {
                row.into_record()
                    .map(|record| (record.managed_tenant_id, record))
            })
            .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
        let tenants = tenants
            .into_iter()
            .map(|row| {
                let managed_tenant = row.into_record();
                let mapping = mappings.remove(&managed_tenant.managed_tenant_id);
                PreviewTenant {
                    managed_tenant,
                    mapping,
                }
            })
            .collect();
        Ok(MappingPreviewInputs { tenants, clients })
    }

    /// Applies a batch of decisions all or none, in one transaction, with a history row per
    /// decision. A managed tenant may appear once per batch; its decision replaces any earlier
    /// one (so it maps to at most one client).
    pub async fn confirm_mappings(
        &self,
        tenant_id: Uuid,
        decisions: &[MappingDecisionInput],
        decided_by: &str,
    ) -> Result<Vec<MappingRecord>> {
        // What the batch names must exist before its consistency is judged: an unknown id is
        // reported as such (404 at the API) even when it is also named twice.
        let managed_tenant_ids: Vec<Uuid> = decisions
            .iter()
            .map(|decision| decision.managed_tenant_id)
            .collect::<BTreeSet<Uuid>>()
            .into_iter()
            .collect();
        let mut transaction = self.pool.begin().await?;
        let tenants: Vec<ManagedTenantRow> = sqlx::query_as(&format!(
            "SELECT {MANAGED_TENANT_COLUMNS} FROM managed_tenants
             WHERE tenant_id = $1 AND managed_tenant_id = ANY($2) FOR UPDATE"
        ))
        .bind(tenant_id)
        .bind(&managed_tenant_ids)
        .fetch_all(&mut *transaction)
        .await?;
        if tenants.len() != managed_tenant_ids.len() {
            return Err(StoreError::Invalid("unknown_managed_tenant".to_owned()));
        }
        let tenants: std::collections::BTreeMap<Uuid, ManagedTenantRecord> = tenants
            .into_iter()
            .map(|row| {
                let record = row.into_record();
                (record.managed_tenant_id, record)
            })
            .collect();
        let requested_clients: Vec<Uuid> = decisions
            .iter()
            .filter_map(|decision| match decision.action {
                MappingAction::Map { client_id } => Some(client_id),
                _ => None,
            })
            .collect();
        let known_clients: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM clients WHERE tenant_id = $1 AND client_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&requested_clients)
        .fetch_one(&mut *transaction)
        .await?;
        let distinct_requested: BTreeSet<Uuid> = requested_clients.iter().copied().collect();
        if known_clients != distinct_requested.len() as i64 {
            return Err(StoreError::Invalid("unknown_client".to_owned()));
        }
        if managed_tenant_ids.len() != decisions.len() {
            return Err(StoreError::Invalid("duplicate_managed_tenant".to_owned()));
        }

        let mut records = Vec::with_capacity(decisions.len());
        for decision in decisions {
            let (decision_kind, client_id) = match decision.action {
                MappingAction::Map { client_id } => (MappingDecision::Mapped, Some(client_id)),
                MappingAction::Skip => (MappingDecision::Skipped, None),
                MappingAction::CreateClient => {
                    let existing: Option<Uuid> = sqlx::query_scalar(
                        "SELECT client_id FROM mappings
                         WHERE tenant_id = $1 AND managed_tenant_id = $2
                           AND decision = 'create_client'",
                    )
                    .bind(tenant_id)
                    .bind(decision.managed_tenant_id)
                    .fetch_optional(&mut *transaction)
                    .await?
                    .flatten();
                    let client_id = match existing {
                        Some(client_id) => client_id,
                        None => {
                            let tenant = tenants
                                .get(&decision.managed_tenant_id)
                                .ok_or(StoreError::NotFound)?;
                            let domains: Vec<String> = tenant
                                .domains
                                .iter()
                                .map(|domain| domain.name.clone())
                                .collect();
                            sqlx::query_scalar(
                                "INSERT INTO clients (tenant_id, client_id, name, domains)
                                 VALUES ($1, $2, $3, $4) RETURNING client_id",
                            )
                            .bind(tenant_id)
                            .bind(Uuid::now_v7())
                            .bind(&tenant.display_name)
                            .bind(&domains)
                            .fetch_one(&mut *transaction)
                            .await?
                        }
                    };
                    (MappingDecision::CreateClient, Some(client_id))
                }
            };
            let row: MappingRow = sqlx::query_as(
                "INSERT INTO mappings (tenant_id, managed_tenant_id, decision, client_id, decided_by)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, managed_tenant_id) DO UPDATE SET
                     decision = excluded.decision, client_id = excluded.client_id,
                     decided_by = excluded.decided_by, decided_at = now()
                 RETURNING managed_tenant_id, decision, client_id, decided_by, decided_at",
            )
            .bind(tenant_id)
            .bind(decision.managed_tenant_id)
            .bind(decision_kind.as_str())
            .bind(client_id)
            .bind(decided_by)
            .fetch_one(&mut *transaction)
            .await?;
            sqlx::query(
                "INSERT INTO mapping_decisions (tenant_id, managed_tenant_id, decision, client_id, decided_by)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(tenant_id)
            .bind(decision.managed_tenant_id)
            .bind(decision_kind.as_str())
            .bind(client_id)
            .bind(decided_by)
            .execute(&mut *transaction)
            .await?;
            records.push(row.into_record()?);
        }
        transaction.commit().await?;
        Ok(records)
    }

    pub async fn list_mappings(&self, tenant_id: Uuid) -> Result<Vec<MappingRecord>> {
        let rows: Vec<MappingRow> = sqlx::query_as(
            "SELECT managed_tenant_id, decision, client_id, decided_by, decided_at
             FROM mappings WHERE tenant_id = $1 ORDER BY decided_at, managed_tenant_id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(MappingRow::into_record).collect()
    }

    /// The decision history of one managed tenant, oldest first: (decision, client, by, at).
    pub async fn mapping_history(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<Vec<(String, Option<Uuid>, Option<String>, DateTime<Utc>)>> {
        Ok(sqlx::query_as(
            "SELECT decision, client_id, decided_by, decided_at FROM mapping_decisions
             WHERE tenant_id = $1 AND managed_tenant_id = $2 ORDER BY decided_at, decision_id",
        )
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes the decision (the tenant becomes undecided); links and contacts stay.
    pub async fn unmap(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
        decided_by: &str,
    ) -> Result<()> {
        let mut transaction = self.pool.begin().await?;
        let removed =
            sqlx::query("DELETE FROM mappings WHERE tenant_id = $1 AND managed_tenant_id = $2")
                .bind(tenant_id)
                .bind(managed_tenant_id)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
        if removed == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO mapping_decisions (tenant_id, managed_tenant_id, decision, decided_by)
             VALUES ($1, $2, 'unmapped', $3)",
        )
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .bind(decided_by)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }
}
