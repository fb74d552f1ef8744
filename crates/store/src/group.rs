//! The delta rounds of several managed tenants of one run, reconciled and ended together in
//! one transaction with a fixed number of statements, however many tenants the group has.
//!
//! A scheduled delta sync of many small tenants is mostly tenants with nothing or a few field
//! changes. Alone, each of those costs a page transaction of about eight statements (or, with
//! an empty round, one of three) for a handful of rows; together, a group of them costs one
//! lock round trip, one read, at most one update, one record of what they saw and one end.
//!
//! A group takes only what it can plan from links alone: a round whose plan only updates
//! contacts or skips users. A linked user's plan needs only its link and its contact, which
//! the group reads. An unlinked user is planned without the contacts its addresses match and
//! without its review items: a user the filters skip (a guest, a disabled user…) is skipped
//! before either is consulted, exactly as on a page; any other unlinked user plans as a create
//! here, which the group does not apply. A round that would create, link, queue, inactivate or
//! reactivate needs the page transaction's other steps (address claims, review reads, pending
//! inactivations); such a tenant is left untouched, and the caller reconciles it on its own
//! after the group commits.
//!
//! Each tenant ends exactly as `Store::reconcile_last_delta_page` ends it: its updates with
//! their audit rows, what its run saw (`run_seen`) with its counts and resume cursor, then
//! `inactivation::end_all_quietly`, which saves its new delta link and finishes its result.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use entra_sync_domain::model::{Action, DirectoryEntry, SyncSettings, Tally};
use entra_sync_domain::plan::{plan_prepared, tally, PreparedPage};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::inactivation::{end_all_quietly, QuietEnd, TenantFinish};
use crate::reconcile::{
    begin_locked, build_context, record_seen_and_advance_all, LinkRow, PageContactRow, PageScope,
    PageWrites, SeenBatch, UPDATE_CONTACTS,
};
use crate::{Result, Store};

/// One managed tenant's delta round, read to its end in a single provider page.
pub struct GroupMember<'a> {
    pub managed_tenant_id: Uuid,
    /// The client new contacts would be created under (a group creates none; the planner
    /// needs it).
    pub mapped_client_id: Uuid,
    pub entries: &'a [DirectoryEntry],
    pub settings: &'a SyncSettings,
    /// The round's new delta link and when it was issued.
    pub delta_link: Option<(&'a str, DateTime<Utc>)>,
}

/// What the group did with a member.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupOutcome {
    /// Reconciled in the group's transaction: its counts, and its end (None when something
    /// is pending, as `reconcile_last_delta_page` says; `finish_tenant_sync` ends it then).
    Reconciled {
        tally: Tally,
        finish: Option<TenantFinish>,
    },
    /// Left untouched: its round needs a page transaction of its own.
    Alone,
}

/// The group's links by (managed tenant, object id), each with its contact, as a page reads
/// its own (`reconcile::PAGE_LINKS`).
const GROUP_LINKS: &str =
    "SELECT k.managed_tenant_id, k.object_id, l.contact_id AS link_contact_id,
            c.contact_id, c.client_id, c.full_name, c.email, c.phone, c.mobile,
            c.job_title, c.is_active, c.inactive_reason, c.sync_locked
     FROM UNNEST($2::uuid[], $3::text[]) AS k(managed_tenant_id, object_id)
     CROSS JOIN LATERAL (SELECT contact_id FROM links
                         WHERE tenant_id = (SELECT $1::uuid)
                           AND managed_tenant_id = k.managed_tenant_id
                           AND object_id = k.object_id
                         OFFSET 0) AS l
     LEFT JOIN LATERAL (SELECT * FROM contacts
                        WHERE tenant_id = (SELECT $1::uuid) AND contact_id = l.contact_id
                        OFFSET 0) AS c ON true";

/// What [`GROUP_LINKS`] read for one member: its links (object id, contact id) and their
/// contacts.
type LinksRead = (Vec<(String, Uuid)>, Vec<PageContactRow>);

/// A row of [`GROUP_LINKS`].
#[derive(FromRow)]
struct GroupLinkRow {
    managed_tenant_id: Uuid,
    #[sqlx(flatten)]
    link: LinkRow,
}

/// A member the group reconciles: its plan's writes and its counts.
struct Planned<'a> {
    member: &'a GroupMember<'a>,
    writes: PageWrites,
    tally: Tally,
}

/// Whether a plan is one the group applies: updates and skips only.
fn group_applies(actions: &[Action]) -> bool {
    actions
        .iter()
        .all(|action| matches!(action, Action::Update { .. } | Action::Skip { .. }))
}

impl Store {
    /// Reconciles and ends the last (and only) batch of several managed tenants' delta rounds
    /// in one transaction that holds all their locks (see the module docs for which ones it
    /// takes; the others are answered `Alone` and left untouched). `cursor` is the resume
    /// cursor a reconciled batch leaves, as the activity's last batch leaves it. Members must
    /// be distinct managed tenants of `tenant_id`, each with this run's result open.
    pub async fn reconcile_delta_group(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        cursor: &str,
        members: &[GroupMember<'_>],
    ) -> Result<BTreeMap<Uuid, GroupOutcome>> {
        let mut outcomes = BTreeMap::new();
        if members.is_empty() {
            return Ok(outcomes);
        }
        let pages: Vec<PreparedPage> = members
            .iter()
            .map(|member| PreparedPage::new(member.entries))
            .collect();
        let managed_tenant_ids: Vec<Uuid> = members
            .iter()
            .map(|member| member.managed_tenant_id)
            .collect();
        let mut transaction = begin_locked(&self.pool, tenant_id, &managed_tenant_ids).await?;

        // Step 1: every member's links by object id, with their contacts, in one read.
        let mut read = read_links(&mut transaction, tenant_id, members, &pages).await?;

        // Each member planned on its own context, as its page would be.
        let mut planned = Vec::new();
        for (member, page) in members.iter().zip(&pages) {
            let (links, own_contacts) = read.remove(&member.managed_tenant_id).unwrap_or_default();
            let scope = PageScope {
                tenant_id,
                run_id,
                managed_tenant_id: member.managed_tenant_id,
                mapped_client_id: member.mapped_client_id,
                next_cursor: None,
            };
            let context = build_context(&scope, links, own_contacts, Vec::new());
            let plan = plan_prepared(&context, page, member.settings);
            if !group_applies(&plan.actions) {
                outcomes.insert(member.managed_tenant_id, GroupOutcome::Alone);
                continue;
            }
            let writes = PageWrites::from_plan(&plan, &context, page.entries());
            let mut tally = tally(&plan, page.entries().len());
            tally.inactivated = 0;
            planned.push(Planned {
                member,
                writes,
                tally,
            });
        }

        // Step 2: the updates, with their audit rows.
        update_members(&mut transaction, tenant_id, run_id, &mut planned).await?;

        // Step 3: what each member with entries saw, with its counts and cursor. A member
        // whose round was empty records nothing, as its page would not have run.
        let seen: Vec<&mut Planned> = planned
            .iter_mut()
            .filter(|member| !member.member.entries.is_empty())
            .collect();
        if !seen.is_empty() {
            let batches: Vec<SeenBatch> = seen
                .iter()
                .map(|member| SeenBatch {
                    managed_tenant_id: member.member.managed_tenant_id,
                    writes: &member.writes,
                    tally: &member.tally,
                })
                .collect();
            let applied = record_seen_and_advance_all(
                &mut transaction,
                tenant_id,
                run_id,
                Some(cursor),
                &batches,
                &[],
            )
            .await?;
            for (member, tally) in seen.into_iter().zip(applied) {
                member.tally = tally;
            }
        }

        // Step 4: each member's end, its delta link saved with it.
        let ends: Vec<QuietEnd> = planned
            .iter()
            .map(|member| QuietEnd {
                managed_tenant_id: member.member.managed_tenant_id,
                delta_link: member.member.delta_link,
            })
            .collect();
        let mut finishes = if ends.is_empty() {
            BTreeMap::new()
        } else {
            end_all_quietly(&mut transaction, tenant_id, run_id, &ends).await?
        };
        transaction.commit().await?;

        for member in planned {
            let managed_tenant_id = member.member.managed_tenant_id;
            outcomes.insert(
                managed_tenant_id,
                GroupOutcome::Reconciled {
                    tally: member.tally,
                    finish: finishes.remove(&managed_tenant_id).flatten(),
                },
            );
        }
        Ok(outcomes)
    }
}

/// Step 1 of a group: every member's links by the object ids of its entries, each with its
/// contact, in one read ([`GROUP_LINKS`]), by member.
async fn read_links(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    members: &[GroupMember<'_>],
    pages: &[PreparedPage<'_>],
) -> Result<HashMap<Uuid, LinksRead>> {
    let object_ids: Vec<Vec<String>> = pages.iter().map(PreparedPage::object_ids).collect();
    let (pair_tenants, pair_objects): (Vec<Uuid>, Vec<&str>) = members
        .iter()
        .zip(&object_ids)
        .flat_map(|(member, ids)| {
            ids.iter()
                .map(move |id| (member.managed_tenant_id, id.as_str()))
        })
        .unzip();
    let mut read: HashMap<Uuid, LinksRead> = HashMap::new();
    if pair_objects.is_empty() {
        return Ok(read);
    }
    let rows: Vec<GroupLinkRow> = sqlx::query_as(GROUP_LINKS)
        .bind(tenant_id)
        .bind(&pair_tenants)
        .bind(&pair_objects)
        .persistent(false)
        .fetch_all(&mut *connection)
        .await?;
    for row in rows {
        let (links, contacts) = read.entry(row.managed_tenant_id).or_default();
        let (link, contact) = row.link.split();
        links.push(link);
        contacts.extend(contact);
    }
    Ok(read)
}

/// Step 2 of a group: every planned member's updates, with their audit rows, in one
/// statement (`UPDATE_CONTACTS` with each row's own managed tenant), and each member's
/// `updated` count from the rows it returned.
async fn update_members(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    planned: &mut [Planned<'_>],
) -> Result<()> {
    let mut tenants = Vec::new();
    let mut contact_ids = Vec::new();
    let mut object_ids = Vec::new();
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut email_keys = Vec::new();
    for member in planned.iter() {
        let writes = &member.writes;
        tenants.extend(std::iter::repeat_n(
            member.member.managed_tenant_id,
            writes.update_contact_ids.len(),
        ));
        contact_ids.extend_from_slice(&writes.update_contact_ids);
        object_ids.extend_from_slice(&writes.update_object_ids);
        before.extend_from_slice(&writes.update_before);
        after.extend_from_slice(&writes.update_after);
        email_keys.extend_from_slice(&writes.update_email_keys);
    }
    let mut updated: HashMap<Uuid, u64> = HashMap::new();
    if !contact_ids.is_empty() {
        let rows: Vec<(Uuid,)> = sqlx::query_as(UPDATE_CONTACTS)
            .bind(tenant_id)
            .bind(None::<Uuid>)
            .bind(run_id)
            .bind(&contact_ids)
            .bind(&object_ids)
            .bind(&before)
            .bind(&after)
            .bind(&email_keys)
            .bind(&tenants)
            .fetch_all(&mut *connection)
            .await?;
        for (managed_tenant_id,) in rows {
            *updated.entry(managed_tenant_id).or_default() += 1;
        }
    }
    for member in planned {
        member.tally.updated = updated
            .get(&member.member.managed_tenant_id)
            .copied()
            .unwrap_or(0);
    }
    Ok(())
}
