//! Read models only the HTTP API needs: the integration status page's connection summary
//! (without decrypting credentials) and its counts.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Result, Store};

/// The connection as the status page shows it: no credentials, not even encrypted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSummary {
    /// `direct`, `cipp`, or None when disconnected.
    pub kind: Option<String>,
    /// `disconnected`, `connected`, `needs_reconnect` or `validation_failed`.
    pub status: String,
    pub cipp_base_url: Option<String>,
    pub has_credentials: bool,
    pub last_error: Option<serde_json::Value>,
    pub connected_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Counts for the integration status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusPageCounts {
    pub managed_tenants: i64,
    pub active_managed_tenants: i64,
    pub missing_managed_tenants: i64,
    pub mapped: i64,
    pub skipped: i64,
    /// Active managed tenants without a decision.
    pub undecided: i64,
    pub linked_contacts: i64,
    pub open_review_items: i64,
}

type ConnectionSummaryRow = (
    Option<String>,
    String,
    Option<String>,
    bool,
    Option<serde_json::Value>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

impl Store {
    /// The tenant's connection without its secrets; `disconnected` when it never connected.
    pub async fn connection_summary(&self, tenant_id: Uuid) -> Result<ConnectionSummary> {
        let row: Option<ConnectionSummaryRow> = sqlx::query_as(
            "SELECT kind, status, cipp_base_url, credentials_ciphertext IS NOT NULL,
                    last_error, connected_at, updated_at
             FROM connections WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((
                kind,
                status,
                cipp_base_url,
                has_credentials,
                last_error,
                connected_at,
                updated_at,
            )) => ConnectionSummary {
                kind,
                status,
                cipp_base_url,
                has_credentials,
                last_error,
                connected_at,
                updated_at: Some(updated_at),
            },
            None => ConnectionSummary {
                kind: None,
                status: "disconnected".to_owned(),
                cipp_base_url: None,
                has_credentials: false,
                last_error: None,
                connected_at: None,
                updated_at: None,
            },
        })
    }

    /// Managed tenants, decisions, links and open review items, in one statement.
    pub async fn status_page_counts(&self, tenant_id: Uuid) -> Result<StatusPageCounts> {
        let (
            managed_tenants,
            active_managed_tenants,
            missing_managed_tenants,
            mapped,
            skipped,
            undecided,
            linked_contacts,
            open_review_items,
        ): (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                 (SELECT count(*) FROM managed_tenants WHERE tenant_id = $1),
                 (SELECT count(*) FROM managed_tenants WHERE tenant_id = $1 AND status = 'active'),
                 (SELECT count(*) FROM managed_tenants WHERE tenant_id = $1 AND status = 'missing'),
                 (SELECT count(*) FROM mappings
                   WHERE tenant_id = $1 AND decision IN ('mapped', 'create_client')),
                 (SELECT count(*) FROM mappings WHERE tenant_id = $1 AND decision = 'skipped'),
                 (SELECT count(*) FROM managed_tenants mt
                   WHERE mt.tenant_id = $1 AND mt.status = 'active'
                     AND NOT EXISTS (SELECT 1 FROM mappings m
                                     WHERE m.tenant_id = mt.tenant_id
                                       AND m.managed_tenant_id = mt.managed_tenant_id)),
                 (SELECT count(*) FROM links WHERE tenant_id = $1),
                 (SELECT count(*) FROM review_items WHERE tenant_id = $1 AND status = 'open')",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(StatusPageCounts {
            managed_tenants,
            active_managed_tenants,
            missing_managed_tenants,
            mapped,
            skipped,
            undecided,
            linked_contacts,
            open_review_items,
        })
    }
}
