//! The review queue: directory users whose match was ambiguous, and a person's resolution,
//! which the next sync honours (the planner reads it as `ReviewState`).

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::StoreError;
use crate::page::{decode_time_cursor, encode_time_cursor, into_page, Page, PageRequest};
use crate::reconcile::lock_managed_tenant;
use crate::{Result, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewStatus {
    Open,
    Resolved,
    Dismissed,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Resolved => "resolved",
            ReviewStatus::Dismissed => "dismissed",
        }
    }

    pub fn parse(value: &str) -> Option<ReviewStatus> {
        match value {
            "open" => Some(ReviewStatus::Open),
            "resolved" => Some(ReviewStatus::Resolved),
            "dismissed" => Some(ReviewStatus::Dismissed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewItemRecord {
    pub item_id: Uuid,
    pub status: ReviewStatus,
    /// `multiple_candidates`, `candidate_in_other_client` or `candidate_linked_to_other_user`.
    pub reason: String,
    pub managed_tenant_id: Uuid,
    pub client_id: Option<Uuid>,
    pub object_id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// `[{contact_id, client_id, full_name, email}]`.
    pub candidates: serde_json::Value,
    /// `{action, contact_id?, allow_other_client?, by, at}` once resolved or dismissed.
    pub resolution: Option<serde_json::Value>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub client_id: Option<Uuid>,
    pub managed_tenant_id: Option<Uuid>,
    /// `multiple_candidates`, `candidate_in_other_client` or `candidate_linked_to_other_user`.
    pub reason: Option<String>,
}

/// How a person resolves an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewResolution {
    /// Link the directory user to this contact now. A contact of another client than the
    /// mapped one is refused (`Conflict("contact_in_other_client")`) unless allowed.
    LinkExisting {
        contact_id: Uuid,
        allow_other_client: bool,
    },
    /// The next sync creates a new contact for the user.
    CreateNew,
    /// Leave the user alone until a person re-opens the item.
    Dismiss { note: Option<String> },
}

#[derive(FromRow)]
struct ReviewRow {
    item_id: Uuid,
    status: String,
    reason: String,
    managed_tenant_id: Uuid,
    client_id: Option<Uuid>,
    object_id: String,
    display_name: Option<String>,
    email: Option<String>,
    candidates: serde_json::Value,
    resolution: Option<serde_json::Value>,
    note: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub(crate) const REVIEW_COLUMNS: &str =
    "item_id, status, reason, managed_tenant_id, client_id, object_id, \
     display_name, email, candidates, resolution, note, created_at, updated_at";

impl ReviewRow {
    fn into_record(self) -> Result<ReviewItemRecord> {
        Ok(ReviewItemRecord {
            item_id: self.item_id,
            status: ReviewStatus::parse(&self.status)
                .ok_or_else(|| StoreError::Invalid("unknown_review_status".to_owned()))?,
            reason: self.reason,
            managed_tenant_id: self.managed_tenant_id,
            client_id: self.client_id,
            object_id: self.object_id,
            display_name: self.display_name,
            email: self.email,
            candidates: self.candidates,
            resolution: self.resolution,
            note: self.note,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Store {
    /// Review items newest first, filtered by status, client and managed tenant.
    pub async fn list_review_items(
        &self,
        tenant_id: Uuid,
        filter: &ReviewFilter,
        page: &PageRequest,
    ) -> Result<Page<ReviewItemRecord>> {
        let limit = page.effective_limit();
        let after = page.cursor.as_deref().map(decode_time_cursor).transpose()?;
        let list = crate::api_queries::review_items_list_sql(tenant_id, filter, after, limit + 1);
        let rows: Vec<ReviewRow> = list.fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(ReviewRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        Ok(into_page(items, limit, |item: &ReviewItemRecord| {
            encode_time_cursor(item.created_at, item.item_id)
        }))
    }

    pub async fn get_review_item(
        &self,
        tenant_id: Uuid,
        item_id: Uuid,
    ) -> Result<ReviewItemRecord> {
        let row: ReviewRow = sqlx::query_as(&format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE tenant_id = $1 AND item_id = $2"
        ))
        .bind(tenant_id)
        .bind(item_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        row.into_record()
    }

    /// Resolves an open item. `LinkExisting` creates the link at once (refusing a contact
    /// linked to someone else, `Conflict("contact_already_linked")`, or a user already linked,
    /// `Conflict("user_already_linked")`); `CreateNew` and `Dismiss` are recorded for the next
    /// sync. An item that is not open: `Conflict("review_item_not_open")`.
    pub async fn resolve_review_item(
        &self,
        tenant_id: Uuid,
        item_id: Uuid,
        resolution: &ReviewResolution,
        by: &str,
    ) -> Result<ReviewItemRecord> {
        let mut transaction = self.pool.begin().await?;
        let (managed_tenant_id, object_id, client_id, status): (
            Uuid,
            String,
            Option<Uuid>,
            String,
        ) = sqlx::query_as(
            "SELECT managed_tenant_id, object_id, client_id, status FROM review_items
                 WHERE tenant_id = $1 AND item_id = $2 FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(item_id)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or(StoreError::NotFound)?;
        if status != "open" {
            return Err(StoreError::Conflict("review_item_not_open".to_owned()));
        }
        let at = Utc::now();
        let (new_status, resolution_json, note) = match resolution {
            ReviewResolution::LinkExisting {
                contact_id,
                allow_other_client,
            } => {
                // Serialize with the sync of this managed tenant, which may be linking too.
                lock_managed_tenant(&mut transaction, tenant_id, managed_tenant_id).await?;
                let contact_client: Option<Uuid> = sqlx::query_scalar(
                    "SELECT client_id FROM contacts WHERE tenant_id = $1 AND contact_id = $2",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_optional(&mut *transaction)
                .await?;
                let Some(contact_client) = contact_client else {
                    return Err(StoreError::Invalid("unknown_contact".to_owned()));
                };
                if Some(contact_client) != client_id && !allow_other_client {
                    return Err(StoreError::Conflict("contact_in_other_client".to_owned()));
                }
                let (contact_linked, user_linked): (bool, bool) = sqlx::query_as(
                    "SELECT
                         EXISTS (SELECT 1 FROM links WHERE tenant_id = $1 AND contact_id = $2),
                         EXISTS (SELECT 1 FROM links WHERE tenant_id = $1
                                 AND managed_tenant_id = $3 AND object_id = $4)",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .bind(managed_tenant_id)
                .bind(&object_id)
                .fetch_one(&mut *transaction)
                .await?;
                if contact_linked {
                    return Err(StoreError::Conflict("contact_already_linked".to_owned()));
                }
                if user_linked {
                    return Err(StoreError::Conflict("user_already_linked".to_owned()));
                }
                sqlx::query(
                    "INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant_id)
                .bind(managed_tenant_id)
                .bind(&object_id)
                .bind(contact_id)
                .execute(&mut *transaction)
                .await?;
                sqlx::query(
                    "INSERT INTO contact_changes (tenant_id, managed_tenant_id, object_id,
                                                  contact_id, action, before, after)
                     VALUES ($1, $2, $3, $4, 'review_link', NULL, $5)",
                )
                .bind(tenant_id)
                .bind(managed_tenant_id)
                .bind(&object_id)
                .bind(contact_id)
                .bind(serde_json::json!({ "linked_object_id": object_id, "review_item_id": item_id, "by": by }))
                .execute(&mut *transaction)
                .await?;
                (
                    ReviewStatus::Resolved,
                    serde_json::json!({
                        "action": "link_existing",
                        "contact_id": contact_id,
                        "allow_other_client": allow_other_client,
                        "by": by,
                        "at": at,
                    }),
                    None,
                )
            }
            ReviewResolution::CreateNew => (
                ReviewStatus::Resolved,
                serde_json::json!({ "action": "create_new", "by": by, "at": at }),
                None,
            ),
            ReviewResolution::Dismiss { note } => (
                ReviewStatus::Dismissed,
                serde_json::json!({ "action": "dismiss", "by": by, "at": at }),
                note.clone(),
            ),
        };
        let row: ReviewRow = sqlx::query_as(&format!(
            "UPDATE review_items SET status = $3, resolution = $4, note = coalesce($5, note),
                    resolved_by = $6, resolved_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND item_id = $2
             RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(item_id)
        .bind(new_status.as_str())
        .bind(resolution_json)
        .bind(note)
        .bind(by)
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        row.into_record()
    }

    /// Re-opens a dismissed item so the user is considered again. `Conflict` if the user
    /// already has another open item.
    pub async fn reopen_review_item(
        &self,
        tenant_id: Uuid,
        item_id: Uuid,
    ) -> Result<ReviewItemRecord> {
        let row: Option<ReviewRow> = sqlx::query_as(&format!(
            "UPDATE review_items SET status = 'open', resolution = NULL, resolved_by = NULL,
                    resolved_at = NULL, updated_at = now()
             WHERE tenant_id = $1 AND item_id = $2 AND status = 'dismissed'
             RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(item_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => row.into_record(),
            None => {
                self.get_review_item(tenant_id, item_id).await?;
                Err(StoreError::Conflict("review_item_not_dismissed".to_owned()))
            }
        }
    }

    /// How many items are open (for the integration status page).
    pub async fn count_open_review_items(&self, tenant_id: Uuid) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM review_items WHERE tenant_id = $1 AND status = 'open'",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?)
    }
}
