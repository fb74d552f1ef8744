//! The hot path: reconcile one page of directory users in one transaction with a fixed number
//! of statements, whatever the page size. Reads are bulk `= ANY($n)` lookups, writes are
//! `UNNEST` inserts and updates; each write that changes a contact also writes its
//! contact_changes audit rows in the same statement (a data-modifying CTE), so the audit only
//! records what was actually applied.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use entra_sync_domain::email::email_key;
use entra_sync_domain::model::{
    Action, DirectoryEntry, InactiveReason, Link, PageContext, Plan, ReviewState, SyncSettings,
    Tally,
};
use entra_sync_domain::plan::{plan_prepared, tally, PreparedPage};
use sqlx::{Executor, FromRow, PgConnection};
use uuid::Uuid;

use crate::inactivation::{end_quietly, TenantFinish};
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
    /// Time spent planning (`plan_page`, pure computation) inside the page's transaction;
    /// the rest of the call is database time.
    pub plan_time: std::time::Duration,
}

#[derive(FromRow)]
pub(crate) struct PageContactRow {
    #[sqlx(flatten)]
    pub(crate) contact: ContactRow,
    pub(crate) link_managed_tenant_id: Option<Uuid>,
    pub(crate) link_object_id: Option<String>,
}

/// The key of the transaction-scoped advisory lock that serializes work on one managed tenant
/// (two workers reconciling pages of the same tenant, or a page and the end-of-tenant
/// inactivation pass).
fn managed_tenant_lock_key(tenant_id: Uuid, managed_tenant_id: Uuid) -> String {
    format!("entra-sync:managed-tenant:{tenant_id}:{managed_tenant_id}")
}

/// Takes the managed tenant's lock inside a transaction that is already open.
pub(crate) async fn lock_managed_tenant(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    managed_tenant_id: Uuid,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(managed_tenant_lock_key(tenant_id, managed_tenant_id))
        .execute(connection)
        .await?;
    Ok(())
}

/// Opens a transaction that holds the locks of the managed tenants (one for a page or a
/// tenant's end, several for a delta group, `crate::group`): `BEGIN` and the locks go to the
/// server as one simple query, one round trip instead of one more per lock. The locks are
/// taken in the order of their keys, so two transactions holding several never deadlock.
/// The keys are made of UUIDs, so they are safe to write into the statement; a failure to
/// lock (a deadlock, a cancel) is returned as the error and the transaction rolled back.
pub(crate) async fn begin_locked(
    pool: &sqlx::PgPool,
    tenant_id: Uuid,
    managed_tenant_ids: &[Uuid],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut keys: Vec<String> = managed_tenant_ids
        .iter()
        .map(|managed_tenant_id| managed_tenant_lock_key(tenant_id, *managed_tenant_id))
        .collect();
    keys.sort();
    let mut begin = String::from("BEGIN;");
    for key in &keys {
        begin.push_str(&format!(
            " SELECT pg_advisory_xact_lock(hashtextextended('{key}', 0));"
        ));
    }
    Ok(pool.begin_with(begin).await?)
}

/// The plan's writes as parallel arrays, one set per statement.
#[derive(Default)]
pub(crate) struct PageWrites {
    pub(crate) creates: ContactColumns,
    pub(crate) link_object_ids: Vec<String>,
    pub(crate) link_contact_ids: Vec<Uuid>,
    pub(crate) link_actions: Vec<&'static str>,
    pub(crate) link_after: Vec<String>,
    pub(crate) update_contact_ids: Vec<Uuid>,
    pub(crate) update_object_ids: Vec<String>,
    pub(crate) update_before: Vec<String>,
    pub(crate) update_after: Vec<String>,
    pub(crate) update_email_keys: Vec<Option<String>>,
    pub(crate) queue_object_ids: Vec<String>,
    pub(crate) queue_reasons: Vec<&'static str>,
    pub(crate) queue_display_names: Vec<Option<String>>,
    pub(crate) queue_emails: Vec<Option<String>>,
    pub(crate) queue_candidates: Vec<String>,
    pub(crate) inactivate_contact_ids: Vec<Uuid>,
    pub(crate) inactivate_object_ids: Vec<String>,
    pub(crate) inactivate_reasons: Vec<&'static str>,
    pub(crate) reactivate_contact_ids: Vec<Uuid>,
    pub(crate) reactivate_object_ids: Vec<String>,
    pub(crate) seen_object_ids: Vec<String>,
    /// Entries the directory returned without a usable object id: seen, but not recordable.
    pub(crate) seen_without_id: u64,
}

impl PageWrites {
    pub(crate) fn from_plan(
        plan: &Plan,
        context: &PageContext,
        entries: &[DirectoryEntry],
    ) -> PageWrites {
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
                    let after = serde_json::json!({ "linked_object_id": object_id }).to_string();
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
                    writes.update_before.push(fields_json(before));
                    writes.update_after.push(fields_json(after));
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
        after: String,
    ) {
        self.link_object_ids.push(object_id.to_owned());
        self.link_contact_ids.push(contact_id);
        self.link_actions.push(action);
        self.link_after.push(after);
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
        let (outcome, _) = self
            .reconcile(scope, entries, settings, dry_run, None)
            .await?;
        Ok(outcome)
    }

    /// The last page (or batch) of a delta round, and the managed tenant's end with it:
    /// reconciles it as [`Store::reconcile_page`] does and, in the same transaction, ends the
    /// tenant as [`Store::finish_tenant_sync`] does when nothing is pending, saving the new
    /// delta link. A delta round is no complete enumeration, so nothing else is left to do
    /// then, and the tenant pays one transaction instead of two. The finish is None when
    /// something is pending (a removal the page queued): the page is committed, and the
    /// caller ends the tenant with `finish_tenant_sync`.
    pub async fn reconcile_last_delta_page(
        &self,
        scope: &PageScope,
        entries: &[DirectoryEntry],
        settings: &SyncSettings,
        delta_link: Option<(&str, DateTime<Utc>)>,
    ) -> Result<(PageOutcome, Option<TenantFinish>)> {
        self.reconcile(scope, entries, settings, false, Some(delta_link))
            .await
    }

    /// [`Store::reconcile_page`], ending the tenant quietly before the commit when `end`
    /// gives the round's delta link (`Some(None)`: the round gave none).
    async fn reconcile(
        &self,
        scope: &PageScope,
        entries: &[DirectoryEntry],
        settings: &SyncSettings,
        dry_run: bool,
        end: Option<Option<(&str, DateTime<Utc>)>>,
    ) -> Result<(PageOutcome, Option<TenantFinish>)> {
        let page = PreparedPage::new(entries);
        let entries = page.entries();
        let mut statements = Statements::default();
        statements.count();
        let mut transaction =
            begin_locked(&self.pool, scope.tenant_id, &[scope.managed_tenant_id]).await?;
        let mut context =
            load_page_context(&mut transaction, scope, &page, &mut statements).await?;
        let planning = std::time::Instant::now();
        let mut plan = plan_prepared(&context, &page, settings);
        let mut plan_time = planning.elapsed();
        if let Some(barrier) = &self.create_barrier {
            barrier.wait().await;
        }
        // The plan's writes are built while Postgres takes the claims: the claim statement
        // (a prepared one, sent in one message) goes out before the building starts, so the
        // two overlap.
        let (claims, mut writes) = tokio::join!(
            biased;
            claim_new_addresses(&mut transaction, scope, &context, &plan, &mut statements),
            async { PageWrites::from_plan(&plan, &context, entries) },
        );
        let (appeared, claimed) = claims?;
        if appeared {
            // Another managed tenant of this PSA tenant created one of these addresses after
            // this page read its contacts: plan again on what is there now, exactly as a run
            // after that one would (link, or queue `candidate_in_other_client`).
            context = load_page_context(&mut transaction, scope, &page, &mut statements).await?;
            let planning = std::time::Instant::now();
            plan = plan_prepared(&context, &page, settings);
            plan_time += planning.elapsed();
            writes = PageWrites::from_plan(&plan, &context, entries);
        }
        let mut page_tally = tally(&plan, entries.len());
        page_tally.inactivated = 0;
        // The context is not needed any more: it is freed while Postgres writes.
        let (applied, ()) = tokio::join!(
            biased;
            apply_plan(
                &mut transaction,
                scope,
                &writes,
                &mut page_tally,
                &mut statements,
            ),
            async { drop(context) },
        );
        applied?;
        record_seen_and_advance(
            &mut transaction,
            scope,
            &writes,
            &claimed,
            &mut page_tally,
            &mut statements,
        )
        .await?;
        let finish = match end {
            Some(delta_link) if !dry_run => {
                statements.count();
                end_quietly(
                    &mut transaction,
                    scope.tenant_id,
                    scope.run_id,
                    scope.managed_tenant_id,
                    delta_link,
                )
                .await?
            }
            _ => None,
        };

        if dry_run {
            transaction.rollback().await?;
        } else {
            transaction.commit().await?;
        }
        let outcome = PageOutcome {
            tally: page_tally,
            plan_len: plan.actions.len(),
            statements: statements.0,
            plan,
            plan_time,
        };
        Ok((outcome, finish))
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

/// The page's links by object id, each with its contact (`load_page_context`; why LATERAL,
/// see there): a re-run, whose users are nearly all linked, reads everything the planner
/// needs in this one statement.
const PAGE_LINKS: &str = "SELECT k.object_id, l.contact_id AS link_contact_id,
            c.contact_id, c.client_id, c.full_name, c.email, c.phone, c.mobile,
            c.job_title, c.is_active, c.inactive_reason, c.sync_locked
     FROM UNNEST($3::text[]) AS k(object_id)
     CROSS JOIN LATERAL (SELECT contact_id FROM links
                         WHERE tenant_id = (SELECT $1::uuid)
                           AND managed_tenant_id = (SELECT $2::uuid)
                           AND object_id = k.object_id
                         OFFSET 0) AS l
     LEFT JOIN LATERAL (SELECT * FROM contacts
                        WHERE tenant_id = (SELECT $1::uuid) AND contact_id = l.contact_id
                        OFFSET 0) AS c ON true";

/// A link a page (or a group, `crate::group`) read, with its contact's columns: all None
/// when the contact is not there (a link's contact cannot be deleted, but the planner leaves
/// such a link for a person rather than match its user again).
#[derive(FromRow)]
pub(crate) struct LinkRow {
    object_id: String,
    link_contact_id: Uuid,
    contact_id: Option<Uuid>,
    client_id: Option<Uuid>,
    full_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
    job_title: Option<String>,
    is_active: Option<bool>,
    inactive_reason: Option<String>,
    sync_locked: Option<bool>,
}

impl LinkRow {
    /// The link (object id, contact id), and its contact as the page's contacts hold it
    /// (without a link of its own: the link is this one).
    pub(crate) fn split(self) -> ((String, Uuid), Option<PageContactRow>) {
        let contact = match (
            self.contact_id,
            self.client_id,
            self.full_name,
            self.is_active,
            self.sync_locked,
        ) {
            (Some(contact_id), Some(client_id), Some(full_name), Some(is_active), Some(locked)) => {
                Some(PageContactRow {
                    contact: ContactRow {
                        contact_id,
                        client_id,
                        full_name,
                        email: self.email,
                        phone: self.phone,
                        mobile: self.mobile,
                        job_title: self.job_title,
                        is_active,
                        inactive_reason: self.inactive_reason,
                        sync_locked: locked,
                    },
                    link_managed_tenant_id: None,
                    link_object_id: None,
                })
            }
            _ => None,
        };
        ((self.object_id, self.link_contact_id), contact)
    }
}

/// The contacts found by the addresses of the page's users without a link, each with its link
/// if it has one (the linked users' contacts come with their links, `PAGE_LINKS`).
const PAGE_CONTACTS: &str =
    "SELECT c.contact_id, c.client_id, c.full_name, c.email, c.phone, c.mobile,
            c.job_title, c.is_active, c.inactive_reason, c.sync_locked,
            l.managed_tenant_id AS link_managed_tenant_id, l.object_id AS link_object_id
     FROM UNNEST($2::text[]) AS k(email)
     CROSS JOIN LATERAL (SELECT * FROM contacts
                         WHERE tenant_id = (SELECT $1::uuid) AND email_normalized = k.email
                         OFFSET 0) AS c
     LEFT JOIN LATERAL (SELECT managed_tenant_id, object_id FROM links
                        WHERE tenant_id = (SELECT $1::uuid) AND contact_id = c.contact_id
                        OFFSET 0) AS l ON true";

/// Whether a contact with one of the claimed addresses exists that the page did not read.
const NEW_ADDRESS_APPEARED: &str = "SELECT EXISTS (
         SELECT 1 FROM UNNEST($2::text[]) AS a(address)
         CROSS JOIN LATERAL (SELECT contact_id FROM contacts
                             WHERE tenant_id = (SELECT $1::uuid) AND email_normalized = a.address
                             OFFSET 0) AS c
         WHERE NOT (c.contact_id = ANY($3)))";

/// Step 1: reads what the planner needs about the page's users in at most three bulk
/// statements: one when every user is linked.
async fn load_page_context(
    connection: &mut PgConnection,
    scope: &PageScope,
    page: &PreparedPage<'_>,
    statements: &mut Statements,
) -> Result<PageContext> {
    let tenant_id = scope.tenant_id;
    let managed_tenant_id = scope.managed_tenant_id;
    let object_ids = page.object_ids();
    // Every read of the page probes an index once per key, whatever the statistics say: the
    // keys are rows (`UNNEST`) and each lookup is a LATERAL subquery with `OFFSET 0`, which the
    // planner cannot flatten into a join, so it cannot choose to hash every link or contact of
    // the tenant instead. While the statistics still describe a tenant with few rows (its
    // first sync, until autovacuum analyzes) it did choose that: `= ANY` over a cached plan
    // made a 50,000-user first sync quadratic (15 to 24 s instead of about 2.5 s), and a hash
    // join of the page's keys with all of the PSA tenant's contacts cost 27 ms a page of a
    // thousand users against 3 ms probing. Planned at each execution (not cached on the
    // connection), so the planner sees the tables' current sizes; in this form planning does
    // not grow with the number of keys (0.5 ms). The tenant (and managed tenant) is compared
    // through a sub-select, so that a tenant the statistics do not know yet is not taken for
    // a single row and the probe keeps the index with the key (the crate docs say why).
    statements.count();
    let rows: Vec<LinkRow> = sqlx::query_as(PAGE_LINKS)
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .bind(&object_ids)
        .persistent(false)
        .fetch_all(&mut *connection)
        .await?;
    let mut links = Vec::with_capacity(rows.len());
    let mut contacts = Vec::with_capacity(rows.len());
    for row in rows {
        let (link, contact) = row.split();
        links.push(link);
        contacts.extend(contact);
    }
    let linked_object_ids: HashSet<&str> = links
        .iter()
        .map(|(object_id, _)| object_id.as_str())
        .collect();
    let unlinked = |entry: &DirectoryEntry| match entry {
        DirectoryEntry::Present(user) => !linked_object_ids.contains(user.object_id.as_str()),
        DirectoryEntry::Removed { .. } | DirectoryEntry::Invalid { .. } => false,
    };
    if !page.entries().iter().any(unlinked) {
        // Every user is linked (a re-run, most delta pages): the planner needs neither
        // contacts found by address nor review items, which only a user without a link
        // consults.
        return Ok(build_context(scope, links, contacts, Vec::new()));
    }

    // By address only for the users without a link (why that is enough:
    // `PreparedPage::unlinked_emails`).
    // The addresses are `email_key` forms, the same the application stores in
    // `email_normalized`, so SQL and the planner compare one normalization.
    let emails = page.unlinked_emails(|object_id| linked_object_ids.contains(object_id));
    if !emails.is_empty() {
        statements.count();
        let found: Vec<PageContactRow> = sqlx::query_as(PAGE_CONTACTS)
            .bind(tenant_id)
            .bind(&emails)
            .persistent(false)
            .fetch_all(&mut *connection)
            .await?;
        contacts.extend(found);
    }

    statements.count();
    let review_states: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (object_id) object_id, status, resolution->>'action'
         FROM review_items
         WHERE tenant_id = $1 AND managed_tenant_id = $2 AND object_id = ANY($3)
         ORDER BY object_id, (status = 'open') DESC, updated_at DESC, item_id DESC",
    )
    .bind(tenant_id)
    .bind(managed_tenant_id)
    .bind(&object_ids)
    .fetch_all(&mut *connection)
    .await?;

    Ok(build_context(scope, links, contacts, review_states))
}

/// Step 1b: serializes contact creation per address across the PSA tenant's managed tenants.
/// Claims each address the plan creates with a row in `address_claims` (unique per PSA tenant
/// and address, inserted in sorted order so two pages never deadlock): a page claiming an
/// address another page's open transaction claimed waits for that transaction to end. Then
/// asks whether a contact with one of those addresses appeared since the page read its
/// contacts; true means the caller must plan again. Returns the claimed addresses, which
/// the page's record of what it saw (`record_seen_and_advance`) removes before the commit (they
/// exist only to make concurrent creators wait; a claimant waiting on one finds it gone when
/// this transaction ends). The managed-tenant lock cannot do this:
/// two managed tenants hold different ones. A claim locks its one address and takes no slot
/// in Postgres' shared lock table, so pages creating different addresses never wait for each
/// other (advisory locks hashed into 256 buckets per PSA tenant made a page of a thousand new
/// addresses take nearly all of them: creating pages of different managed tenants ran one
/// at a time, 205 s of lock waits in a 36 s sync of 1,000 tenants).
async fn claim_new_addresses(
    connection: &mut PgConnection,
    scope: &PageScope,
    context: &PageContext,
    plan: &Plan,
    statements: &mut Statements,
) -> Result<(bool, Vec<String>)> {
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
        return Ok((false, addresses));
    }
    let known: Vec<Uuid> = context.contacts.keys().copied().collect();
    statements.count();
    sqlx::query(
        "INSERT INTO address_claims (tenant_id, address)
         SELECT $1, address FROM UNNEST($2::text[]) AS a(address) ORDER BY address
         ON CONFLICT DO NOTHING",
    )
    .bind(scope.tenant_id)
    .bind(&addresses)
    .execute(&mut *connection)
    .await?;
    // A statement of its own: under READ COMMITTED it takes a snapshot after the claims were
    // granted, so it sees a contact the previous claimant committed.
    statements.count();
    let appeared: bool = sqlx::query_scalar(NEW_ADDRESS_APPEARED)
        .bind(scope.tenant_id)
        .bind(&addresses)
        .bind(&known)
        .persistent(false)
        .fetch_one(&mut *connection)
        .await?;
    Ok((appeared, addresses))
}

/// The page's updates with their audit rows (`$1` tenant, `$2` managed tenant, `$3` run; the
/// rest bound by `apply_plan`, which says when an update applies). Returns each update's
/// managed tenant. `$9`, each update's own managed tenant, is for a group of tenants
/// (`crate::group`), which binds `$2` as NULL; a page binds it empty, and `UNNEST` pads the
/// column with NULLs, which `$2` then stands for.
pub(crate) const UPDATE_CONTACTS: &str = "WITH input AS (
         SELECT contact_id, object_id, before::jsonb AS before, after::jsonb AS after,
                email_key, coalesce(managed_tenant_id, $2) AS managed_tenant_id
         FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::uuid[])
              AS i(contact_id, object_id, before, after, email_key, managed_tenant_id)
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
         RETURNING c.contact_id, i.object_id, i.before, i.after, i.managed_tenant_id
     )
     INSERT INTO contact_changes (tenant_id, run_id, managed_tenant_id, object_id,
                                  contact_id, action, before, after)
     SELECT $1, $3, managed_tenant_id, object_id, contact_id, 'update', before, after
     FROM updated
     RETURNING managed_tenant_id";

/// Brings back contacts the sync itself made inactive, with their audit rows (scope as in
/// [`UPDATE_CONTACTS`]).
const REACTIVATE_CONTACTS: &str = "WITH input AS (
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
     FROM updated";

/// A statement of the page's writes with its scope bound as `$1` PSA tenant, `$2` managed
/// tenant and `$3` run; the caller binds the rest from `$4` on.
fn page_query<'q>(
    sql: &'q str,
    scope: &PageScope,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(scope.tenant_id)
        .bind(scope.managed_tenant_id)
        .bind(scope.run_id)
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

    // A link that exists (replay) or a contact another directory user claimed first is left
    // as it is, and gets no audit row (`insert_links`).
    if !writes.link_object_ids.is_empty() {
        insert_links(connection, statements, scope, writes).await?;
    }

    // The update applies only if the contact still has the fields the plan started from
    // and is not locked: a PSA edit made meanwhile wins over the sync.
    let updated = if writes.update_contact_ids.is_empty() {
        0
    } else {
        statements.count();
        page_query(UPDATE_CONTACTS, scope)
            .bind(&writes.update_contact_ids)
            .bind(&writes.update_object_ids)
            .bind(&writes.update_before)
            .bind(&writes.update_after)
            .bind(&writes.update_email_keys)
            .bind(Vec::<Uuid>::new())
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
        page_query(REACTIVATE_CONTACTS, scope)
            .bind(&writes.reactivate_contact_ids)
            .bind(&writes.reactivate_object_ids)
            .execute(&mut *connection)
            .await?
            .rows_affected()
    };
    page_tally.reactivated = reactivated;

    Ok(())
}

/// Steps 3 and 4 in one statement (one round trip a page). Step 3 appends what the run saw:
/// the batch's object ids, sorted and without duplicates, as one row (`run_seen`), so an
/// unchanged user costs no row of its own and no rewrite of its link. A batch recorded already
/// (replayed exactly) inserts nothing and counts nothing. The page counts the users it
/// carried; a user the run recorded in an earlier batch (a delta entry Graph sends twice) is
/// counted again here, and taken off when the tenant result ends (the `run_seen` migration's
/// trigger recounts the run's distinct ids), so the result's `seen` counts each user once per
/// run. Step 4: the tenant result's counts and resume cursor advance in the same transaction
/// as the page's writes, so after a crash the stored counts and cursor match exactly the pages
/// that committed. This and the inactivation step are the only writers of the counts.
///
/// Whether the batch was recorded is known only inside the statement, so it carries the
/// page's counts both ways and adds the one that applies.
async fn record_seen_and_advance(
    connection: &mut PgConnection,
    scope: &PageScope,
    writes: &PageWrites,
    claimed: &[String],
    page_tally: &mut Tally,
    statements: &mut Statements,
) -> Result<()> {
    statements.count();
    let batch = SeenBatch {
        managed_tenant_id: scope.managed_tenant_id,
        writes,
        tally: page_tally,
    };
    let mut applied = record_seen_and_advance_all(
        connection,
        scope.tenant_id,
        scope.run_id,
        scope.next_cursor.as_deref(),
        &[batch],
        claimed,
    )
    .await?;
    *page_tally = applied.remove(0);
    Ok(())
}

/// A batch for [`record_seen_and_advance_all`]: its managed tenant, its writes (what it saw)
/// and its counts.
pub(crate) struct SeenBatch<'a> {
    pub(crate) managed_tenant_id: Uuid,
    pub(crate) writes: &'a PageWrites,
    pub(crate) tally: &'a Tally,
}

/// [`record_seen_and_advance`] for the batches of one run, one per managed tenant (a page's
/// one, or a delta group's, `crate::group`), in one statement; `cursor` is each result's new
/// resume cursor; `claimed` are the address claims of the batches' transaction
/// (`claim_new_addresses`), removed in the same statement. Returns each batch's counts as they
/// applied, in the batches' order.
pub(crate) async fn record_seen_and_advance_all(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    cursor: Option<&str>,
    batches: &[SeenBatch<'_>],
    claimed: &[String],
) -> Result<Vec<Tally>> {
    let mut seen_object_ids: Vec<&str> = Vec::new();
    let mut firsts = Vec::with_capacity(batches.len());
    let mut lasts = Vec::with_capacity(batches.len());
    let mut batch_tenants = Vec::with_capacity(batches.len());
    let mut without_id = Vec::with_capacity(batches.len());
    let mut recorded_counts = Vec::with_capacity(batches.len());
    let mut replayed_counts = Vec::with_capacity(batches.len());
    let mut tallies = Vec::with_capacity(batches.len());
    for batch in batches {
        let writes = batch.writes;
        let position = |ids: usize| i32::try_from(ids).unwrap_or(i32::MAX);
        firsts.push(position(seen_object_ids.len() + 1));
        seen_object_ids.extend(writes.seen_object_ids.iter().map(String::as_str));
        lasts.push(position(seen_object_ids.len()));
        let (recorded, replayed) = seen_tallies(writes, batch.tally);
        batch_tenants.push(batch.managed_tenant_id);
        without_id.push(i32::try_from(writes.seen_without_id).unwrap_or(i32::MAX));
        recorded_counts.push(TallyCounts::from(&recorded).to_json().to_string());
        replayed_counts.push(TallyCounts::from(&replayed).to_json().to_string());
        tallies.push((recorded, replayed));
    }
    let recorded: Vec<(Uuid,)> = sqlx::query_as(RECORD_SEEN_AND_ADVANCE)
        .bind(tenant_id)
        .bind(run_id)
        .bind(cursor)
        .bind(&seen_object_ids)
        .bind(&firsts)
        .bind(&lasts)
        .bind(&batch_tenants)
        .bind(&without_id)
        .bind(&recorded_counts)
        .bind(&replayed_counts)
        .bind(claimed)
        .fetch_all(&mut *connection)
        .await?;
    let recorded: HashSet<Uuid> = recorded.into_iter().map(|(id,)| id).collect();
    Ok(batches
        .iter()
        .zip(tallies)
        .map(|(batch, (now, before))| {
            if recorded.contains(&batch.managed_tenant_id) {
                now
            } else {
                before
            }
        })
        .collect())
}

/// A page's counts if its batch is recorded now, and if it was already (replayed): recorded,
/// it counts the users it carried (each object id once, and the entries without one);
/// replayed, it counts no user seen again.
fn seen_tallies(writes: &PageWrites, page_tally: &Tally) -> (Tally, Tally) {
    let ineligible = page_tally.seen.saturating_sub(page_tally.eligible);
    let carried = writes.seen_object_ids.len() as u64 + writes.seen_without_id;
    let recorded = Tally {
        seen: carried,
        eligible: carried.saturating_sub(ineligible),
        ..page_tally.clone()
    };
    let replayed = Tally {
        seen: 0,
        eligible: 0,
        ..page_tally.clone()
    };
    (recorded, replayed)
}

/// `record_seen_and_advance_all`'s statement: `$1` tenant, `$2` run, `$3` the next cursor
/// (none keeps the stored one); `$4` every batch's sorted object ids, one after another;
/// `$5`–`$10` per batch the first and last position of its ids in `$4` (1-based; last before
/// first for none), its managed tenant, its entries without an id, and its counts if it is
/// recorded now or was already; `$11` the address claims to remove. A data-modifying `WITH`
/// runs whether or not the query reads it: `advanced` reads what `seen` inserted to choose the
/// counts it adds, `released` removes the claims, and the query returns the managed tenants
/// whose batch was recorded now.
const RECORD_SEEN_AND_ADVANCE: &str = "WITH batches AS (
         SELECT b.managed_tenant_id, b.without_id, b.recorded, b.replayed,
                coalesce(($4::text[])[b.first:b.last], '{}'::text[]) AS object_ids
         FROM UNNEST($5::int[], $6::int[], $7::uuid[], $8::int[], $9::text[], $10::text[])
              AS b(first, last, managed_tenant_id, without_id, recorded, replayed)
     ), seen AS (
         INSERT INTO run_seen (tenant_id, managed_tenant_id, run_id, object_ids, without_id,
                               digest)
         SELECT $1, managed_tenant_id, $2, object_ids, without_id,
                run_seen_digest(object_ids, without_id)
         FROM batches
         WHERE cardinality(object_ids) > 0 OR without_id > 0
         ON CONFLICT DO NOTHING
         RETURNING managed_tenant_id
     ), advanced AS (
         UPDATE run_tenant_results r
         SET cursor = coalesce($3::text, r.cursor),
             counts = add_counts(r.counts,
                                 CASE WHEN b.managed_tenant_id IN (SELECT managed_tenant_id FROM seen)
                                      THEN b.recorded::jsonb ELSE b.replayed::jsonb END)
         FROM batches b
         WHERE r.tenant_id = $1 AND r.run_id = $2 AND r.managed_tenant_id = b.managed_tenant_id
           AND r.status = 'running'
     ), released AS (
         DELETE FROM address_claims WHERE tenant_id = $1 AND address = ANY($11::text[])
     )
     SELECT managed_tenant_id FROM seen";

/// From this many links on, `insert_links` inserts plainly under a savepoint. Public for the
/// store's tests, which cover both forms.
pub const PLAIN_INSERT_ROWS: usize = 64;

/// The page's new links, each with its audit row (`$1` tenant, `$2` managed tenant, `$3` run):
/// the link insert ends with `$insert_tail`, and the audit rows are selected from `$audited`.
macro_rules! insert_links {
    ($insert_tail:literal, $audited:literal) => {
        concat!(
            "WITH input AS (
                 SELECT * FROM UNNEST($4::text[], $5::uuid[], $6::text[], $7::text[])
                          AS i(object_id, contact_id, action, after)
             ), inserted AS (
                 INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id,
                                    created_by_run_id)
                 SELECT $1, $2, object_id, contact_id, $3 FROM input ",
            $insert_tail,
            "
             )
             INSERT INTO contact_changes (tenant_id, run_id, managed_tenant_id, object_id,
                                          contact_id, action, before, after)
             SELECT $1, $3, $2, object_id, contact_id, action, NULL, after::jsonb FROM ",
            $audited
        )
    };
}

/// The plain form fails on any existing key, so when it succeeds every input row became a link
/// and the audit rows come straight from the input (a data-modifying `WITH` runs whether or
/// not it is read).
const INSERT_LINKS_PLAIN: &str = insert_links!("", "input");

/// Skips the links whose key exists and audits only the links it inserted.
const INSERT_LINKS_SKIPPING_EXISTING: &str = insert_links!(
    "ON CONFLICT DO NOTHING RETURNING object_id, contact_id",
    "inserted JOIN input USING (object_id, contact_id)"
);

/// Inserts the page's new links with their audit rows.
/// Nearly every link a page inserts is new, and a plain insert of them costs much less than
/// one that checks each row for a conflict first (`ON CONFLICT`'s speculative insertion). So
/// the plain form runs after a savepoint; when a link's key exists after all (a link replayed,
/// or made meanwhile by another writer) it fails on that key, the transaction is rolled back
/// to the savepoint, and the form that skips existing links runs instead. The page's other
/// writes are kept either way. When the plain form succeeds the savepoint is left to the
/// commit, which ends it with the transaction: releasing it would cost a round trip and
/// change nothing. A few links (below [`PLAIN_INSERT_ROWS`], as most delta batches have) go
/// straight to the skipping form: there the savepoint costs more than the checks it saves.
///
/// A page that creates contacts makes the table grow, and the plans this connection keeps
/// were made when it was smaller: above all the foreign-key check of each new link on its
/// contact, which Postgres plans once per connection and keeps. Planned while the table was
/// nearly empty, every index that leads with `tenant_id` looks as cheap as the primary key,
/// and one that has `contact_id` last then walks every contact of the PSA tenant for each
/// link. Such a page runs `DISCARD PLANS` before its links (in the savepoint's message when
/// there is one), so plans are made again on their next use, on the table as it is now.
async fn insert_links(
    connection: &mut PgConnection,
    statements: &mut Statements,
    scope: &PageScope,
    writes: &PageWrites,
) -> Result<()> {
    let query = |sql| {
        page_query(sql, scope)
            .bind(&writes.link_object_ids)
            .bind(&writes.link_contact_ids)
            .bind(&writes.link_actions)
            .bind(&writes.link_after)
    };
    // Simple queries: prepared, `DISCARD PLANS` discards its own plan, and Postgres' statement
    // statistics (pg_stat_statements) then miss some of its runs.
    let discard_plans = !writes.creates.contact_ids.is_empty();
    if writes.link_object_ids.len() < PLAIN_INSERT_ROWS {
        if discard_plans {
            statements.count();
            connection.execute("DISCARD PLANS").await?;
        }
        statements.count();
        query(INSERT_LINKS_SKIPPING_EXISTING)
            .execute(&mut *connection)
            .await?;
        return Ok(());
    }
    statements.count();
    connection
        .execute(if discard_plans {
            "DISCARD PLANS; SAVEPOINT plain_links"
        } else {
            "SAVEPOINT plain_links"
        })
        .await?;
    statements.count();
    match query(INSERT_LINKS_PLAIN).execute(&mut *connection).await {
        Ok(_) => {}
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            statements.count();
            connection
                .execute("ROLLBACK TO SAVEPOINT plain_links")
                .await?;
            statements.count();
            query(INSERT_LINKS_SKIPPING_EXISTING)
                .execute(&mut *connection)
                .await?;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

pub(crate) fn build_context(
    scope: &PageScope,
    links: Vec<(String, Uuid)>,
    contacts: Vec<PageContactRow>,
    review_states: Vec<(String, String, Option<String>)>,
) -> PageContext {
    let links_by_object_id: BTreeMap<String, Uuid> = links.into_iter().collect();
    let mut context_contacts = BTreeMap::new();
    // The page's own links, read by object id; the contacts found by address bring theirs.
    let mut link_by_contact_id: BTreeMap<Uuid, Link> = links_by_object_id
        .iter()
        .map(|(object_id, contact_id)| {
            let link = Link {
                managed_tenant_id: scope.managed_tenant_id,
                object_id: object_id.clone(),
                contact_id: *contact_id,
            };
            (*contact_id, link)
        })
        .collect();
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

#[cfg(test)]
mod plan_tests {
    use super::{
        NEW_ADDRESS_APPEARED, PAGE_CONTACTS, PAGE_LINKS, REACTIVATE_CONTACTS, UPDATE_CONTACTS,
    };
    use crate::inactivation::{ABSENT_USERS, APPLY_INACTIVATIONS, DROP_STALE_HELD};
    use serde_json::Value;
    use sqlx::PgPool;
    use uuid::Uuid;

    /// A plan (`EXPLAIN (VERBOSE, FORMAT JSON)`) that reads each row a bounded number of times
    /// whatever the row counts: no nested-loop anti join, no join that matches keys by filtering
    /// (the inner side read in full for each outer row), and every subquery over unnested
    /// object ids (what runs saw) used as a hashed set, never run again per row.
    fn assert_linear(what: &str, plan: &Value) {
        let nodes = nodes(plan);
        let mut texts = Vec::new();
        for node in &nodes {
            assert!(
                !(node["Node Type"] == "Nested Loop" && node["Join Type"] == "Anti"),
                "{what}: a nested-loop anti join in {plan}"
            );
            let join_filter = node["Join Filter"].as_str().unwrap_or_default();
            assert!(
                !join_filter.contains("contact_id =") && !join_filter.contains("object_id ="),
                "{what}: keys matched by a join filter in {plan}"
            );
            for key in ["Filter", "Join Filter", "Index Cond", "Hash Cond"] {
                texts.extend(node[key].as_str().map(str::to_owned));
            }
            for output in node["Output"].as_array().into_iter().flatten() {
                texts.extend(output.as_str().map(str::to_owned));
            }
        }
        for node in &nodes {
            let Some(name) = node["Subplan Name"].as_str() else {
                continue;
            };
            let unnests = nodes_of(node)
                .iter()
                .any(|inner| inner["Node Type"] == "Function Scan");
            if !unnests || name.starts_with("hashed ") {
                continue;
            }
            let unhashed = texts.iter().any(|text| {
                text.match_indices(name).any(|(at, _)| {
                    !text[..at].ends_with("hashed ")
                        && !text[at + name.len()..].starts_with(|c: char| c.is_ascii_digit())
                })
            });
            assert!(!unhashed, "{what}: {name} runs again per row in {plan}");
        }
    }

    /// Every node of a plan node's tree, depth first.
    fn nodes_of(node: &Value) -> Vec<&Value> {
        let mut out = vec![node];
        for child in node["Plans"].as_array().into_iter().flatten() {
            out.extend(nodes_of(child));
        }
        out
    }

    /// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
    fn nodes(plan: &Value) -> Vec<&Value> {
        nodes_of(&plan[0]["Plan"])
    }

    /// A PSA tenant whose statistics describe 100 contacts and links while it has 20,100 (a
    /// first sync before autovacuum analyzes): each of the page's reads, with a thousand keys,
    /// still probes an index per key and never scans or hashes the tenant's contacts or links.
    #[sqlx::test(migrations = "../../migrations")]
    async fn page_reads_probe_indexes_whatever_the_statistics(pool: PgPool) {
        page_reads_probe_indexes(pool, 100, 0).await;
    }

    /// The same when the statistics were taken while the tenant had a single contact and link
    /// (the first contact of a first sync): they then say every contact has the same address,
    /// and the address probe went through the primary key, filtering every contact of the
    /// tenant by address for each key, until the address column's distinct count was fixed
    /// (migration `20261207100000`).
    #[sqlx::test(migrations = "../../migrations")]
    async fn page_reads_probe_indexes_when_analyzed_at_one_contact(pool: PgPool) {
        page_reads_probe_indexes(pool, 1, 0).await;
    }

    /// The same for a PSA tenant whose first sync runs after another PSA tenant's contacts and
    /// links were analyzed: the statistics then say every row belongs to the other tenant, so
    /// a plan made for this tenant's id expected it to have a single contact, and any index
    /// that starts with the tenant looked as good as the address index. The probe went
    /// through the primary key or the name index, filtering every contact of the tenant by
    /// address for each key (seen in the scale bench's second sync: 60–280 ms for a page's
    /// contact read instead of 2 ms).
    #[sqlx::test(migrations = "../../migrations")]
    async fn page_reads_probe_indexes_when_only_another_tenant_was_analyzed(pool: PgPool) {
        page_reads_probe_indexes(pool, 0, 20_000).await;
    }

    /// Statements that compare each row with a bound list (discovery's missing tenants, the
    /// preflight's absent users) hash the list in the generic plan a prepared statement
    /// switches to, where `= ANY($n)` would be scanned for every row.
    #[sqlx::test(migrations = "../../migrations")]
    async fn bound_lists_are_hashed_in_a_generic_plan(pool: PgPool) {
        let mut connection = pool.acquire().await.expect("connection");
        sqlx::query("SET plan_cache_mode = force_generic_plan")
            .execute(&mut *connection)
            .await
            .expect("generic plans");
        let tenant = Uuid::new_v4();
        for (what, sql, arguments) in [
            (
                "mark missing",
                crate::discovery::MARK_MISSING,
                format!("'{tenant}', ARRAY['a', 'b']"),
            ),
            (
                "absent preview",
                crate::preflight::ABSENT_PREVIEW,
                format!("'{tenant}', '{tenant}', ARRAY['a', 'b']"),
            ),
        ] {
            sqlx::query(&format!("PREPARE listed AS {sql}"))
                .execute(&mut *connection)
                .await
                .expect("prepare");
            let plan: Value = sqlx::query_scalar(&format!(
                "EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE listed({arguments})"
            ))
            .fetch_one(&mut *connection)
            .await
            .expect("explain");
            sqlx::query("DEALLOCATE listed")
                .execute(&mut *connection)
                .await
                .expect("deallocate");
            assert!(
                plan.to_string().contains("hashed SubPlan"),
                "{what}: the list is not hashed in {plan}"
            );
        }
    }

    /// Seeds a PSA tenant with `analyzed_at` contacts and links (and another PSA tenant with
    /// `others`), analyzes, grows the tenant to 20,100 of each, and checks the plans of the
    /// page's reads for a thousand of its keys.
    async fn page_reads_probe_indexes(pool: PgPool, analyzed_at: i32, others: i32) {
        // The statistics are the ones this test takes, whenever autovacuum would visit.
        for table in [
            "contacts",
            "links",
            "pending_inactivations",
            "run_seen",
            "runs",
        ] {
            sqlx::query(&format!(
                "ALTER TABLE {table} SET (autovacuum_enabled = off)"
            ))
            .execute(&pool)
            .await
            .expect("autovacuum off");
        }
        let tenant_id = Uuid::new_v4();
        let other_tenant_id = Uuid::new_v4();
        let client_id = Uuid::new_v4();
        let managed_tenant_id = Uuid::new_v4();
        for tenant in [tenant_id, other_tenant_id] {
            for sql in [
                "INSERT INTO psa_tenants (tenant_id, name) VALUES ($1, 'MSP')",
                "INSERT INTO clients (tenant_id, client_id, name) VALUES ($1, $2, 'Contoso')",
                "INSERT INTO managed_tenants (tenant_id, managed_tenant_id, entra_tenant_id,
                                              display_name)
                 VALUES ($1, $3, 'entra', 'Customer')",
            ] {
                sqlx::query(sql)
                    .bind(tenant)
                    .bind(client_id)
                    .bind(managed_tenant_id)
                    .execute(&pool)
                    .await
                    .expect("seed");
            }
        }
        // Adds `count` contacts to `tenant`, numbered after its existing ones, and links them.
        let add = |tenant: Uuid, count: i32| {
            let pool = pool.clone();
            async move {
                for sql in [
                    "INSERT INTO contacts (tenant_id, client_id, full_name, email, email_normalized)
                     SELECT $1, $2, 'Person ' || i, 'p' || i || '@example.com',
                            'p' || i || '@example.com'
                     FROM (SELECT count(*)::int AS n FROM contacts WHERE tenant_id = $1) AS c,
                          generate_series(c.n + 1, c.n + $4) AS i",
                    "INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
                     SELECT c.tenant_id, $3, c.contact_id::text, c.contact_id FROM contacts c
                     WHERE c.tenant_id = $1
                       AND NOT EXISTS (SELECT 1 FROM links l WHERE l.contact_id = c.contact_id)",
                ] {
                    sqlx::query(sql)
                        .bind(tenant)
                        .bind(client_id)
                        .bind(managed_tenant_id)
                        .bind(count)
                        .execute(&pool)
                        .await
                        .expect("seed");
                }
            }
        };
        add(other_tenant_id, others).await;
        add(tenant_id, analyzed_at).await;
        sqlx::query("ANALYZE contacts, links")
            .execute(&pool)
            .await
            .expect("analyze");
        add(tenant_id, 20_100 - analyzed_at).await;

        let (emails, contact_ids): (Vec<String>, Vec<Uuid>) = sqlx::query_as::<_, (String, Uuid)>(
            "SELECT email_normalized, contact_id FROM contacts WHERE tenant_id = $1
             ORDER BY email LIMIT 1000 OFFSET 5000",
        )
        .bind(tenant_id)
        .fetch_all(&pool)
        .await
        .expect("keys")
        .into_iter()
        .unzip();
        let object_ids: Vec<String> = contact_ids.iter().map(Uuid::to_string).collect();
        // A page's updates: a tenth of its users, as in a re-run that promotes some of them.
        let updated_ids = &contact_ids[..100];
        let updated_object_ids = &object_ids[..100];
        let updated_emails = &emails[..100];
        let unchanged = vec!["{}".to_owned(); 100];

        let explain = |sql: &str| format!("EXPLAIN (FORMAT JSON) {sql}");
        let plans: Vec<(&str, Value)> = vec![
            (
                "links",
                sqlx::query_scalar(&explain(PAGE_LINKS))
                    .bind(tenant_id)
                    .bind(managed_tenant_id)
                    .bind(&object_ids)
                    .fetch_one(&pool)
                    .await
                    .expect("explain links"),
            ),
            (
                "contacts",
                sqlx::query_scalar(&explain(PAGE_CONTACTS))
                    .bind(tenant_id)
                    .bind(&emails)
                    .fetch_one(&pool)
                    .await
                    .expect("explain contacts"),
            ),
            (
                "new addresses",
                sqlx::query_scalar(&explain(NEW_ADDRESS_APPEARED))
                    .bind(tenant_id)
                    .bind(&emails)
                    .bind(&contact_ids)
                    .fetch_one(&pool)
                    .await
                    .expect("explain new addresses"),
            ),
            (
                "updates",
                sqlx::query_scalar(&explain(UPDATE_CONTACTS))
                    .bind(tenant_id)
                    .bind(managed_tenant_id)
                    .bind(Uuid::new_v4())
                    .bind(updated_ids)
                    .bind(updated_object_ids)
                    .bind(&unchanged)
                    .bind(&unchanged)
                    .bind(updated_emails)
                    .bind(Vec::<Uuid>::new())
                    .fetch_one(&pool)
                    .await
                    .expect("explain updates"),
            ),
            (
                "reactivations",
                sqlx::query_scalar(&explain(REACTIVATE_CONTACTS))
                    .bind(tenant_id)
                    .bind(managed_tenant_id)
                    .bind(Uuid::new_v4())
                    .bind(updated_ids)
                    .bind(updated_object_ids)
                    .fetch_one(&pool)
                    .await
                    .expect("explain reactivations"),
            ),
        ];
        // The end-of-tenant statements that compare a managed tenant's links or held rows
        // with what runs saw: the absent-user pass of a later full sync, and the re-check of
        // held inactivations when an admin applies them.
        let verbose = |sql: &str| format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}");
        let absent: Value = sqlx::query_scalar(&verbose(ABSENT_USERS))
            .bind(tenant_id)
            .bind(managed_tenant_id)
            .bind(Uuid::new_v4())
            .fetch_one(&pool)
            .await
            .expect("explain absent users");
        assert_linear("absent users", &absent);
        // A run that held an inactivation of every linked user, and a later run that saw half
        // of them.
        let (held_run, later_run) = (Uuid::new_v4(), Uuid::new_v4());
        for sql in [
            "INSERT INTO runs (tenant_id, run_id, kind, trigger, scope, status, started_at,
                               finished_at)
             VALUES ($1, $3, 'sync', 'manual', 'all', 'completed', now() - interval '1 hour',
                     now() - interval '1 hour'),
                    ($1, $4, 'sync', 'manual', 'all', 'completed', now(), now())",
            "INSERT INTO pending_inactivations (tenant_id, run_id, managed_tenant_id, contact_id,
                                                object_id, reason, state)
             SELECT $1, $3, $2, contact_id, object_id, 'deleted_upstream', 'held' FROM links
             WHERE tenant_id = $1",
            "INSERT INTO run_seen (tenant_id, managed_tenant_id, run_id, object_ids, digest)
             SELECT $1, $2, $4, array_agg(object_id ORDER BY object_id), gen_random_uuid()
             FROM (SELECT object_id, row_number() OVER (ORDER BY object_id) / 1000 AS batch
                   FROM links WHERE tenant_id = $1 AND contact_id::text < '8') AS seen
             GROUP BY batch",
        ] {
            sqlx::query(sql)
                .bind(tenant_id)
                .bind(managed_tenant_id)
                .bind(held_run)
                .bind(later_run)
                .execute(&pool)
                .await
                .expect("seed the held run");
        }
        // Twice: as seeded, and once the held run's rows are analyzed while the contacts'
        // statistics stay as they were (autovacuum reaches a small table first).
        for analyzed in ["as seeded", "held rows analyzed"] {
            if analyzed == "held rows analyzed" {
                sqlx::query("ANALYZE pending_inactivations, run_seen, runs")
                    .execute(&pool)
                    .await
                    .expect("analyze the held run");
            }
            let stale: Value = sqlx::query_scalar(&verbose(DROP_STALE_HELD))
                .bind(tenant_id)
                .bind(held_run)
                .bind(managed_tenant_id)
                .fetch_one(&pool)
                .await
                .expect("explain the re-check of held inactivations");
            assert_linear(&format!("held re-check, {analyzed}"), &stale);
            let apply: Value = sqlx::query_scalar(&verbose(APPLY_INACTIVATIONS))
                .bind(tenant_id)
                .bind(held_run)
                .bind(managed_tenant_id)
                .bind("held")
                .bind("user:admin")
                .fetch_one(&pool)
                .await
                .expect("explain applying held inactivations");
            assert_linear(&format!("apply held, {analyzed}"), &apply);
        }
        for (what, plan) in &plans {
            // The writes may join their rows in bulk: a page's updates are a tenth of its users
            // at most, and a hash join with one pass over the tenant's contacts costs what the
            // probes would (it is what the planner chooses while the statistics say the table
            // is small). A key filtered row by row, below, is never right.
            let reads = !matches!(*what, "updates" | "reactivations");
            let nodes = nodes(plan);
            let mut probed = 0;
            for node in &nodes {
                let kind = node["Node Type"].as_str().unwrap_or_default();
                let relation = node["Relation Name"].as_str().unwrap_or_default();
                let scans_a_table = matches!(kind, "Seq Scan" | "Bitmap Heap Scan")
                    && matches!(relation, "contacts" | "links");
                let joins_in_bulk = matches!(kind, "Hash Join" | "Merge Join");
                assert!(
                    !reads || (!scans_a_table && !joins_in_bulk),
                    "{what}: {kind} {relation} in {plan}"
                );
                // A key is always an index condition: a key only filtering the rows an index
                // scan returns means every row of the tenant is read for each key.
                let filter = node["Filter"].as_str().unwrap_or_default();
                let scans = matches!(kind, "Index Scan" | "Index Only Scan");
                assert!(
                    !(filter.contains("email_normalized")
                        || filter.contains("object_id")
                        || (scans && filter.contains("contact_id ="))),
                    "{what}: {kind} {relation} filters by a key: {filter} in {plan}"
                );
                if kind == "Index Scan" || kind == "Index Only Scan" {
                    assert!(
                        matches!(relation, "contacts" | "links"),
                        "{what}: an index scan of {relation}"
                    );
                    probed += 1;
                }
            }
            assert!(!reads || probed > 0, "{what}: no index probe in {plan}");
        }
    }
}
