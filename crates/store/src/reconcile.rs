//! The hot path: reconcile one page of directory users in one transaction with a fixed number
//! of statements, whatever the page size. Reads are bulk `= ANY($n)` lookups, writes are
//! `UNNEST` inserts and updates; each write that changes a contact also writes its
//! contact_changes audit rows in the same statement (a data-modifying CTE), so the audit only
//! records what was actually applied.

use std::collections::BTreeMap;

use entra_sync_domain::email::email_key;
use entra_sync_domain::model::{
    Action, DirectoryEntry, InactiveReason, Link, PageContext, Plan, ReviewState, SyncSettings,
    Tally,
};
use entra_sync_domain::plan::{page_keys, plan_page, tally};
use entra_sync_domain::validate::storable_entries;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::psa::{fields_json, ContactColumns, ContactRow};
use crate::runs::TallyCounts;
use crate::{Result, Store};

/// Where a page belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageScope {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
    pub managed_tenant_id: Uuid,
    /// The client new contacts are created under.
    pub mapped_client_id: Uuid,
    /// When set, saved as the tenant result's resume cursor in the same transaction (together
    /// with the page's counts, added to the result's counts), so a retried activity resumes
    /// after the last page that committed with counts that match it. A tenant result that is
    /// not `running` (or does not exist, as in a preflight) is left alone.
    pub next_cursor: Option<String>,
}

/// What reconciling a page did (or, for a dry run, would do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageOutcome {
    /// The page's counts. `inactivated` is always zero here: inactivations wait in the
    /// pending table until `finish_tenant_inactivations` applies or holds them, and are
    /// counted there. `updated` counts contacts actually updated (a contact edited in the PSA
    /// since it was read is left alone).
    pub tally: Tally,
    pub plan_len: usize,
    /// SQL statements executed for the page; the same for every page size.
    pub statements: u32,
    /// The plan, for preflight reports.
    pub plan: Plan,
}

#[derive(FromRow)]
struct PageContactRow {
    #[sqlx(flatten)]
    contact: ContactRow,
    link_managed_tenant_id: Option<Uuid>,
    link_object_id: Option<String>,
}

/// The key of the transaction-scoped advisory lock that serializes work on one managed tenant
/// (two workers reconciling pages of the same tenant, or a page and the end-of-tenant
/// inactivation pass).
pub(crate) async fn lock_managed_tenant(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    managed_tenant_id: Uuid,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!(
            "entra-sync:managed-tenant:{tenant_id}:{managed_tenant_id}"
        ))
        .execute(connection)
        .await?;
    Ok(())
}

/// The plan's writes as parallel arrays, one set per statement.
#[derive(Default)]
struct PageWrites {
    creates: ContactColumns,
    link_object_ids: Vec<String>,
    link_contact_ids: Vec<Uuid>,
    link_actions: Vec<&'static str>,
    link_after: Vec<String>,
    update_contact_ids: Vec<Uuid>,
    update_object_ids: Vec<String>,
    update_before: Vec<String>,
    update_after: Vec<String>,
    update_email_keys: Vec<Option<String>>,
    queue_object_ids: Vec<String>,
    queue_reasons: Vec<&'static str>,
    queue_display_names: Vec<Option<String>>,
    queue_emails: Vec<Option<String>>,
    queue_candidates: Vec<String>,
    inactivate_contact_ids: Vec<Uuid>,
    inactivate_object_ids: Vec<String>,
    inactivate_reasons: Vec<&'static str>,
    reactivate_contact_ids: Vec<Uuid>,
    reactivate_object_ids: Vec<String>,
    seen_object_ids: Vec<String>,
    /// Entries the directory returned without a usable object id: seen, but not recordable.
    seen_without_id: u64,
}

impl PageWrites {
    fn from_plan(plan: &Plan, context: &PageContext, entries: &[DirectoryEntry]) -> PageWrites {
        let mut writes = PageWrites::default();
        for action in &plan.actions {
            match action {
                Action::Create {
                    object_id,
                    client_id,
                    fields,
                } => {
                    let contact_id = Uuid::now_v7();
                    writes.creates.push(contact_id, *client_id, fields);
                    writes.push_link(object_id, contact_id, "create", fields_json(fields));
                }
                Action::Link {
                    object_id,
                    contact_id,
                } => {
                    let after = serde_json::json!({ "linked_object_id": object_id });
                    writes.push_link(object_id, *contact_id, "link", after);
                }
                Action::Update {
                    object_id,
                    contact_id,
                    before,
                    after,
                } => {
                    writes.update_contact_ids.push(*contact_id);
                    writes.update_object_ids.push(object_id.clone());
                    writes.update_before.push(fields_json(before).to_string());
                    writes.update_after.push(fields_json(after).to_string());
                    writes
                        .update_email_keys
                        .push(after.email.as_deref().and_then(email_key));
                }
                Action::Inactivate {
                    object_id,
                    contact_id,
                    reason,
                } => {
                    writes.inactivate_contact_ids.push(*contact_id);
                    writes.inactivate_object_ids.push(object_id.clone());
                    writes.inactivate_reasons.push(match reason {
                        InactiveReason::DisabledUpstream => "disabled_upstream",
                        // The sync never sets `manual`; a plan asking for it is treated as a
                        // removal, the only other reason the sync has.
                        InactiveReason::DeletedUpstream | InactiveReason::Manual => {
                            "deleted_upstream"
                        }
                    });
                }
                Action::Reactivate {
                    object_id,
                    contact_id,
                } => {
                    writes.reactivate_contact_ids.push(*contact_id);
                    writes.reactivate_object_ids.push(object_id.clone());
                }
                Action::Queue {
                    object_id,
                    reason,
                    display_name,
                    email,
                    candidates,
                } => {
                    let candidates: Vec<serde_json::Value> = candidates
                        .iter()
                        .map(|contact_id| match context.contacts.get(contact_id) {
                            Some(contact) => serde_json::json!({
                                "contact_id": contact_id,
                                "client_id": contact.client_id,
                                "full_name": contact.fields.full_name,
                                "email": contact.fields.email,
                            }),
                            None => serde_json::json!({ "contact_id": contact_id }),
                        })
                        .collect();
                    writes.queue_object_ids.push(object_id.clone());
                    writes.queue_reasons.push(reason.as_str());
                    writes.queue_display_names.push(display_name.clone());
                    writes.queue_emails.push(email.clone());
                    writes
                        .queue_candidates
                        .push(serde_json::Value::Array(candidates).to_string());
                }
                Action::Skip { .. } => {}
            }
        }
        // Every user the directory returned counts as seen, filtered, malformed or reported
        // removed alike (a removed user is inactivated by its own entry, so recording it never
        // hides an absent user): only users missing from a complete enumeration are
        // inactivated as absent.
        for entry in entries {
            match entry {
                DirectoryEntry::Present(user) => {
                    writes.seen_object_ids.push(user.object_id.clone())
                }
                DirectoryEntry::Removed { object_id, .. } => {
                    writes.seen_object_ids.push(object_id.clone())
                }
                DirectoryEntry::Invalid {
                    object_id: Some(object_id),
                    ..
                } => writes.seen_object_ids.push(object_id.clone()),
                DirectoryEntry::Invalid {
                    object_id: None, ..
                } => writes.seen_without_id += 1,
            }
        }
        writes.seen_object_ids.sort();
        writes.seen_object_ids.dedup();
        writes
    }

    fn push_link(
        &mut self,
        object_id: &str,
        contact_id: Uuid,
        action: &'static str,
        after: serde_json::Value,
    ) {
        self.link_object_ids.push(object_id.to_owned());
        self.link_contact_ids.push(contact_id);
        self.link_actions.push(action);
        self.link_after.push(after.to_string());
    }
}

impl Store {
    /// Reconciles one page (or a batch of pages): loads what the planner needs, plans with
    /// `entra_sync_domain::plan::plan_page`, applies the plan, records what the run saw and
    /// advances the tenant result, all in one transaction that holds the managed tenant's
    /// advisory lock. Replaying a page is harmless. With `dry_run` the same statements run and
    /// the transaction is rolled back: nothing is written.
    ///
    /// Entries PostgreSQL cannot store (a NUL byte, an over-long value) are turned into
    /// skipped, invalid entries first (`validate::storable_entries`), so one bad record skips
    /// its user and never fails the page.
    pub async fn reconcile_page(
        &self,
        scope: &PageScope,
        entries: &[DirectoryEntry],
        settings: &SyncSettings,
        dry_run: bool,
    ) -> Result<PageOutcome> {
        let entries = storable_entries(entries);
        let mut statements = Statements::default();
        let mut transaction = self.pool.begin().await?;

        statements.count();
        lock_managed_tenant(&mut transaction, scope.tenant_id, scope.managed_tenant_id).await?;
        let mut context =
            load_page_context(&mut transaction, scope, &entries, &mut statements).await?;
        let mut plan = plan_page(&context, &entries, settings);
        if let Some(barrier) = &self.create_barrier {
            barrier.wait().await;
        }
        if lock_new_addresses(&mut transaction, scope, &context, &plan, &mut statements).await? {
            // Another managed tenant of this PSA tenant created one of these addresses after
            // this page read its contacts: plan again on what is there now, exactly as a run
            // after that one would (link, or queue `candidate_in_other_client`).
            context = load_page_context(&mut transaction, scope, &entries, &mut statements).await?;
            plan = plan_page(&context, &entries, settings);
        }
        let writes = PageWrites::from_plan(&plan, &context, &entries);
        let mut page_tally = tally(&plan, entries.len());
        page_tally.inactivated = 0;
        apply_plan(
            &mut transaction,
            scope,
            &writes,
            &mut page_tally,
            &mut statements,
        )
        .await?;
        record_seen(
            &mut transaction,
            scope,
            &writes,
            &mut page_tally,
            &mut statements,
        )
        .await?;
        advance_tenant_result(&mut transaction, scope, &page_tally, &mut statements).await?;

        if dry_run {
            transaction.rollback().await?;
        } else {
            transaction.commit().await?;
        }
        Ok(PageOutcome {
            tally: page_tally,
            plan_len: plan.actions.len(),
            statements: statements.0,
            plan,
        })
    }
}

/// The statements a page ran, for `PageOutcome::statements` (the store's tests count what
/// Postgres executed through `pg_stat_statements` instead).
#[derive(Default)]
struct Statements(u32);

impl Statements {
    fn count(&mut self) {
        self.0 += 1;
    }
}

/// The largest page whose contact read is planned afresh (`load_page_context`).
const FRESH_PLAN_MAX_ENTRIES: usize = 100;

/// Step 1: reads what the planner needs about the page's users in three bulk statements.
async fn load_page_context(
    connection: &mut PgConnection,
    scope: &PageScope,
    entries: &[DirectoryEntry],
    statements: &mut Statements,
) -> Result<PageContext> {
    let tenant_id = scope.tenant_id;
    let managed_tenant_id = scope.managed_tenant_id;
    let keys = page_keys(entries);
    // The links are looked up by joining the page's object ids rather than by `= ANY($n)`.
    // While the statistics still describe a managed tenant with few links (its first sync,
    // until autovacuum analyzes), the cached plan for `= ANY` scans all of the tenant's links
    // and tests each against the whole array, which made a 50,000-user first sync quadratic
    // (crates/bench: 15 to 24 s instead of about 2.5 s). For the join the planner hashes the
    // tenant's links once per page instead; with fresh statistics both probe the primary key
    // once per object id.
    statements.count();
    let links: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT l.object_id, l.contact_id
         FROM UNNEST($3::text[]) AS k(object_id)
         JOIN links l ON l.tenant_id = $1 AND l.managed_tenant_id = $2
                     AND l.object_id = k.object_id",
    )
    .bind(tenant_id)
    .bind(managed_tenant_id)
    .bind(&keys.object_ids)
    .fetch_all(&mut *connection)
    .await?;
    let linked_contact_ids: Vec<Uuid> = links.iter().map(|(_, contact_id)| *contact_id).collect();

    // `keys.emails` are `email_key` forms, the same the application stores in
    // `email_normalized`, so SQL and the planner compare one normalization.
    statements.count();
    let contacts: Vec<PageContactRow> = sqlx::query_as(
        "SELECT c.contact_id, c.client_id, c.full_name, c.email, c.phone, c.mobile,
                c.job_title, c.is_active, c.inactive_reason, c.sync_locked,
                l.managed_tenant_id AS link_managed_tenant_id, l.object_id AS link_object_id
         FROM contacts c
         LEFT JOIN links l ON l.tenant_id = c.tenant_id AND l.contact_id = c.contact_id
         WHERE c.tenant_id = $1
           AND (c.email_normalized = ANY($2) OR c.contact_id = ANY($3))",
    )
    .bind(tenant_id)
    .bind(&keys.emails)
    .bind(&linked_contact_ids)
    // A small page (a delta's few changes) is planned at each execution, not with the plan
    // cached on the connection: a plan cached while the tenant's contacts were few (the first
    // pages of its first sync, before autovacuum has analyzed) reads every contact of the PSA
    // tenant once they are many; measured 4.2 ms a page in a delta right after a 40,000-user
    // initial sync, against 0.2 ms planned afresh. A large page keeps the cached plan:
    // estimating a thousand addresses at every planning costs more than it saves (the
    // store-only re-run of 50,000 users took 1.47 s planned afresh against 1.00 s).
    .persistent(entries.len() > FRESH_PLAN_MAX_ENTRIES)
    .fetch_all(&mut *connection)
    .await?;

    statements.count();
    let review_states: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (object_id) object_id, status, resolution->>'action'
         FROM review_items
         WHERE tenant_id = $1 AND managed_tenant_id = $2 AND object_id = ANY($3)
         ORDER BY object_id, (status = 'open') DESC, updated_at DESC, item_id DESC",
    )
    .bind(tenant_id)
    .bind(managed_tenant_id)
    .bind(&keys.object_ids)
    .fetch_all(&mut *connection)
    .await?;

    Ok(build_context(scope, links, contacts, review_states))
}

/// Step 1b: serializes contact creation per address across the PSA tenant's managed tenants.
/// Takes a transaction-scoped advisory lock per address the plan creates (hashed into 256
/// buckets per PSA tenant, so a page takes at most 256 locks, in sorted order so two pages
/// never deadlock), then asks whether a contact with one of those addresses appeared since the
/// page read its contacts. True means the caller must plan again. The managed-tenant lock
/// cannot do this: two managed tenants hold different ones.
async fn lock_new_addresses(
    connection: &mut PgConnection,
    scope: &PageScope,
    context: &PageContext,
    plan: &Plan,
    statements: &mut Statements,
) -> Result<bool> {
    let mut addresses: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::Create { fields, .. } => fields.email.as_deref().and_then(email_key),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        // Nothing is created, so no address can race another managed tenant's.
        return Ok(false);
    }
    let known: Vec<Uuid> = context.contacts.keys().copied().collect();
    statements.count();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(
                    'entra-sync:address:' || $1::text || ':' || bucket::text, 0))
         FROM (SELECT DISTINCT (hashtextextended(address, 0) & 255) AS bucket
               FROM UNNEST($2::text[]) AS a(address)
               ORDER BY 1) AS buckets",
    )
    .bind(scope.tenant_id)
    .bind(&addresses)
    .execute(&mut *connection)
    .await?;
    // A statement of its own: under READ COMMITTED it takes a snapshot after the locks were
    // granted, so it sees a contact the lock holder committed.
    statements.count();
    let appeared: bool = sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM contacts c
             WHERE c.tenant_id = $1 AND c.email_normalized = ANY($2)
               AND NOT (c.contact_id = ANY($3)))",
    )
    .bind(scope.tenant_id)
    .bind(&addresses)
    .bind(&known)
    .fetch_one(&mut *connection)
    .await?;
    Ok(appeared)
}

/// Step 2: applies the plan's writes, one statement per kind, each with its audit rows; a kind
/// the page has none of costs no statement (a delta page with a few changes runs few).
async fn apply_plan(
    connection: &mut PgConnection,
    scope: &PageScope,
    writes: &PageWrites,
    page_tally: &mut Tally,
    statements: &mut Statements,
) -> Result<()> {
    if !writes.creates.contact_ids.is_empty() {
        statements.count();
        sqlx::query(
            "INSERT INTO contacts (tenant_id, contact_id, client_id, full_name, email, phone, mobile,
                                       job_title, email_normalized)
                 SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                                          $7::text[], $8::text[], $9::text[])",
        )
        .bind(scope.tenant_id)
        .bind(&writes.creates.contact_ids)
        .bind(&writes.creates.client_ids)
        .bind(&writes.creates.full_names)
        .bind(&writes.creates.emails)
        .bind(&writes.creates.phones)
        .bind(&writes.creates.mobiles)
        .bind(&writes.creates.job_titles)
        .bind(&writes.creates.email_keys)
        .execute(&mut *connection)
        .await?;
    }

    // ON CONFLICT DO NOTHING: a link that exists (replay) or a contact another directory
    // user claimed first is left as it is, and gets no audit row.
    if !writes.link_object_ids.is_empty() {
        statements.count();
        sqlx::query(
            "WITH input AS (
                     SELECT * FROM UNNEST($4::text[], $5::uuid[], $6::text[], $7::text[])
                              AS i(object_id, contact_id, action, after)
                 ), inserted AS (
                     INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id,
                                        created_by_run_id)
                     SELECT $1, $2, object_id, contact_id, $3 FROM input
                     ON CONFLICT DO NOTHING
                     RETURNING object_id, contact_id
                 )
                 INSERT INTO contact_changes (tenant_id, run_id, managed_tenant_id, object_id,
                                              contact_id, action, before, after)
                 SELECT $1, $3, $2, i.object_id, i.contact_id, i.action, NULL, i.after::jsonb
                 FROM inserted JOIN input i USING (object_id, contact_id)",
        )
        .bind(scope.tenant_id)
        .bind(scope.managed_tenant_id)
        .bind(scope.run_id)
        .bind(&writes.link_object_ids)
        .bind(&writes.link_contact_ids)
        .bind(&writes.link_actions)
        .bind(&writes.link_after)
        .execute(&mut *connection)
        .await?;
    }

    // The update applies only if the contact still has the fields the plan started from
    // and is not locked: a PSA edit made meanwhile wins over the sync.
    let updated = if writes.update_contact_ids.is_empty() {
        0
    } else {
        statements.count();
        sqlx::query(
            "WITH input AS (
                     SELECT contact_id, object_id, before::jsonb AS before, after::jsonb AS after,
                            email_key
                     FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[])
                          AS i(contact_id, object_id, before, after, email_key)
                 ), updated AS (
                     UPDATE contacts c SET
                         full_name = i.after->>'full_name',
                         email = i.after->>'email',
                         email_normalized = i.email_key,
                         phone = i.after->>'phone',
                         mobile = i.after->>'mobile',
                         job_title = i.after->>'job_title',
                         updated_at = now()
                     FROM input i
                     WHERE c.tenant_id = $1 AND c.contact_id = i.contact_id AND NOT c.sync_locked
                       AND c.full_name IS NOT DISTINCT FROM i.before->>'full_name'
                       AND c.email IS NOT DISTINCT FROM i.before->>'email'
                       AND c.phone IS NOT DISTINCT FROM i.before->>'phone'
                       AND c.mobile IS NOT DISTINCT FROM i.before->>'mobile'
                       AND c.job_title IS NOT DISTINCT FROM i.before->>'job_title'
                     RETURNING c.contact_id, i.object_id, i.before, i.after
                 )
                 INSERT INTO contact_changes (tenant_id, run_id, managed_tenant_id, object_id,
                                              contact_id, action, before, after)
                 SELECT $1, $3, $2, object_id, contact_id, 'update', before, after FROM updated",
        )
        .bind(scope.tenant_id)
        .bind(scope.managed_tenant_id)
        .bind(scope.run_id)
        .bind(&writes.update_contact_ids)
        .bind(&writes.update_object_ids)
        .bind(&writes.update_before)
        .bind(&writes.update_after)
        .bind(&writes.update_email_keys)
        .execute(&mut *connection)
        .await?
        .rows_affected()
    };
    page_tally.updated = updated;

    // At most one open item per directory user: an existing open item stays as it is.
    if !writes.queue_object_ids.is_empty() {
        statements.count();
        sqlx::query(
            "INSERT INTO review_items (tenant_id, item_id, reason, managed_tenant_id, client_id,
                                           object_id, display_name, email, candidates,
                                           created_by_run_id)
                 SELECT $1, gen_random_uuid(), reason, $2, $3, object_id, display_name, email,
                        candidates::jsonb, $4
                 FROM UNNEST($5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
                      AS i(object_id, reason, display_name, email, candidates)
                 ON CONFLICT (tenant_id, managed_tenant_id, object_id) WHERE status = 'open'
                 DO NOTHING",
        )
        .bind(scope.tenant_id)
        .bind(scope.managed_tenant_id)
        .bind(scope.mapped_client_id)
        .bind(scope.run_id)
        .bind(&writes.queue_object_ids)
        .bind(&writes.queue_reasons)
        .bind(&writes.queue_display_names)
        .bind(&writes.queue_emails)
        .bind(&writes.queue_candidates)
        .execute(&mut *connection)
        .await?;
    }

    if !writes.inactivate_contact_ids.is_empty() {
        statements.count();
        sqlx::query(
            "INSERT INTO pending_inactivations (tenant_id, run_id, managed_tenant_id, contact_id,
                                                    object_id, reason)
                 SELECT $1, $2, $3, contact_id, object_id, reason
                 FROM UNNEST($4::uuid[], $5::text[], $6::text[]) AS i(contact_id, object_id, reason)
                 ON CONFLICT DO NOTHING",
        )
        .bind(scope.tenant_id)
        .bind(scope.run_id)
        .bind(scope.managed_tenant_id)
        .bind(&writes.inactivate_contact_ids)
        .bind(&writes.inactivate_object_ids)
        .bind(&writes.inactivate_reasons)
        .execute(&mut *connection)
        .await?;
    }

    // Only contacts the sync itself made inactive come back; a manual inactivation or a
    // lock is respected whatever the plan says.
    let reactivated = if writes.reactivate_contact_ids.is_empty() {
        0
    } else {
        statements.count();
        sqlx::query(
            "WITH input AS (
                     SELECT i.contact_id, i.object_id, c.inactive_reason AS old_reason
                     FROM UNNEST($4::uuid[], $5::text[]) AS i(contact_id, object_id)
                     JOIN contacts c ON c.tenant_id = $1 AND c.contact_id = i.contact_id
                 ), updated AS (
                     UPDATE contacts c SET is_active = true, inactive_reason = NULL, updated_at = now()
                     FROM input i
                     WHERE c.tenant_id = $1 AND c.contact_id = i.contact_id AND NOT c.is_active
                       AND NOT c.sync_locked
                       AND c.inactive_reason IN ('disabled_upstream', 'deleted_upstream')
                     RETURNING c.contact_id, i.object_id, i.old_reason
                 )
                 INSERT INTO contact_changes (tenant_id, run_id, managed_tenant_id, object_id,
                                              contact_id, action, before, after)
                 SELECT $1, $3, $2, object_id, contact_id, 'reactivate',
                        jsonb_build_object('is_active', false, 'inactive_reason', old_reason),
                        jsonb_build_object('is_active', true)
                 FROM updated",
        )
        .bind(scope.tenant_id)
        .bind(scope.managed_tenant_id)
        .bind(scope.run_id)
        .bind(&writes.reactivate_contact_ids)
        .bind(&writes.reactivate_object_ids)
        .execute(&mut *connection)
        .await?
        .rows_affected()
    };
    page_tally.reactivated = reactivated;

    Ok(())
}

/// Step 3: appends what the run saw. An object id the run already recorded (a delta entry
/// sent twice, a page replayed) inserts nothing, so `seen` counts each user once per run; an
/// unchanged user costs this one narrow insert and no rewrite of its link.
async fn record_seen(
    connection: &mut PgConnection,
    scope: &PageScope,
    writes: &PageWrites,
    page_tally: &mut Tally,
    statements: &mut Statements,
) -> Result<()> {
    let newly_seen = if writes.seen_object_ids.is_empty() {
        0
    } else {
        statements.count();
        sqlx::query(
            "INSERT INTO run_seen (tenant_id, run_id, managed_tenant_id, object_id)
             SELECT $1, $2, $3, object_id FROM UNNEST($4::text[]) AS k(object_id)
             ON CONFLICT DO NOTHING",
        )
        .bind(scope.tenant_id)
        .bind(scope.run_id)
        .bind(scope.managed_tenant_id)
        .bind(&writes.seen_object_ids)
        .execute(&mut *connection)
        .await?
        .rows_affected()
    };
    let ineligible = page_tally.seen.saturating_sub(page_tally.eligible);
    page_tally.seen = newly_seen + writes.seen_without_id;
    page_tally.eligible = page_tally.seen.saturating_sub(ineligible);
    Ok(())
}

/// Step 4: the tenant result's counts and resume cursor advance in the same transaction as
/// the page's writes, so after a crash the stored counts and cursor match exactly the pages
/// that committed. This and the inactivation step are the only writers of the counts.
async fn advance_tenant_result(
    connection: &mut PgConnection,
    scope: &PageScope,
    page_tally: &Tally,
    statements: &mut Statements,
) -> Result<()> {
    statements.count();
    sqlx::query(
        "UPDATE run_tenant_results SET cursor = coalesce($4, cursor),
                counts = add_counts(counts, $5::jsonb)
         WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND status = 'running'",
    )
    .bind(scope.tenant_id)
    .bind(scope.run_id)
    .bind(scope.managed_tenant_id)
    .bind(scope.next_cursor.as_deref())
    .bind(TallyCounts::from(page_tally).to_json())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

fn build_context(
    scope: &PageScope,
    links: Vec<(String, Uuid)>,
    contacts: Vec<PageContactRow>,
    review_states: Vec<(String, String, Option<String>)>,
) -> PageContext {
    let links_by_object_id: BTreeMap<String, Uuid> = links.into_iter().collect();
    let mut context_contacts = BTreeMap::new();
    let mut link_by_contact_id = BTreeMap::new();
    for row in contacts {
        let contact = row.contact.into_contact();
        if let (Some(managed_tenant_id), Some(object_id)) =
            (row.link_managed_tenant_id, row.link_object_id)
        {
            link_by_contact_id.insert(
                contact.contact_id,
                Link {
                    managed_tenant_id,
                    object_id,
                    contact_id: contact.contact_id,
                },
            );
        }
        context_contacts.insert(contact.contact_id, contact);
    }
    let review_state_by_object_id = review_states
        .into_iter()
        .filter_map(|(object_id, status, action)| {
            let state = match (status.as_str(), action.as_deref()) {
                ("open", _) => ReviewState::Open,
                ("dismissed", _) => ReviewState::Dismissed,
                ("resolved", Some("create_new")) => ReviewState::CreateNew,
                _ => return None,
            };
            Some((object_id, state))
        })
        .collect();
    PageContext {
        managed_tenant_id: scope.managed_tenant_id,
        mapped_client_id: scope.mapped_client_id,
        links_by_object_id,
        contacts: context_contacts,
        link_by_contact_id,
        review_state_by_object_id,
    }
}
