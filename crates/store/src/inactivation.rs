//! Inactivations at the end of a managed tenant's sync: users absent from a complete
//! enumeration join the inactivations the pages queued, and the mass-inactivation guard
//! decides whether they apply now or wait, held, for an admin.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use entra_sync_domain::model::{Action, InactiveReason, Link};
use entra_sync_domain::plan::{inactivation_guard_trips, plan_absent};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::error::StoreError;
use crate::psa::ContactRow;
use crate::reconcile::begin_locked;
use crate::runs::{parse_tenant_status, TenantResultStatus};
use crate::{Result, Store};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InactivationOutcome {
    /// Contacts made inactive now.
    pub applied: u64,
    /// Inactivations held by the guard for an admin's confirmation.
    pub held: u64,
}

/// An admin's answer to held inactivations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldInactivationAction {
    Apply,
    Discard,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldInactivation {
    pub contact_id: Uuid,
    pub object_id: String,
    pub reason: InactiveReason,
    /// `pending`, `held`, `applied`, `discarded` or `dropped` (stale when an admin applied
    /// the hold; `drop_reason` says why).
    pub state: String,
    /// `seen_by_later_run`, `relinked`, `locked` or `already_inactive` for a dropped one.
    pub drop_reason: Option<String>,
}

/// How a managed tenant's sync ended ([`Store::finish_tenant_sync`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantFinish {
    pub inactivations: InactivationOutcome,
    /// The tenant result's status: `completed`, or `needs_confirmation` when inactivations
    /// are held; the stored status if the result had already ended.
    pub status: TenantResultStatus,
}

#[derive(FromRow)]
struct AbsentRow {
    object_id: String,
    #[sqlx(flatten)]
    contact: ContactRow,
}

/// `apply_inactivations`' statement (`$1` tenant, `$2` run, `$3` managed tenant, `$4` the state
/// applied, `$5` who decided). The contacts' tenant is compared through a sub-select (the crate
/// docs say why): when the statistics took the PSA tenant for one contact, the planner could
/// read its contacts first and scan every decided row for each of them.
pub(crate) const APPLY_INACTIVATIONS: &str = "WITH decided AS (
         UPDATE pending_inactivations SET state = 'applied', decided_at = now(), decided_by = $5
         WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND state = $4
         RETURNING contact_id, object_id, reason
     ), updated AS (
         UPDATE contacts c SET is_active = false, inactive_reason = d.reason, updated_at = now()
         FROM decided d
         WHERE c.tenant_id = (SELECT $1::uuid) AND c.contact_id = d.contact_id AND c.is_active
           AND NOT c.sync_locked
         RETURNING c.contact_id, d.object_id, d.reason
     )
     INSERT INTO contact_changes (tenant_id, run_id, managed_tenant_id, object_id, contact_id,
                                  action, before, after)
     SELECT $1, $2, $3, object_id, contact_id, 'inactivate',
            jsonb_build_object('is_active', true),
            jsonb_build_object('is_active', false, 'inactive_reason', reason)
     FROM updated";

/// Applies the inactivations of (run, managed tenant) in `from_state` to their contacts (those
/// still active and not locked), with audit rows; returns how many contacts changed.
async fn apply_inactivations(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    managed_tenant_id: Uuid,
    from_state: &str,
    decided_by: Option<&str>,
) -> Result<u64> {
    Ok(sqlx::query(APPLY_INACTIVATIONS)
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .bind(from_state)
        .bind(decided_by)
        .execute(connection)
        .await?
        .rows_affected())
}

/// Adds applied inactivations to a tenant result's counts (in `status`).
async fn add_inactivated(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    managed_tenant_id: Uuid,
    inactivated: u64,
    status: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE run_tenant_results
         SET counts = add_counts(counts, jsonb_build_object('inactivated', $4::bigint))
         WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND status = $5",
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(managed_tenant_id)
    .bind(i64::try_from(inactivated).unwrap_or(i64::MAX))
    .bind(status)
    .execute(connection)
    .await?;
    Ok(())
}

/// `drop_stale_held`'s statement (`$1` tenant, `$2` the run that held, `$3` managed tenant).
/// Each held row is judged once and updated by its row id, and the object ids later runs saw
/// are one hashed set (`IN`): however few rows the statistics expect (a run's held rows never
/// are in them when an admin applies), no step compares every held row with every other or
/// with every seen id. Joined back by key, the update was planned as such a comparison of the
/// held rows with themselves when the statistics expected one row: 111 s for 20,000 held
/// users, against 0.2 s.
pub(crate) const DROP_STALE_HELD: &str = "WITH later_seen AS (
         SELECT object_id
         FROM run_seen s
         JOIN runs later ON later.tenant_id = s.tenant_id AND later.run_id = s.run_id
         CROSS JOIN LATERAL unnest(s.object_ids) AS object_id
         WHERE s.tenant_id = $1 AND s.managed_tenant_id = $3 AND s.run_id <> $2
           AND later.started_at > (SELECT started_at FROM runs held
                                   WHERE held.tenant_id = $1 AND held.run_id = $2)
     ), judged AS (
         SELECT p.ctid AS row_id,
                CASE
                    WHEN p.object_id IN (SELECT object_id FROM later_seen)
                        THEN 'seen_by_later_run'
                    WHEN NOT EXISTS (SELECT 1 FROM links l
                                     WHERE l.tenant_id = p.tenant_id
                                       AND l.managed_tenant_id = p.managed_tenant_id
                                       AND l.object_id = p.object_id
                                       AND l.contact_id = p.contact_id)
                        THEN 'relinked'
                    WHEN c.sync_locked THEN 'locked'
                    WHEN NOT c.is_active THEN 'already_inactive'
                END AS reason
         FROM pending_inactivations p
         JOIN contacts c ON c.tenant_id = (SELECT $1::uuid) AND c.contact_id = p.contact_id
         WHERE p.tenant_id = $1 AND p.run_id = $2 AND p.managed_tenant_id = $3
           AND p.state = 'held'
     )
     UPDATE pending_inactivations p SET state = 'dropped', drop_reason = j.reason,
            decided_at = now()
     FROM judged j
     WHERE p.ctid = j.row_id AND j.reason IS NOT NULL";

/// Re-checks held inactivations before an admin's apply: one whose user a later run saw, whose
/// contact was relinked (or unlinked) or locked since, or is already inactive, is dropped from
/// the hold with the reason instead of applied.
async fn drop_stale_held(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    managed_tenant_id: Uuid,
) -> Result<u64> {
    Ok(sqlx::query(DROP_STALE_HELD)
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .execute(connection)
        .await?
        .rows_affected())
}

/// The linked users of a managed tenant a complete enumeration did not see (`$1` tenant, `$2`
/// managed tenant, `$3` run), with their contacts; links this run made are never absent. The
/// run's object ids are unnested from its `run_seen` rows into a hashed set once, and each
/// link is looked up in it. Written as `NOT EXISTS`, the planner made that an anti join, and
/// whenever the statistics put the managed tenant at a single link (analyzed when the table
/// was nearly empty, or before this PSA tenant existed) a nested-loop one, which unnests every
/// object id the run saw again for each link: a pass that grows with the square of the
/// tenant's size. `NOT IN` over a set with no NULLs (object ids never are) means the same, and
/// its subquery is hashed whatever the links are thought to be. The tenant and managed tenant
/// are compared through sub-selects, as the page's reads are (the crate docs say why).
pub(crate) const ABSENT_USERS: &str = "WITH seen AS (
         SELECT object_id
         FROM run_seen s CROSS JOIN LATERAL unnest(s.object_ids) AS object_id
         WHERE s.tenant_id = $1 AND s.managed_tenant_id = $2 AND s.run_id = $3
     )
     SELECT l.object_id, c.contact_id, c.client_id, c.full_name, c.email, c.phone,
            c.mobile, c.job_title, c.is_active, c.inactive_reason, c.sync_locked
     FROM links l
     JOIN contacts c ON c.tenant_id = l.tenant_id AND c.contact_id = l.contact_id
     WHERE l.tenant_id = (SELECT $1::uuid) AND l.managed_tenant_id = (SELECT $2::uuid)
       AND l.created_at < coalesce(
           (SELECT started_at FROM run_tenant_results
            WHERE tenant_id = $1 AND run_id = $3 AND managed_tenant_id = $2),
           (SELECT started_at FROM runs WHERE tenant_id = $1 AND run_id = $3))
       AND l.object_id NOT IN (SELECT object_id FROM seen)";

impl Store {
    /// Ends a managed tenant's inactivations for a run. With `complete_enumeration` (a full
    /// enumeration that reached its last page, the provider having said so) every link that
    /// existed before this run began syncing the tenant and whose user this run did not see
    /// (`run_seen`) is queued as `deleted_upstream`; a link made meanwhile (by a review
    /// resolution, say) is never judged by an enumeration that started before it. An
    /// enumeration that did not finish never inactivates anyone this way. The applied
    /// inactivations are added to the tenant result's counts in the same transaction. Then, if the queued inactivations trip the guard (more than 20% and
    /// more than 10 of the tenant's links), they are held; otherwise they are applied.
    /// Calling it again for the same run changes nothing more.
    pub async fn finish_tenant_inactivations(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        complete_enumeration: bool,
    ) -> Result<InactivationOutcome> {
        let mut transaction = begin_locked(&self.pool, tenant_id, &[managed_tenant_id]).await?;

        if complete_enumeration {
            let absent: Vec<AbsentRow> = sqlx::query_as(ABSENT_USERS)
                .bind(tenant_id)
                .bind(managed_tenant_id)
                .bind(run_id)
                .fetch_all(&mut *transaction)
                .await?;
            let mut absent_links = Vec::with_capacity(absent.len());
            let mut contacts = BTreeMap::new();
            for row in absent {
                let contact = row.contact.into_contact();
                absent_links.push(Link {
                    managed_tenant_id,
                    object_id: row.object_id,
                    contact_id: contact.contact_id,
                });
                contacts.insert(contact.contact_id, contact);
            }
            let mut contact_ids = Vec::new();
            let mut object_ids = Vec::new();
            for action in plan_absent(&absent_links, &contacts).actions {
                if let Action::Inactivate {
                    object_id,
                    contact_id,
                    ..
                } = action
                {
                    contact_ids.push(contact_id);
                    object_ids.push(object_id);
                }
            }
            sqlx::query(
                "INSERT INTO pending_inactivations (tenant_id, run_id, managed_tenant_id,
                                                    contact_id, object_id, reason)
                 SELECT $1, $2, $3, contact_id, object_id, 'deleted_upstream'
                 FROM UNNEST($4::uuid[], $5::text[]) AS i(contact_id, object_id)
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(run_id)
            .bind(managed_tenant_id)
            .bind(&contact_ids)
            .bind(&object_ids)
            .execute(&mut *transaction)
            .await?;
        }

        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pending_inactivations
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3
               AND state = 'pending'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .fetch_one(&mut *transaction)
        .await?;

        let mut outcome = InactivationOutcome::default();
        if pending > 0 {
            // Only a tenant with inactivations pending needs its link count (the guard's
            // denominator); counting every tenant's links would cost each run a pass over them.
            let linked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM links WHERE tenant_id = $1 AND managed_tenant_id = $2",
            )
            .bind(tenant_id)
            .bind(managed_tenant_id)
            .fetch_one(&mut *transaction)
            .await?;
            let trips = inactivation_guard_trips(
                usize::try_from(pending).unwrap_or(usize::MAX),
                usize::try_from(linked).unwrap_or(usize::MAX),
            );
            if trips {
                sqlx::query(
                    "UPDATE pending_inactivations SET state = 'held'
                     WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3
                       AND state = 'pending'",
                )
                .bind(tenant_id)
                .bind(run_id)
                .bind(managed_tenant_id)
                .execute(&mut *transaction)
                .await?;
            } else {
                outcome.applied = apply_inactivations(
                    &mut transaction,
                    tenant_id,
                    run_id,
                    managed_tenant_id,
                    "pending",
                    None,
                )
                .await?;
            }
        }
        if outcome.applied > 0 {
            add_inactivated(
                &mut transaction,
                tenant_id,
                run_id,
                managed_tenant_id,
                outcome.applied,
                "running",
            )
            .await?;
        }
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pending_inactivations
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND state = 'held'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .fetch_one(&mut *transaction)
        .await?;
        outcome.held = u64::try_from(held).unwrap_or_default();
        transaction.commit().await?;
        Ok(outcome)
    }

    /// Ends a managed tenant's sync that read every page: saves the new delta link (if the
    /// provider gave one), settles the inactivations ([`Store::finish_tenant_inactivations`])
    /// and ends the tenant result as completed ([`Store::finish_tenant_result`]). Returns what
    /// the inactivations came to and the status written (or the stored one if the result had
    /// already ended).
    ///
    /// A sync that was not a complete enumeration and has no inactivation pending (most delta
    /// syncs: nothing was removed) does all three in one statement, under the managed tenant's
    /// lock so that a page transaction of another attempt cannot queue an inactivation the
    /// statement would miss. Otherwise the steps run one after another, each as on its own.
    pub async fn finish_tenant_sync(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        complete_enumeration: bool,
        delta_link: Option<(&str, DateTime<Utc>)>,
    ) -> Result<TenantFinish> {
        if !complete_enumeration {
            if let Some(finish) = self
                .finish_quiet_tenant(tenant_id, run_id, managed_tenant_id, delta_link)
                .await?
            {
                return Ok(finish);
            }
        }
        if let Some((link, issued_at)) = delta_link {
            self.save_delta_state(tenant_id, managed_tenant_id, link, issued_at)
                .await?;
        }
        let inactivations = self
            .finish_tenant_inactivations(tenant_id, run_id, managed_tenant_id, complete_enumeration)
            .await?;
        let status = self
            .finish_tenant_result(
                tenant_id,
                run_id,
                managed_tenant_id,
                TenantResultStatus::Completed,
                None,
            )
            .await?;
        Ok(TenantFinish {
            inactivations,
            status,
        })
    }

    /// [`Store::finish_tenant_sync`]'s one statement, when nothing is pending; None when
    /// something is (or the result row is missing), having changed nothing.
    async fn finish_quiet_tenant(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        delta_link: Option<(&str, DateTime<Utc>)>,
    ) -> Result<Option<TenantFinish>> {
        let mut transaction = begin_locked(&self.pool, tenant_id, &[managed_tenant_id]).await?;
        let finish = end_quietly(
            &mut transaction,
            tenant_id,
            run_id,
            managed_tenant_id,
            delta_link,
        )
        .await?;
        transaction.commit().await?;
        Ok(finish)
    }

    /// The inactivations a run queued for a managed tenant, in every state.
    pub async fn list_held_inactivations(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<Vec<HeldInactivation>> {
        let rows: Vec<(Uuid, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT contact_id, object_id, reason, state, drop_reason FROM pending_inactivations
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3
             ORDER BY object_id",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(contact_id, object_id, reason, state, drop_reason)| HeldInactivation {
                    contact_id,
                    object_id,
                    reason: InactiveReason::parse(&reason)
                        .unwrap_or(InactiveReason::DeletedUpstream),
                    state,
                    drop_reason,
                },
            )
            .collect())
    }

    /// An admin applies or discards the inactivations the guard held. Returns how many
    /// contacts were inactivated (apply) or how many inactivations were dropped (discard).
    /// `NotFound` when nothing is held for (run, managed tenant). The tenant result leaves
    /// `needs_confirmation` and counts the applied inactivations.
    pub async fn resolve_held_inactivations(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        action: HeldInactivationAction,
        decided_by: &str,
    ) -> Result<u64> {
        let mut transaction = begin_locked(&self.pool, tenant_id, &[managed_tenant_id]).await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pending_inactivations
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND state = 'held'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .fetch_one(&mut *transaction)
        .await?;
        if held == 0 {
            return Err(StoreError::NotFound);
        }
        let (changed, inactivated) = match action {
            HeldInactivationAction::Apply => {
                drop_stale_held(&mut transaction, tenant_id, run_id, managed_tenant_id).await?;
                let applied = apply_inactivations(
                    &mut transaction,
                    tenant_id,
                    run_id,
                    managed_tenant_id,
                    "held",
                    Some(decided_by),
                )
                .await?;
                (applied, applied)
            }
            HeldInactivationAction::Discard => {
                let discarded = sqlx::query(
                    "UPDATE pending_inactivations SET state = 'discarded', decided_at = now(),
                            decided_by = $4
                     WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3
                       AND state = 'held'",
                )
                .bind(tenant_id)
                .bind(run_id)
                .bind(managed_tenant_id)
                .bind(decided_by)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
                (discarded, 0)
            }
        };
        let confirmed = sqlx::query(
            "UPDATE run_tenant_results SET status = 'completed'
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3
               AND status = 'needs_confirmation'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if confirmed > 0 && inactivated > 0 {
            add_inactivated(
                &mut transaction,
                tenant_id,
                run_id,
                managed_tenant_id,
                inactivated,
                "completed",
            )
            .await?;
            // The run ended when the guard held these; its totals still say what it did.
            sqlx::query(
                "UPDATE runs SET totals = add_counts(coalesce(totals, '{}'::jsonb),
                                                     jsonb_build_object('inactivated', $3::bigint))
                 WHERE tenant_id = $1 AND run_id = $2 AND status <> 'running'",
            )
            .bind(tenant_id)
            .bind(run_id)
            .bind(i64::try_from(inactivated).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(changed)
    }
}

/// Ends a managed tenant's sync on `connection`, which holds the tenant's lock, when nothing
/// is pending: saves the new delta link (if given) and finishes the tenant result, in one
/// statement. None when something is pending (or the result row is missing), having changed
/// nothing. Used by [`Store::finish_tenant_sync`] in a transaction of its own, and by the last
/// page of a delta round inside the page's transaction (`Store::reconcile_last_delta_page`).
pub(crate) async fn end_quietly(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    managed_tenant_id: Uuid,
    delta_link: Option<(&str, DateTime<Utc>)>,
) -> Result<Option<TenantFinish>> {
    let mut ends = end_all_quietly(
        connection,
        tenant_id,
        run_id,
        &[QuietEnd {
            managed_tenant_id,
            delta_link,
        }],
    )
    .await?;
    Ok(ends.remove(&managed_tenant_id).flatten())
}

/// A managed tenant for [`end_all_quietly`] to end, with its round's new delta link.
pub(crate) struct QuietEnd<'a> {
    pub managed_tenant_id: Uuid,
    pub delta_link: Option<(&'a str, DateTime<Utc>)>,
}

/// A row of [`end_all_quietly`]'s answer.
#[derive(FromRow)]
struct QuietEndRow {
    managed_tenant_id: Uuid,
    quiet: bool,
    held: i64,
    /// The status the statement gave the result, if it ended it.
    finished: Option<String>,
    /// The result's status before the statement.
    stored: Option<String>,
}

/// [`end_quietly`] for several managed tenants of one run in one statement; `connection`
/// holds all their locks. Each tenant is ended or left alone on its own, as `end_quietly`
/// would; the answer has an entry per tenant.
pub(crate) async fn end_all_quietly(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    tenants: &[QuietEnd<'_>],
) -> Result<BTreeMap<Uuid, Option<TenantFinish>>> {
    let managed_tenant_ids: Vec<Uuid> = tenants.iter().map(|end| end.managed_tenant_id).collect();
    let links: Vec<Option<&str>> = tenants
        .iter()
        .map(|end| end.delta_link.map(|(link, _)| link))
        .collect();
    let issued: Vec<Option<DateTime<Utc>>> = tenants
        .iter()
        .map(|end| end.delta_link.map(|(_, issued_at)| issued_at))
        .collect();
    // `stored` is the status before this statement: the answer when the result had
    // already ended, as `finish_tenant_result` gives it.
    let rows: Vec<QuietEndRow> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM UNNEST($3::uuid[], $4::text[], $5::timestamptz[])
                      AS i(managed_tenant_id, delta_link, issued_at)
         ), state AS (
             SELECT i.*,
                    NOT EXISTS (SELECT 1 FROM pending_inactivations p
                                WHERE p.tenant_id = $1 AND p.run_id = $2
                                  AND p.managed_tenant_id = i.managed_tenant_id
                                  AND p.state = 'pending')
                    AND EXISTS (SELECT 1 FROM run_tenant_results r
                                WHERE r.tenant_id = $1 AND r.run_id = $2
                                  AND r.managed_tenant_id = i.managed_tenant_id) AS quiet,
                    (SELECT count(*) FROM pending_inactivations p
                     WHERE p.tenant_id = $1 AND p.run_id = $2
                       AND p.managed_tenant_id = i.managed_tenant_id
                       AND p.state = 'held') AS held,
                    (SELECT status FROM run_tenant_results r
                     WHERE r.tenant_id = $1 AND r.run_id = $2
                       AND r.managed_tenant_id = i.managed_tenant_id) AS stored
             FROM input i
         ), saved AS (
             INSERT INTO delta_state (tenant_id, managed_tenant_id, delta_link, issued_at)
             SELECT $1, managed_tenant_id, delta_link, issued_at FROM state
             WHERE quiet AND delta_link IS NOT NULL
             ORDER BY managed_tenant_id
             ON CONFLICT (tenant_id, managed_tenant_id) DO UPDATE SET
                 delta_link = excluded.delta_link, issued_at = excluded.issued_at,
                 updated_at = now()
         ), finished AS (
             UPDATE run_tenant_results r SET
                 status = CASE WHEN s.held > 0 THEN 'needs_confirmation' ELSE 'completed' END,
                 error = NULL, finished_at = now()
             FROM state s
             WHERE r.tenant_id = $1 AND r.run_id = $2 AND r.managed_tenant_id = s.managed_tenant_id
               AND r.status = 'running' AND s.quiet
             RETURNING r.managed_tenant_id, r.status
         )
         SELECT s.managed_tenant_id, s.quiet, s.held, f.status AS finished, s.stored
         FROM state s LEFT JOIN finished f USING (managed_tenant_id)",
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(&managed_tenant_ids)
    .bind(&links)
    .bind(&issued)
    .fetch_all(&mut *connection)
    .await?;
    let mut ends = BTreeMap::new();
    for row in rows {
        let QuietEndRow {
            managed_tenant_id,
            quiet,
            held,
            finished,
            stored,
        } = row;
        let end = match quiet.then_some(finished.or(stored)).flatten() {
            Some(status) => Some(TenantFinish {
                inactivations: InactivationOutcome {
                    applied: 0,
                    held: u64::try_from(held).unwrap_or_default(),
                },
                status: parse_tenant_status(&status)?,
            }),
            None => None,
        };
        ends.insert(managed_tenant_id, end);
    }
    Ok(ends)
}
