//! Read models only the HTTP API needs: the integration status page's connection summary
//! (without decrypting credentials) and its counts, and the statements of the keyset-paged
//! lists (contacts, runs, review items, API audit).
//!
//! The list statements are built per request shape rather than written once with
//! `($n IS NULL OR …)` for every optional filter: sqlx prepares each statement once per
//! connection and Postgres switches a prepared statement to a generic plan after a few
//! executions, and a generic plan can neither drop an `IS NULL OR` branch nor use a keyset
//! row comparison inside one as an index condition — a later page then walks the index from
//! the start of the tenant. Each shape here has only the conditions it needs, the row
//! comparison `(key, id) > ($n, $m)` in the order of an index that leads with `tenant_id`
//! (`migrations/20261204600000_list_indexes.sql`), and the limit as a literal, so that even
//! the generic plan reads one page from the index (tested with `EXPLAIN` in
//! `crates/store/tests/list_plans.rs`).

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

/// The listed tenant, `$1`, as the lists compare it: through a sub-select, which the planner
/// plans without its value, as it plans a generic plan (the crate docs say why).
const TENANT: &str = "(SELECT $1::uuid)";

/// A parameter of a list statement, bound in order as `$1`, `$2`, ….
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListParam {
    Uuid(Uuid),
    Text(String),
    Time(DateTime<Utc>),
}

/// One list statement: its text, parameters, and the planner settings it runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSql {
    pub sql: String,
    pub params: Vec<ListParam>,
    /// Applied with `SET LOCAL` around the statement (`Store::fetch_list`).
    pub settings: Vec<&'static str>,
}

/// Keeps the planner from sorting a list's rows: with no sort allowed, the only cheap plan
/// for a keyset page is the index scan in the list's order that stops at `LIMIT`. Right after
/// a large write the statistics may say a tenant has a handful of contacts, and the planner
/// would otherwise pick a bitmap scan of every row of the tenant and a top-N sort, a cost that
/// grows with the tenant (54 ms instead of 5 ms at 200,000 contacts, measured).
pub const NO_SORT: &str = "enable_sort = off";

impl ListSql {
    /// A list of `tenant_id`'s rows, read in the list's order from an index (`NO_SORT`) unless
    /// its shape says otherwise.
    fn new(tenant_id: Uuid) -> ListSql {
        ListSql {
            sql: String::new(),
            params: vec![ListParam::Uuid(tenant_id)],
            settings: vec![NO_SORT],
        }
    }

    /// Adds a parameter and returns its placeholder.
    fn param(&mut self, value: ListParam) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// Fetches the list's rows of `O`, under its planner settings if it has any (`SET LOCAL`
    /// in a transaction of its own).
    pub(crate) async fn fetch_all<O>(&self, pool: &sqlx::PgPool) -> Result<Vec<O>>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        if self.settings.is_empty() {
            return Ok(self.query_as().fetch_all(pool).await?);
        }
        let mut transaction = pool.begin().await?;
        for setting in &self.settings {
            sqlx::query(&format!("SET LOCAL {setting}"))
                .execute(&mut *transaction)
                .await?;
        }
        let rows = self.query_as().fetch_all(&mut *transaction).await?;
        transaction.commit().await?;
        Ok(rows)
    }

    /// A query with the parameters bound, ready to fetch rows of `O`.
    pub(crate) fn query_as<'q, O>(
        &'q self,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let mut query = sqlx::query_as::<_, O>(&self.sql);
        for param in &self.params {
            query = match param {
                ListParam::Uuid(value) => query.bind(*value),
                ListParam::Text(value) => query.bind(value.as_str()),
                ListParam::Time(value) => query.bind(*value),
            };
        }
        query
    }
}

/// Contacts by (full_name, contact_id), ascending; `after` is the last row of the previous
/// page. `fetch` rows at most (the page plus one to see whether another follows).
pub fn contacts_list_sql(
    tenant_id: Uuid,
    filter: &crate::psa::ContactFilter,
    after: Option<(String, Uuid)>,
    fetch: i64,
) -> ListSql {
    let mut list = ListSql::new(tenant_id);
    let mut conditions = vec![format!("c.tenant_id = {TENANT}")];
    if let Some(client_id) = filter.client_id {
        let placeholder = list.param(ListParam::Uuid(client_id));
        conditions.push(format!("c.client_id = {placeholder}::uuid"));
    }
    if let Some(email) = &filter.email {
        // The one normalization the planner uses too; an email filter that normalizes to
        // nothing matches no contact.
        let key = entra_sync_domain::email::email_key(email).unwrap_or_default();
        let placeholder = list.param(ListParam::Text(key));
        conditions.push(format!("c.email_normalized = {placeholder}::text"));
    }
    if let Some(search) = &filter.search {
        // The console's contact picker: a case-insensitive substring of the name or address.
        let placeholder = list.param(ListParam::Text(search.to_lowercase()));
        conditions.push(format!(
            "(strpos(lower(c.full_name), {placeholder}::text) > 0 \
              OR strpos(coalesce(c.email_normalized, ''), {placeholder}::text) > 0)"
        ));
    }
    if !filter.include_inactive {
        conditions.push("c.is_active".to_owned());
    }
    if let Some((name, id)) = after {
        let name = list.param(ListParam::Text(name));
        let id = list.param(ListParam::Uuid(id));
        conditions.push(format!(
            "(c.full_name, c.contact_id) > ({name}::text, {id}::uuid)"
        ));
    }
    // An e-mail lookup finds a handful of rows through its own index and sorts those; every
    // other shape is read in name order from `contacts_by_name` or `contacts_by_client_name`.
    if filter.email.is_some() {
        list.settings.retain(|setting| *setting != NO_SORT);
    }
    // The page of contacts is chosen first and only its rows are joined to their links, one
    // index lookup each (LATERAL): right after a large sync the links' statistics may still be
    // missing, and a plain join then hashes every link of the tenant for each page.
    list.sql = format!(
        "SELECT c.contact_id, c.client_id, c.full_name, c.email, c.phone, c.mobile, \
                c.job_title, c.is_active, c.inactive_reason, c.sync_locked, c.created_at, \
                c.updated_at, l.managed_tenant_id AS link_managed_tenant_id, \
                l.entra_tenant_id AS link_entra_tenant_id, l.object_id AS link_object_id \
         FROM (SELECT * FROM contacts c WHERE {} \
               ORDER BY c.full_name, c.contact_id LIMIT {fetch}) c \
         LEFT JOIN LATERAL ( \
             SELECT l.managed_tenant_id, l.object_id, mt.entra_tenant_id \
             FROM links l JOIN managed_tenants mt \
               ON mt.tenant_id = l.tenant_id AND mt.managed_tenant_id = l.managed_tenant_id \
             WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.contact_id) l ON true \
         ORDER BY c.full_name, c.contact_id",
        conditions.join(" AND ")
    );
    list
}

/// Runs newest first by (started_at, run_id).
pub fn runs_list_sql(
    tenant_id: Uuid,
    kind: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    fetch: i64,
) -> ListSql {
    let mut list = ListSql::new(tenant_id);
    let mut conditions = vec![format!("tenant_id = {TENANT}")];
    if let Some(kind) = kind {
        let placeholder = list.param(ListParam::Text(kind.to_owned()));
        conditions.push(format!("kind = {placeholder}::text"));
    }
    push_time_keyset(&mut list, &mut conditions, "started_at", "run_id", after);
    list.sql = format!(
        "SELECT {} FROM runs WHERE {} ORDER BY started_at DESC, run_id DESC LIMIT {fetch}",
        crate::runs::RUN_COLUMNS,
        conditions.join(" AND ")
    );
    list
}

/// Review items newest first by (created_at, item_id).
pub fn review_items_list_sql(
    tenant_id: Uuid,
    filter: &crate::review::ReviewFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    fetch: i64,
) -> ListSql {
    let mut list = ListSql::new(tenant_id);
    let mut conditions = vec![format!("tenant_id = {TENANT}")];
    if let Some(status) = filter.status {
        let placeholder = list.param(ListParam::Text(status.as_str().to_owned()));
        conditions.push(format!("status = {placeholder}::text"));
    }
    if let Some(client_id) = filter.client_id {
        let placeholder = list.param(ListParam::Uuid(client_id));
        conditions.push(format!("client_id = {placeholder}::uuid"));
    }
    if let Some(managed_tenant_id) = filter.managed_tenant_id {
        let placeholder = list.param(ListParam::Uuid(managed_tenant_id));
        conditions.push(format!("managed_tenant_id = {placeholder}::uuid"));
    }
    if let Some(reason) = &filter.reason {
        let placeholder = list.param(ListParam::Text(reason.clone()));
        conditions.push(format!("reason = {placeholder}::text"));
    }
    push_time_keyset(&mut list, &mut conditions, "created_at", "item_id", after);
    list.sql = format!(
        "SELECT {} FROM review_items WHERE {} \
         ORDER BY created_at DESC, item_id DESC LIMIT {fetch}",
        crate::review::REVIEW_COLUMNS,
        conditions.join(" AND ")
    );
    list
}

/// API audit entries newest first by (at, audit_id).
pub fn api_audit_list_sql(
    tenant_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    fetch: i64,
) -> ListSql {
    let mut list = ListSql::new(tenant_id);
    let mut conditions = vec![format!("tenant_id = {TENANT}")];
    push_time_keyset(&mut list, &mut conditions, "at", "audit_id", after);
    list.sql = format!(
        "SELECT audit_id, actor, action, target, detail, at FROM api_audit WHERE {} \
         ORDER BY at DESC, audit_id DESC LIMIT {fetch}",
        conditions.join(" AND ")
    );
    list
}

/// The newest-first keyset condition `(time, id) < (…, …)`.
fn push_time_keyset(
    list: &mut ListSql,
    conditions: &mut Vec<String>,
    time_column: &str,
    id_column: &str,
    after: Option<(DateTime<Utc>, Uuid)>,
) {
    if let Some((at, id)) = after {
        let at = list.param(ListParam::Time(at));
        let id = list.param(ListParam::Uuid(id));
        conditions.push(format!(
            "({time_column}, {id_column}) < ({at}::timestamptz, {id}::uuid)"
        ));
    }
}
