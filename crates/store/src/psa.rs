//! The PSA side of the data model: PSA tenants, their users and API keys, clients and
//! contacts, plus bulk seeding for demos and benchmarks.

use chrono::{DateTime, Utc};
use entra_sync_domain::email::email_key;
use entra_sync_domain::model::{Contact, ContactFields, InactiveReason};
use sqlx::FromRow;
use uuid::Uuid;

use crate::crypto::{random_token, sha256};
use crate::error::StoreError;
use crate::page::{decode_text_cursor, encode_text_cursor, into_page, Page, PageRequest};
use crate::{Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsaTenant {
    pub tenant_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsaUserType {
    /// A user of the MSP itself.
    Internal,
    /// A client-portal user; refused on every Entra endpoint.
    Client,
}

impl PsaUserType {
    pub fn as_str(self) -> &'static str {
        match self {
            PsaUserType::Internal => "internal",
            PsaUserType::Client => "client",
        }
    }

    pub fn parse(value: &str) -> Option<PsaUserType> {
        match value {
            "internal" => Some(PsaUserType::Internal),
            "client" => Some(PsaUserType::Client),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsaUser {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub user_type: PsaUserType,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl PsaUser {
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|granted| granted == permission)
    }
}

/// A freshly issued API key. `Debug` does not print the key.
pub struct IssuedApiKey(pub String);

impl std::fmt::Debug for IssuedApiKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("IssuedApiKey(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub tenant_id: Uuid,
    pub client_id: Uuid,
    pub name: String,
    pub domains: Vec<String>,
    pub secondary_domains: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A client to create, for bulk seeding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewClient {
    pub name: String,
    pub domains: Vec<String>,
    pub secondary_domains: Vec<String>,
}

/// A contact to create, for bulk seeding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewContact {
    pub client_id: Uuid,
    pub fields: ContactFields,
}

/// The directory user a contact is linked to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactLink {
    pub managed_tenant_id: Uuid,
    pub entra_tenant_id: String,
    pub object_id: String,
}

/// A contact as the API shows it: the planner's view plus timestamps and its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactRecord {
    pub contact: Contact,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub link: Option<ContactLink>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactFilter {
    pub client_id: Option<Uuid>,
    /// Compared trimmed and case-insensitively.
    pub email: Option<String>,
    /// False (the default) lists active contacts only.
    pub include_inactive: bool,
    /// Contacts whose name or email contains this text, case-insensitively (the console's
    /// contact picker).
    pub search: Option<String>,
}

/// A partial edit of a contact through the PSA. `Some(None)` clears an optional field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactPatch {
    pub full_name: Option<String>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub mobile: Option<Option<String>>,
    pub job_title: Option<Option<String>>,
    pub sync_locked: Option<bool>,
    /// False makes the contact inactive with reason `manual` (which the sync never undoes);
    /// true reactivates it and clears the reason.
    pub is_active: Option<bool>,
}

#[derive(FromRow)]
pub(crate) struct PsaUserRow {
    pub(crate) tenant_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    pub(crate) user_type: String,
    pub(crate) permissions: Vec<String>,
    pub(crate) created_at: DateTime<Utc>,
}

impl PsaUserRow {
    pub(crate) fn into_user(self) -> Result<PsaUser> {
        Ok(PsaUser {
            tenant_id: self.tenant_id,
            user_id: self.user_id,
            email: self.email,
            user_type: PsaUserType::parse(&self.user_type)
                .ok_or_else(|| StoreError::Invalid("unknown_user_type".to_owned()))?,
            permissions: self.permissions,
            created_at: self.created_at,
        })
    }
}

#[derive(FromRow)]
struct ClientRow {
    tenant_id: Uuid,
    client_id: Uuid,
    name: String,
    domains: Vec<String>,
    secondary_domains: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<ClientRow> for Client {
    fn from(row: ClientRow) -> Client {
        Client {
            tenant_id: row.tenant_id,
            client_id: row.client_id,
            name: row.name,
            domains: row.domains,
            secondary_domains: row.secondary_domains,
            created_at: row.created_at,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct ContactRow {
    pub contact_id: Uuid,
    pub client_id: Uuid,
    pub full_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub job_title: Option<String>,
    pub is_active: bool,
    pub inactive_reason: Option<String>,
    pub sync_locked: bool,
}

impl ContactRow {
    pub(crate) fn into_contact(self) -> Contact {
        Contact {
            contact_id: self.contact_id,
            client_id: self.client_id,
            fields: ContactFields {
                full_name: self.full_name,
                email: self.email,
                phone: self.phone,
                mobile: self.mobile,
                job_title: self.job_title,
            },
            is_active: self.is_active,
            inactive_reason: self
                .inactive_reason
                .as_deref()
                .and_then(InactiveReason::parse),
            sync_locked: self.sync_locked,
        }
    }
}

#[derive(FromRow)]
struct ContactRecordRow {
    #[sqlx(flatten)]
    contact: ContactRow,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    link_managed_tenant_id: Option<Uuid>,
    link_entra_tenant_id: Option<String>,
    link_object_id: Option<String>,
}

impl From<ContactRecordRow> for ContactRecord {
    fn from(row: ContactRecordRow) -> ContactRecord {
        let link = match (
            row.link_managed_tenant_id,
            row.link_entra_tenant_id,
            row.link_object_id,
        ) {
            (Some(managed_tenant_id), Some(entra_tenant_id), Some(object_id)) => {
                Some(ContactLink {
                    managed_tenant_id,
                    entra_tenant_id,
                    object_id,
                })
            }
            _ => None,
        };
        ContactRecord {
            contact: row.contact.into_contact(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            link,
        }
    }
}

pub(crate) const CONTACT_RECORD_SELECT: &str = "
    SELECT c.contact_id, c.client_id, c.full_name, c.email, c.phone, c.mobile, c.job_title,
           c.is_active, c.inactive_reason, c.sync_locked, c.created_at, c.updated_at,
           l.managed_tenant_id AS link_managed_tenant_id,
           mt.entra_tenant_id AS link_entra_tenant_id,
           l.object_id AS link_object_id
    FROM contacts c
    LEFT JOIN links l ON l.tenant_id = c.tenant_id AND l.contact_id = c.contact_id
    LEFT JOIN managed_tenants mt
           ON mt.tenant_id = l.tenant_id AND mt.managed_tenant_id = l.managed_tenant_id";

/// Domains are compared lowercase and trimmed everywhere; empty entries are dropped.
fn normalize_domains(domains: &[String]) -> Vec<String> {
    let mut normalized: Vec<String> = domains
        .iter()
        .map(|domain| domain.trim().trim_end_matches('.').to_lowercase())
        .filter(|domain| !domain.is_empty())
        .collect();
    normalized.sort();
    normalized.dedup();
    normalized
}

fn blank_to_none(value: Option<String>) -> Option<String> {
    value.and_then(|value| {
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    })
}

fn clean_fields(fields: &ContactFields) -> Result<ContactFields> {
    let full_name = fields.full_name.trim().to_owned();
    if full_name.is_empty() {
        return Err(StoreError::Invalid("full_name_required".to_owned()));
    }
    Ok(ContactFields {
        full_name,
        email: blank_to_none(fields.email.clone()),
        phone: blank_to_none(fields.phone.clone()),
        mobile: blank_to_none(fields.mobile.clone()),
        job_title: blank_to_none(fields.job_title.clone()),
    })
}

impl Store {
    pub async fn create_psa_tenant(&self, name: &str) -> Result<PsaTenant> {
        let (tenant_id, name, created_at): (Uuid, String, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO psa_tenants (tenant_id, name) VALUES ($1, $2)
             RETURNING tenant_id, name, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(name.trim())
        .fetch_one(&self.pool)
        .await?;
        Ok(PsaTenant {
            tenant_id,
            name,
            created_at,
        })
    }

    pub async fn get_psa_tenant(&self, tenant_id: Uuid) -> Result<PsaTenant> {
        let (tenant_id, name, created_at): (Uuid, String, DateTime<Utc>) = sqlx::query_as(
            "SELECT tenant_id, name, created_at FROM psa_tenants WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(PsaTenant {
            tenant_id,
            name,
            created_at,
        })
    }

    /// Creates a user and its first API key: 32 random bytes, base64url, returned once; the
    /// database keeps only its SHA-256 and a short prefix for display.
    pub async fn create_psa_user(
        &self,
        tenant_id: Uuid,
        email: &str,
        user_type: PsaUserType,
        permissions: &[String],
    ) -> Result<(PsaUser, IssuedApiKey)> {
        let email = email.trim();
        if email.is_empty() || !email.contains('@') {
            return Err(StoreError::Invalid("invalid_email".to_owned()));
        }
        let key = format!("esk_{}", random_token(32));
        let mut transaction = self.pool.begin().await?;
        let user: PsaUserRow = sqlx::query_as(
            "INSERT INTO psa_users (tenant_id, user_id, email, user_type, permissions)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING tenant_id, user_id, email, user_type, permissions, created_at",
        )
        .bind(tenant_id)
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(user_type.as_str())
        .bind(permissions)
        .fetch_one(&mut *transaction)
        .await?;
        sqlx::query(
            "INSERT INTO api_keys (tenant_id, user_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant_id)
        .bind(user.user_id)
        .bind(sha256(&key))
        .bind(&key[..12])
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok((user.into_user()?, IssuedApiKey(key)))
    }

    /// The user a presented API key belongs to, or None for an unknown or revoked key.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<Option<PsaUser>> {
        let row: Option<PsaUserRow> = sqlx::query_as(
            "WITH used AS (
                 UPDATE api_keys SET last_used_at = now()
                 WHERE key_hash = $1 AND revoked_at IS NULL
                 RETURNING tenant_id, user_id
             )
             SELECT u.tenant_id, u.user_id, u.email, u.user_type, u.permissions, u.created_at
             FROM used JOIN psa_users u USING (tenant_id, user_id)",
        )
        .bind(sha256(key))
        .fetch_optional(&self.pool)
        .await?;
        row.map(PsaUserRow::into_user).transpose()
    }

    pub async fn get_psa_user(&self, tenant_id: Uuid, user_id: Uuid) -> Result<PsaUser> {
        let row: PsaUserRow = sqlx::query_as(
            "SELECT tenant_id, user_id, email, user_type, permissions, created_at
             FROM psa_users WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        row.into_user()
    }

    pub async fn create_client(
        &self,
        tenant_id: Uuid,
        name: &str,
        domains: &[String],
        secondary_domains: &[String],
    ) -> Result<Client> {
        let row: ClientRow = sqlx::query_as(
            "INSERT INTO clients (tenant_id, client_id, name, domains, secondary_domains)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING tenant_id, client_id, name, domains, secondary_domains, created_at",
        )
        .bind(tenant_id)
        .bind(Uuid::now_v7())
        .bind(name.trim())
        .bind(normalize_domains(domains))
        .bind(normalize_domains(secondary_domains))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    pub async fn get_client(&self, tenant_id: Uuid, client_id: Uuid) -> Result<Client> {
        let row: ClientRow = sqlx::query_as(
            "SELECT tenant_id, client_id, name, domains, secondary_domains, created_at
             FROM clients WHERE tenant_id = $1 AND client_id = $2",
        )
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(row.into())
    }

    /// Clients ordered by name.
    pub async fn list_clients(&self, tenant_id: Uuid, page: &PageRequest) -> Result<Page<Client>> {
        let limit = page.effective_limit();
        let after = page.cursor.as_deref().map(decode_text_cursor).transpose()?;
        let rows: Vec<ClientRow> = sqlx::query_as(
            "SELECT tenant_id, client_id, name, domains, secondary_domains, created_at
             FROM clients
             WHERE tenant_id = $1 AND ($2::text IS NULL OR (name, client_id) > ($2, $3))
             ORDER BY name, client_id
             LIMIT $4",
        )
        .bind(tenant_id)
        .bind(after.as_ref().map(|(name, _)| name.clone()))
        .bind(after.as_ref().map(|(_, id)| *id))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let clients = rows.into_iter().map(Client::from).collect();
        Ok(into_page(clients, limit, |client: &Client| {
            encode_text_cursor(&client.name, client.client_id)
        }))
    }

    /// Every client of the tenant (mapping preview scores all of them).
    pub async fn all_clients(&self, tenant_id: Uuid) -> Result<Vec<Client>> {
        let rows: Vec<ClientRow> = sqlx::query_as(
            "SELECT tenant_id, client_id, name, domains, secondary_domains, created_at
             FROM clients WHERE tenant_id = $1 ORDER BY name, client_id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Client::from).collect())
    }

    pub async fn create_contact(
        &self,
        tenant_id: Uuid,
        client_id: Uuid,
        fields: &ContactFields,
    ) -> Result<ContactRecord> {
        let fields = clean_fields(fields)?;
        let contact_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO contacts (tenant_id, contact_id, client_id, full_name, email, phone, mobile,
                                   job_title, email_normalized)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant_id)
        .bind(contact_id)
        .bind(client_id)
        .bind(&fields.full_name)
        .bind(&fields.email)
        .bind(&fields.phone)
        .bind(&fields.mobile)
        .bind(&fields.job_title)
        .bind(fields.email.as_deref().and_then(email_key))
        .execute(&self.pool)
        .await
        .map_err(|error| match StoreError::from(error) {
            StoreError::Invalid(_) => StoreError::Invalid("unknown_client".to_owned()),
            other => other,
        })?;
        self.get_contact(tenant_id, contact_id).await
    }

    pub async fn get_contact(&self, tenant_id: Uuid, contact_id: Uuid) -> Result<ContactRecord> {
        let row: ContactRecordRow = sqlx::query_as(&format!(
            "{CONTACT_RECORD_SELECT} WHERE c.tenant_id = $1 AND c.contact_id = $2"
        ))
        .bind(tenant_id)
        .bind(contact_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(row.into())
    }

    /// Contacts ordered by name, filtered by client, email and activity.
    pub async fn list_contacts(
        &self,
        tenant_id: Uuid,
        filter: &ContactFilter,
        page: &PageRequest,
    ) -> Result<Page<ContactRecord>> {
        let limit = page.effective_limit();
        let after = page.cursor.as_deref().map(decode_text_cursor).transpose()?;
        let list = crate::api_queries::contacts_list_sql(tenant_id, filter, after, limit + 1);
        let rows: Vec<ContactRecordRow> = list.fetch_all(&self.pool).await?;
        let records = rows.into_iter().map(ContactRecord::from).collect();
        Ok(into_page(records, limit, |record: &ContactRecord| {
            encode_text_cursor(&record.contact.fields.full_name, record.contact.contact_id)
        }))
    }

    /// Applies a PSA edit to a contact.
    pub async fn update_contact(
        &self,
        tenant_id: Uuid,
        contact_id: Uuid,
        patch: &ContactPatch,
    ) -> Result<ContactRecord> {
        if let Some(full_name) = &patch.full_name {
            if full_name.trim().is_empty() {
                return Err(StoreError::Invalid("full_name_required".to_owned()));
            }
        }
        let clean = |value: &Option<Option<String>>| value.clone().map(blank_to_none);
        let (email, phone, mobile, job_title) = (
            clean(&patch.email),
            clean(&patch.phone),
            clean(&patch.mobile),
            clean(&patch.job_title),
        );
        let email_key_of = email
            .as_ref()
            .map(|email| email.as_deref().and_then(email_key));
        let updated = sqlx::query(
            "UPDATE contacts SET
                 full_name = coalesce($3, full_name),
                 email = CASE WHEN $4 THEN $5 ELSE email END,
                 email_normalized = CASE WHEN $4 THEN $14 ELSE email_normalized END,
                 phone = CASE WHEN $6 THEN $7 ELSE phone END,
                 mobile = CASE WHEN $8 THEN $9 ELSE mobile END,
                 job_title = CASE WHEN $10 THEN $11 ELSE job_title END,
                 sync_locked = coalesce($12, sync_locked),
                 is_active = coalesce($13, is_active),
                 inactive_reason = CASE
                     WHEN $13 IS NULL THEN inactive_reason
                     WHEN $13 THEN NULL
                     WHEN is_active THEN 'manual'
                     ELSE inactive_reason END,
                 updated_at = now()
             WHERE tenant_id = $1 AND contact_id = $2",
        )
        .bind(tenant_id)
        .bind(contact_id)
        .bind(patch.full_name.as_deref().map(str::trim))
        .bind(email.is_some())
        .bind(email.flatten())
        .bind(phone.is_some())
        .bind(phone.flatten())
        .bind(mobile.is_some())
        .bind(mobile.flatten())
        .bind(job_title.is_some())
        .bind(job_title.flatten())
        .bind(patch.sync_locked)
        .bind(patch.is_active)
        .bind(email_key_of.flatten())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_contact(tenant_id, contact_id).await
    }

    /// Inserts many clients in one statement; returns their ids in input order.
    pub async fn insert_clients_bulk(
        &self,
        tenant_id: Uuid,
        clients: &[NewClient],
    ) -> Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = clients.iter().map(|_| Uuid::now_v7()).collect();
        let names: Vec<String> = clients
            .iter()
            .map(|client| client.name.trim().to_owned())
            .collect();
        // Arrays of arrays must be rectangular in Postgres, so domain lists travel as
        // comma-joined text and are split back in SQL.
        let domains: Vec<String> = clients
            .iter()
            .map(|client| normalize_domains(&client.domains).join(","))
            .collect();
        let secondary: Vec<String> = clients
            .iter()
            .map(|client| normalize_domains(&client.secondary_domains).join(","))
            .collect();
        sqlx::query(
            "INSERT INTO clients (tenant_id, client_id, name, domains, secondary_domains)
             SELECT $1, id, name,
                    coalesce(string_to_array(nullif(domains, ''), ','), '{}'),
                    coalesce(string_to_array(nullif(secondary, ''), ','), '{}')
             FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[])
                  AS input(id, name, domains, secondary)",
        )
        .bind(tenant_id)
        .bind(&ids)
        .bind(&names)
        .bind(&domains)
        .bind(&secondary)
        .execute(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Inserts many contacts in one statement; returns their ids in input order.
    pub async fn insert_contacts_bulk(
        &self,
        tenant_id: Uuid,
        contacts: &[NewContact],
    ) -> Result<Vec<Uuid>> {
        let mut columns = ContactColumns::default();
        for contact in contacts {
            columns.push(
                Uuid::now_v7(),
                contact.client_id,
                &clean_fields(&contact.fields)?,
            );
        }
        sqlx::query(
            "INSERT INTO contacts (tenant_id, contact_id, client_id, full_name, email, phone, mobile,
                                   job_title, email_normalized)
             SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
        )
        .bind(tenant_id)
        .bind(&columns.contact_ids)
        .bind(&columns.client_ids)
        .bind(&columns.full_names)
        .bind(&columns.emails)
        .bind(&columns.phones)
        .bind(&columns.mobiles)
        .bind(&columns.job_titles)
        .bind(&columns.email_keys)
        .execute(&self.pool)
        .await?;
        Ok(columns.contact_ids)
    }
}

/// Contact fields as parallel arrays, the shape `UNNEST` inserts take.
#[derive(Default)]
pub(crate) struct ContactColumns {
    pub contact_ids: Vec<Uuid>,
    pub client_ids: Vec<Uuid>,
    pub full_names: Vec<String>,
    pub emails: Vec<Option<String>>,
    pub phones: Vec<Option<String>>,
    pub mobiles: Vec<Option<String>>,
    pub job_titles: Vec<Option<String>>,
    /// `email_key` of each email: the stored `email_normalized`.
    pub email_keys: Vec<Option<String>>,
}

impl ContactColumns {
    pub(crate) fn push(&mut self, contact_id: Uuid, client_id: Uuid, fields: &ContactFields) {
        self.contact_ids.push(contact_id);
        self.client_ids.push(client_id);
        self.full_names.push(fields.full_name.clone());
        self.emails.push(fields.email.clone());
        self.phones.push(fields.phone.clone());
        self.mobiles.push(fields.mobile.clone());
        self.job_titles.push(fields.job_title.clone());
        self.email_keys
            .push(fields.email.as_deref().and_then(email_key));
    }
}

/// A contact's fields as the JSON text written to the contact_changes audit: each field by
/// name, `null` when empty. Serialized straight from the fields (no intermediate JSON value):
/// a first sync writes one per created contact.
pub(crate) fn fields_json(fields: &ContactFields) -> String {
    #[derive(serde::Serialize)]
    struct AuditFields<'a> {
        full_name: &'a String,
        email: &'a Option<String>,
        phone: &'a Option<String>,
        mobile: &'a Option<String>,
        job_title: &'a Option<String>,
    }
    serde_json::to_string(&AuditFields {
        full_name: &fields.full_name,
        email: &fields.email,
        phone: &fields.phone,
        mobile: &fields.mobile,
        job_title: &fields.job_title,
    })
    .expect("strings and nulls always serialize")
}
