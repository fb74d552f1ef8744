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

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use entra_sync_domain::model::{Action, DirectoryEntry, SyncSettings, Tally};
use entra_sync_domain::plan::{page_object_ids, plan_page, tally};
use entra_sync_domain::validate::storable_entries;
use sqlx::FromRow;
use uuid::Uuid;

use crate::inactivation::{end_all_quietly, QuietEnd, TenantFinish};
use crate::reconcile::{
    build_context, managed_tenant_lock_key, seen_tallies, LinkRow, PageContactRow, PageScope,
    PageWrites, UPDATE_CONTACTS,
};
use crate::runs::TallyCounts;
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

/// What the group's tenants saw, one `run_seen` row each, and their counts and cursors: the
/// group form of `reconcile::RECORD_SEEN_AND_ADVANCE` (`$1` tenant, `$2` run, `$3` the cursor;
/// `$4`/`$5` every tenant's sorted object ids, each with its managed tenant; `$6`–`$9` per
/// tenant its managed tenant, entries without an id, and its counts if its batch is recorded
/// now or was already). Returns the managed tenants whose batch was recorded now.
const RECORD_GROUP_SEEN_AND_ADVANCE: &str = "WITH batches AS (
         SELECT b.managed_tenant_id, b.without_id, b.recorded, b.replayed,
                coalesce((SELECT array_agg(i.object_id ORDER BY i.position)
                          FROM UNNEST($4::uuid[], $5::text[]) WITH ORDINALITY
                               AS i(managed_tenant_id, object_id, position)
                          WHERE i.managed_tenant_id = b.managed_tenant_id),
                         '{}'::text[]) AS object_ids
         FROM UNNEST($6::uuid[], $7::int[], $8::text[], $9::text[])
              AS b(managed_tenant_id, without_id, recorded, replayed)
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
         SET cursor = $3,
             counts = add_counts(r.counts,
                                 CASE WHEN b.managed_tenant_id IN (SELECT managed_tenant_id FROM seen)
                                      THEN b.recorded::jsonb ELSE b.replayed::jsonb END)
         FROM batches b
         WHERE r.tenant_id = $1 AND r.run_id = $2 AND r.managed_tenant_id = b.managed_tenant_id
           AND r.status = 'running'
     )
     SELECT managed_tenant_id FROM seen";

/// A member the group reconciles: its entries as they can be stored, and later its plan's
/// writes and counts.
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
        let entries: Vec<_> = members
            .iter()
            .map(|member| storable_entries(member.entries))
            .collect();
        // The locks in one order, so two groups (or a group and a page) never deadlock; sent
        // with `BEGIN` as one simple query. The keys are made of UUIDs, safe to write into it.
        let mut keys: Vec<String> = members
            .iter()
            .map(|member| managed_tenant_lock_key(tenant_id, member.managed_tenant_id))
            .collect();
        keys.sort();
        let mut begin = String::from("BEGIN;");
        for key in &keys {
            begin.push_str(&format!(
                " SELECT pg_advisory_xact_lock(hashtextextended('{key}', 0));"
            ));
        }
        let mut transaction = self.pool.begin_with(begin).await?;

        // Step 1: every member's links by object id, with their contacts, in one read.
        let object_ids: Vec<Vec<String>> = entries.iter().map(|e| page_object_ids(e)).collect();
        let (pair_tenants, pair_objects): (Vec<Uuid>, Vec<&str>) = members
            .iter()
            .zip(&object_ids)
            .flat_map(|(member, ids)| {
                ids.iter()
                    .map(move |id| (member.managed_tenant_id, id.as_str()))
            })
            .unzip();
        let rows: Vec<GroupLinkRow> = if pair_objects.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(GROUP_LINKS)
                .bind(tenant_id)
                .bind(&pair_tenants)
                .bind(&pair_objects)
                .persistent(false)
                .fetch_all(&mut *transaction)
                .await?
        };
        let mut read: HashMap<Uuid, LinksRead> = HashMap::new();
        for row in rows {
            let (links, contacts) = read.entry(row.managed_tenant_id).or_default();
            let (link, contact) = row.link.split();
            links.push(link);
            contacts.extend(contact);
        }

        // Each member planned on its own context, as its page would be.
        let mut planned = Vec::new();
        for (member, entries) in members.iter().zip(&entries) {
            let (links, own_contacts) = read.remove(&member.managed_tenant_id).unwrap_or_default();
            let scope = PageScope {
                tenant_id,
                run_id,
                managed_tenant_id: member.managed_tenant_id,
                mapped_client_id: member.mapped_client_id,
                next_cursor: None,
            };
            let context = build_context(&scope, links, own_contacts, Vec::new());
            let plan = plan_page(&context, entries, member.settings);
            if !group_applies(&plan.actions) {
                outcomes.insert(member.managed_tenant_id, GroupOutcome::Alone);
                continue;
            }
            let writes = PageWrites::from_plan(&plan, &context, entries);
            let mut tally = tally(&plan, entries.len());
            tally.inactivated = 0;
            planned.push(Planned {
                member,
                writes,
                tally,
            });
        }

        // Step 2: the updates, with their audit rows.
        let mut update_tenants = Vec::new();
        let mut update_contact_ids = Vec::new();
        let mut update_object_ids = Vec::new();
        let mut update_before = Vec::new();
        let mut update_after = Vec::new();
        let mut update_email_keys = Vec::new();
        for member in &planned {
            let writes = &member.writes;
            update_tenants.extend(std::iter::repeat_n(
                member.member.managed_tenant_id,
                writes.update_contact_ids.len(),
            ));
            update_contact_ids.extend_from_slice(&writes.update_contact_ids);
            update_object_ids.extend_from_slice(&writes.update_object_ids);
            update_before.extend_from_slice(&writes.update_before);
            update_after.extend_from_slice(&writes.update_after);
            update_email_keys.extend_from_slice(&writes.update_email_keys);
        }
        let mut updated: HashMap<Uuid, u64> = HashMap::new();
        if !update_contact_ids.is_empty() {
            let rows: Vec<(Uuid,)> = sqlx::query_as(UPDATE_CONTACTS)
                .bind(tenant_id)
                .bind(None::<Uuid>)
                .bind(run_id)
                .bind(&update_contact_ids)
                .bind(&update_object_ids)
                .bind(&update_before)
                .bind(&update_after)
                .bind(&update_email_keys)
                .bind(&update_tenants)
                .fetch_all(&mut *transaction)
                .await?;
            for (managed_tenant_id,) in rows {
                *updated.entry(managed_tenant_id).or_default() += 1;
            }
        }
        for member in &mut planned {
            member.tally.updated = updated
                .get(&member.member.managed_tenant_id)
                .copied()
                .unwrap_or(0);
        }

        // Step 3: what each member with entries saw, with its counts and cursor. A member
        // whose round was empty records nothing, as its page would not have run.
        let mut seen_tenants = Vec::new();
        let mut seen_object_ids: Vec<&str> = Vec::new();
        let mut batch_tenants = Vec::new();
        let mut batch_without_id = Vec::new();
        let mut batch_recorded = Vec::new();
        let mut batch_replayed = Vec::new();
        let mut tallies = HashMap::new();
        for member in planned
            .iter()
            .filter(|member| !member.member.entries.is_empty())
        {
            let managed_tenant_id = member.member.managed_tenant_id;
            let writes = &member.writes;
            seen_tenants.extend(std::iter::repeat_n(
                managed_tenant_id,
                writes.seen_object_ids.len(),
            ));
            seen_object_ids.extend(writes.seen_object_ids.iter().map(String::as_str));
            let (recorded, replayed) = seen_tallies(writes, &member.tally);
            batch_tenants.push(managed_tenant_id);
            batch_without_id.push(i32::try_from(writes.seen_without_id).unwrap_or(i32::MAX));
            batch_recorded.push(TallyCounts::from(&recorded).to_json().to_string());
            batch_replayed.push(TallyCounts::from(&replayed).to_json().to_string());
            tallies.insert(managed_tenant_id, (recorded, replayed));
        }
        if !batch_tenants.is_empty() {
            let recorded: Vec<(Uuid,)> = sqlx::query_as(RECORD_GROUP_SEEN_AND_ADVANCE)
                .bind(tenant_id)
                .bind(run_id)
                .bind(cursor)
                .bind(&seen_tenants)
                .bind(&seen_object_ids)
                .bind(&batch_tenants)
                .bind(&batch_without_id)
                .bind(&batch_recorded)
                .bind(&batch_replayed)
                .fetch_all(&mut *transaction)
                .await?;
            let recorded: HashSet<Uuid> = recorded.into_iter().map(|(id,)| id).collect();
            for member in &mut planned {
                let managed_tenant_id = member.member.managed_tenant_id;
                if let Some((now, before)) = tallies.remove(&managed_tenant_id) {
                    member.tally = if recorded.contains(&managed_tenant_id) {
                        now
                    } else {
                        before
                    };
                }
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
