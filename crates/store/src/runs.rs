//! Runs (discovery and sync) and their per-managed-tenant results, deduplication of runs of
//! the same scope, and the managed tenants a sync run covers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use entra_sync_domain::model::{SkipReason, Tally};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::error::StoreError;
use crate::page::{decode_time_cursor, encode_time_cursor, into_page, Page, PageRequest};
use crate::{Result, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    Discovery,
    Sync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunTrigger {
    Initial,
    Manual,
    Scheduled,
}

/// All mapped tenants, or the tenants mapped to one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunScope {
    All,
    Client(Uuid),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Completed,
    Partial,
    Failed,
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Delta,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantResultStatus {
    Running,
    Completed,
    Failed,
    NeedsConfirmation,
    Cancelled,
}

macro_rules! text_enum {
    ($type:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $($type::$variant => $text),+ }
            }

            pub fn parse(value: &str) -> Option<$type> {
                match value { $($text => Some($type::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(RunKind { Discovery => "discovery", Sync => "sync" });
text_enum!(RunTrigger { Initial => "initial", Manual => "manual", Scheduled => "scheduled" });
text_enum!(RunStatus {
    Running => "running",
    Completed => "completed",
    Partial => "partial",
    Failed => "failed",
    Cancelled => "cancelled",
});
text_enum!(SyncMode { Delta => "delta", Full => "full" });
text_enum!(TenantResultStatus {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    NeedsConfirmation => "needs_confirmation",
    Cancelled => "cancelled",
});

fn parse_or_invalid<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T> {
    parse(value).ok_or_else(|| StoreError::Invalid(format!("unknown {what} {value:?}")))
}

/// A stored tenant result status.
pub(crate) fn parse_tenant_status(value: &str) -> Result<TenantResultStatus> {
    parse_or_invalid(value, TenantResultStatus::parse, "tenant status")
}

/// A run to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub tenant_id: Uuid,
    pub kind: RunKind,
    pub trigger: RunTrigger,
    pub scope: RunScope,
    pub requested_by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartRunOutcome {
    pub run_id: Uuid,
    /// True when a run of the same tenant, kind and scope was already running: `run_id` is
    /// that run and nothing new was started.
    pub deduplicated: bool,
}

/// Counts of a tenant result (and, summed, a run's totals) in the API's JSON shape:
/// `{seen, eligible, created, linked, updated, inactivated, reactivated, queued, errors,
/// skipped: {reason: n}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TallyCounts {
    pub seen: u64,
    pub eligible: u64,
    pub created: u64,
    pub linked: u64,
    pub updated: u64,
    pub inactivated: u64,
    pub reactivated: u64,
    pub queued: u64,
    pub errors: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl From<&Tally> for TallyCounts {
    fn from(tally: &Tally) -> TallyCounts {
        TallyCounts {
            seen: tally.seen,
            eligible: tally.eligible,
            created: tally.created,
            linked: tally.linked,
            updated: tally.updated,
            inactivated: tally.inactivated,
            reactivated: tally.reactivated,
            queued: tally.queued,
            errors: tally.errors,
            skipped: tally
                .skipped
                .iter()
                .map(|(reason, count)| (reason.as_str().to_owned(), *count))
                .collect(),
        }
    }
}

impl From<&TallyCounts> for Tally {
    /// The stored counts back as a tally; reasons this build does not know are dropped.
    fn from(counts: &TallyCounts) -> Tally {
        Tally {
            seen: counts.seen,
            eligible: counts.eligible,
            created: counts.created,
            linked: counts.linked,
            updated: counts.updated,
            inactivated: counts.inactivated,
            reactivated: counts.reactivated,
            queued: counts.queued,
            errors: counts.errors,
            skipped: counts
                .skipped
                .iter()
                .filter_map(|(reason, count)| {
                    SkipReason::parse(reason).map(|reason| (reason, *count))
                })
                .collect(),
        }
    }
}

impl TallyCounts {
    pub fn add(&mut self, other: &TallyCounts) {
        self.seen += other.seen;
        self.eligible += other.eligible;
        self.created += other.created;
        self.linked += other.linked;
        self.updated += other.updated;
        self.inactivated += other.inactivated;
        self.reactivated += other.reactivated;
        self.queued += other.queued;
        self.errors += other.errors;
        for (reason, count) in &other.skipped {
            *self.skipped.entry(reason.clone()).or_default() += count;
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantResultRecord {
    pub managed_tenant_id: Uuid,
    pub status: TenantResultStatus,
    pub mode: SyncMode,
    pub counts: TallyCounts,
    /// `{class, code, message, remediation}` or None.
    pub error: Option<serde_json::Value>,
    /// The last page cursor saved for resumption.
    pub cursor: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
    pub kind: RunKind,
    pub trigger: RunTrigger,
    pub scope: RunScope,
    pub status: RunStatus,
    pub requested_by: Option<String>,
    pub workflow_id: Option<String>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub totals: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    /// Tenant results, ordered by start time.
    pub tenants: Vec<TenantResultRecord>,
}

/// A managed tenant a sync run covers: mapped (or mapped by creating a client) and active.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct SyncTarget {
    pub managed_tenant_id: Uuid,
    pub entra_tenant_id: String,
    pub client_id: Uuid,
    /// When the stored delta link was issued, if there is one and the connection is direct (a
    /// CIPP connection reads every user each run, whatever delta state an earlier direct
    /// connection left behind).
    pub delta_link_issued_at: Option<DateTime<Utc>>,
    /// At most [`FEW_USERS`] of the managed tenant's directory users are linked (none before
    /// its first sync); false, uncounted, for a target with a fresh delta link when the caller
    /// says which are fresh ([`Store::sync_targets_page`]).
    pub few_users: bool,
}

/// The most linked users a tenant may have and still count as having few
/// ([`SyncTarget::few_users`]).
pub const FEW_USERS: i64 = 1_000;

#[derive(FromRow)]
struct RunRow {
    tenant_id: Uuid,
    run_id: Uuid,
    kind: String,
    trigger: String,
    scope: String,
    client_id: Option<Uuid>,
    status: String,
    requested_by: Option<String>,
    workflow_id: Option<String>,
    cancel_requested_at: Option<DateTime<Utc>>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    totals: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

pub(crate) const RUN_COLUMNS: &str =
    "tenant_id, run_id, kind, trigger, scope, client_id, status, requested_by, \
     workflow_id, cancel_requested_at, started_at, finished_at, totals, error";

impl RunRow {
    fn into_record(self) -> Result<RunRecord> {
        let scope = match (self.scope.as_str(), self.client_id) {
            ("client", Some(client_id)) => RunScope::Client(client_id),
            _ => RunScope::All,
        };
        Ok(RunRecord {
            tenant_id: self.tenant_id,
            run_id: self.run_id,
            kind: parse_or_invalid(&self.kind, RunKind::parse, "run kind")?,
            trigger: parse_or_invalid(&self.trigger, RunTrigger::parse, "run trigger")?,
            scope,
            status: parse_or_invalid(&self.status, RunStatus::parse, "run status")?,
            requested_by: self.requested_by,
            workflow_id: self.workflow_id,
            cancel_requested_at: self.cancel_requested_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            totals: self.totals,
            error: self.error,
            tenants: Vec::new(),
        })
    }
}

#[derive(FromRow)]
struct TenantResultRow {
    run_id: Uuid,
    managed_tenant_id: Uuid,
    status: String,
    mode: String,
    counts: serde_json::Value,
    error: Option<serde_json::Value>,
    cursor: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// The `WITH` items that open run `$3`'s results for the managed tenants `tenants` selects
/// (a query of `managed_tenant_id`s) of PSA tenant `$1`, in mode `$4`: `result` holds each
/// result inserted now or, on a retry, the one an earlier attempt opened (a retry keeps its
/// saved cursor and mode). A result opened now is in `inserted` only, one opened before in
/// the statement's snapshot only, so none comes twice.
fn open_tenant_results(tenants: &str) -> String {
    format!(
        "inserted AS (
             INSERT INTO run_tenant_results (tenant_id, run_id, managed_tenant_id, mode)
             SELECT $1, $3, managed_tenant_id, $4 FROM ({tenants}) AS opened
             ON CONFLICT (tenant_id, run_id, managed_tenant_id) DO NOTHING
             RETURNING {TENANT_RESULT_COLUMNS}
         ), result AS (
             SELECT {TENANT_RESULT_COLUMNS} FROM inserted
             UNION ALL
             SELECT {TENANT_RESULT_COLUMNS} FROM run_tenant_results
             WHERE tenant_id = $1 AND run_id = $3
               AND managed_tenant_id IN ({tenants})
         )"
    )
}

/// A tenant result's insert refused by its foreign key: the run does not exist.
fn run_missing(error: sqlx::Error) -> StoreError {
    match StoreError::from(error) {
        StoreError::Invalid(_) => StoreError::NotFound,
        other => other,
    }
}

/// How [`Store::end_run`] left a run: whether this call ended it, and its status.
struct RunEnded {
    ended_now: bool,
    status: RunStatus,
}

/// Drops what earlier runs saw (`run_seen`) of the managed tenants whose sync lease run `$2`
/// of PSA tenant `$1` still holds, once that run ended: nothing reads an ended run's rows
/// but the re-check of held inactivations, which reads the runs after the held one, and the
/// lease holder's are the latest. A tenant another run has leased since keeps every row; that
/// run drops them when it ends. Run after a run's end instead of when the next run takes the
/// lease, so no sync waits for it (a 50,000-user run leaves about fifty rows of a thousand
/// ids, some milliseconds to delete).
const DROP_EARLIER_SEEN: &str = "DELETE FROM run_seen s
     USING managed_tenant_sync_leases l
     WHERE l.tenant_id = $1 AND l.run_id = $2
       AND s.tenant_id = $1 AND s.managed_tenant_id = l.managed_tenant_id
       AND s.run_id <> $2";

/// What [`Store::take_lease_and_start`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum LeasedStart {
    /// Another run holds the managed tenant's sync lease.
    Held { holder: Uuid },
    /// This run holds the lease; its tenant result, opened now or by an earlier attempt.
    Started(TenantResultRecord),
}

const TENANT_RESULT_COLUMNS: &str =
    "run_id, managed_tenant_id, status, mode, counts, error, cursor, started_at, finished_at";

impl TenantResultRow {
    fn into_record(self) -> Result<TenantResultRecord> {
        Ok(TenantResultRecord {
            managed_tenant_id: self.managed_tenant_id,
            status: parse_or_invalid(&self.status, TenantResultStatus::parse, "tenant status")?,
            mode: parse_or_invalid(&self.mode, SyncMode::parse, "sync mode")?,
            counts: serde_json::from_value(self.counts).unwrap_or_default(),
            error: self.error,
            cursor: self.cursor,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

/// The final status of a sync run from its tenants' statuses: completed when every tenant
/// completed (a tenant waiting on held inactivations counts as completed), failed when every
/// tenant failed, cancelled when any was cancelled and none completed, partial otherwise. A
/// run with no tenants completed.
pub fn derive_run_status(tenant_statuses: &[TenantResultStatus]) -> RunStatus {
    let succeeded = |status: &&TenantResultStatus| {
        matches!(
            status,
            TenantResultStatus::Completed | TenantResultStatus::NeedsConfirmation
        )
    };
    let total = tenant_statuses.len();
    let completed = tenant_statuses.iter().filter(succeeded).count();
    let failed = tenant_statuses
        .iter()
        .filter(|status| **status == TenantResultStatus::Failed)
        .count();
    let cancelled = tenant_statuses
        .iter()
        .filter(|status| **status == TenantResultStatus::Cancelled)
        .count();
    if completed == total {
        RunStatus::Completed
    } else if failed == total {
        RunStatus::Failed
    } else if cancelled > 0 && completed == 0 {
        RunStatus::Cancelled
    } else {
        RunStatus::Partial
    }
}

impl Store {
    /// Starts a run, unless a run of the same tenant, kind and scope is already running: then
    /// that run is returned with `deduplicated: true`. Race-safe: the partial unique index
    /// `runs_one_running_per_scope` admits one running run per scope, and a loser of the race
    /// finds the winner.
    pub async fn start_run(&self, new_run: &NewRun) -> Result<StartRunOutcome> {
        let (scope, client_id) = match new_run.scope {
            RunScope::All => ("all", None),
            RunScope::Client(client_id) => ("client", Some(client_id)),
        };
        // Each round either inserts or finds a running run; a round finds neither only when
        // the running run finished in between, which cannot repeat forever in practice.
        for _ in 0..16 {
            let inserted: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO runs (tenant_id, run_id, kind, trigger, scope, client_id, requested_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant_id, kind, scope,
                              coalesce(client_id, '00000000-0000-0000-0000-000000000000'::uuid))
                     WHERE status = 'running'
                 DO NOTHING
                 RETURNING run_id",
            )
            .bind(new_run.tenant_id)
            .bind(Uuid::now_v7())
            .bind(new_run.kind.as_str())
            .bind(new_run.trigger.as_str())
            .bind(scope)
            .bind(client_id)
            .bind(new_run.requested_by.as_deref())
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| match StoreError::from(error) {
                StoreError::Invalid(constraint) if constraint.contains("client") => {
                    StoreError::Invalid("unknown_client".to_owned())
                }
                other => other,
            })?;
            if let Some(run_id) = inserted {
                return Ok(StartRunOutcome {
                    run_id,
                    deduplicated: false,
                });
            }
            let running: Option<Uuid> = sqlx::query_scalar(
                "SELECT run_id FROM runs
                 WHERE tenant_id = $1 AND kind = $2 AND scope = $3
                   AND client_id IS NOT DISTINCT FROM $4 AND status = 'running'",
            )
            .bind(new_run.tenant_id)
            .bind(new_run.kind.as_str())
            .bind(scope)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(run_id) = running {
                return Ok(StartRunOutcome {
                    run_id,
                    deduplicated: true,
                });
            }
        }
        Err(StoreError::Conflict("run_start_contention".to_owned()))
    }

    pub async fn set_run_workflow_id(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        workflow_id: &str,
    ) -> Result<()> {
        let updated =
            sqlx::query("UPDATE runs SET workflow_id = $3 WHERE tenant_id = $1 AND run_id = $2")
                .bind(tenant_id)
                .bind(run_id)
                .bind(workflow_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Marks a running run as asked to cancel (the caller then cancels its workflow); returns
    /// the run. A finished run is returned unchanged.
    pub async fn request_run_cancel(&self, tenant_id: Uuid, run_id: Uuid) -> Result<RunRecord> {
        sqlx::query(
            "UPDATE runs SET cancel_requested_at = coalesce(cancel_requested_at, now())
             WHERE tenant_id = $1 AND run_id = $2 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        self.get_run(tenant_id, run_id).await
    }

    /// Ends a running run: writes its status, error, finish time and totals (the sum of its
    /// tenant results' counts, when it has any), and ends tenant results still `running` as
    /// `cancelled` (run cancelled) or `failed`. Returns false and changes nothing when the run
    /// had already finished: a finished run's history is never rewritten.
    pub async fn finish_run(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        status: RunStatus,
        error: Option<&serde_json::Value>,
    ) -> Result<bool> {
        let ended = self.end_run(tenant_id, run_id, Some(status), error).await?;
        Ok(ended.ended_now)
    }

    /// [`Store::finish_run`] with the status the run's tenant results give it
    /// ([`derive_run_status`], a tenant still `running` counting as not completed) unless
    /// `forced`; returns the run's status after the call, which is the one it already had when
    /// it had finished before. One transaction of three statements, the run locked and its
    /// results' statuses read by the first, so a run's end costs few round trips.
    pub async fn finish_run_derived(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        forced: Option<RunStatus>,
        error: Option<&serde_json::Value>,
    ) -> Result<RunStatus> {
        Ok(self.end_run(tenant_id, run_id, forced, error).await?.status)
    }

    /// The one way a run ends ([`Store::finish_run`], [`Store::finish_run_derived`]). After the
    /// commit, what earlier runs saw of the managed tenants whose lease this run still holds is
    /// dropped ([`DROP_EARLIER_SEEN`]). A forced status must be a final one.
    async fn end_run(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        forced: Option<RunStatus>,
        error: Option<&serde_json::Value>,
    ) -> Result<RunEnded> {
        if forced == Some(RunStatus::Running) {
            return Err(StoreError::Invalid(
                "a run ends with a final status, not running".to_owned(),
            ));
        }
        let mut transaction = self.pool.begin().await?;
        // The run, locked, with its tenant results' statuses as they are before it ends.
        let current: Option<(String, Vec<String>)> = sqlx::query_as(
            "SELECT r.status,
                    ARRAY(SELECT t.status FROM run_tenant_results t
                          WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id)
             FROM runs r WHERE r.tenant_id = $1 AND r.run_id = $2 FOR UPDATE OF r",
        )
        .bind(tenant_id)
        .bind(run_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let tenant_statuses = match current {
            None => return Err(StoreError::NotFound),
            Some((current, tenant_statuses)) if current == "running" => tenant_statuses,
            Some((other, _)) => {
                return Ok(RunEnded {
                    ended_now: false,
                    status: parse_or_invalid(&other, RunStatus::parse, "run status")?,
                })
            }
        };
        let status = match forced {
            Some(status) => status,
            None => {
                let statuses = tenant_statuses
                    .iter()
                    .map(|status| parse_tenant_status(status))
                    .collect::<Result<Vec<_>>>()?;
                derive_run_status(&statuses)
            }
        };
        let leftover_status = if status == RunStatus::Cancelled {
            TenantResultStatus::Cancelled
        } else {
            TenantResultStatus::Failed
        };
        // Every result's counts, a leftover's as it ends (its trigger recounts `seen`).
        let results: Vec<serde_json::Value> = sqlx::query_scalar(
            "WITH leftover AS (
                 UPDATE run_tenant_results SET status = $3, finished_at = now(),
                        error = coalesce(error, jsonb_build_object(
                            'class', 'transient', 'code', 'run_ended',
                            'message', 'the run ended before this tenant finished',
                            'remediation', 'run the sync again'))
                 WHERE tenant_id = $1 AND run_id = $2 AND status = 'running'
                 RETURNING managed_tenant_id, counts
             )
             SELECT coalesce(l.counts, t.counts)
             FROM run_tenant_results t
             LEFT JOIN leftover l ON l.managed_tenant_id = t.managed_tenant_id
             WHERE t.tenant_id = $1 AND t.run_id = $2",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(leftover_status.as_str())
        .fetch_all(&mut *transaction)
        .await?;
        let totals = if results.is_empty() {
            None
        } else {
            let mut totals = TallyCounts::default();
            for counts in results {
                totals.add(&serde_json::from_value(counts).unwrap_or_default());
            }
            Some(totals.to_json())
        };
        sqlx::query(
            "UPDATE runs SET status = $3, error = $4, finished_at = now(),
                    totals = coalesce($5, totals)
             WHERE tenant_id = $1 AND run_id = $2 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(status.as_str())
        .bind(error)
        .bind(totals)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        // Garbage of ended runs, which nothing reads once this run's results ended: a failure
        // leaves it for the next run's end.
        if let Err(error) = sqlx::query(DROP_EARLIER_SEEN)
            .bind(tenant_id)
            .bind(run_id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%error, "could not drop what earlier runs saw; the next run's end will");
        }
        Ok(RunEnded {
            ended_now: true,
            status,
        })
    }

    /// A run with its tenant results.
    pub async fn get_run(&self, tenant_id: Uuid, run_id: Uuid) -> Result<RunRecord> {
        let row: RunRow = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND run_id = $2"
        ))
        .bind(tenant_id)
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut runs = vec![row.into_record()?];
        self.attach_tenant_results(tenant_id, &mut runs).await?;
        runs.pop().ok_or(StoreError::NotFound)
    }

    /// Runs newest first, optionally of one kind, each with its tenant results.
    pub async fn list_runs(
        &self,
        tenant_id: Uuid,
        kind: Option<RunKind>,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>> {
        let limit = page.effective_limit();
        let after = page.cursor.as_deref().map(decode_time_cursor).transpose()?;
        let list = crate::api_queries::runs_list_sql(
            tenant_id,
            kind.map(RunKind::as_str),
            after,
            limit + 1,
        );
        let rows: Vec<RunRow> = list.fetch_all(&self.pool).await?;
        let mut runs = rows
            .into_iter()
            .map(RunRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        self.attach_tenant_results(tenant_id, &mut runs).await?;
        Ok(into_page(runs, limit, |run: &RunRecord| {
            encode_time_cursor(run.started_at, run.run_id)
        }))
    }

    /// The newest run of a kind, if any (for the integration status page).
    pub async fn last_run(&self, tenant_id: Uuid, kind: RunKind) -> Result<Option<RunRecord>> {
        let page = self
            .list_runs(tenant_id, Some(kind), &PageRequest::first(1))
            .await?;
        Ok(page.items.into_iter().next())
    }

    async fn attach_tenant_results(&self, tenant_id: Uuid, runs: &mut [RunRecord]) -> Result<()> {
        let run_ids: Vec<Uuid> = runs.iter().map(|run| run.run_id).collect();
        let rows: Vec<TenantResultRow> = sqlx::query_as(&format!(
            "SELECT {TENANT_RESULT_COLUMNS} FROM run_tenant_results
             WHERE tenant_id = $1 AND run_id = ANY($2)
             ORDER BY started_at, managed_tenant_id"
        ))
        .bind(tenant_id)
        .bind(&run_ids)
        .fetch_all(&self.pool)
        .await?;
        let mut by_run: BTreeMap<Uuid, Vec<TenantResultRecord>> = BTreeMap::new();
        for row in rows {
            let run_id = row.run_id;
            by_run.entry(run_id).or_default().push(row.into_record()?);
        }
        for run in runs {
            run.tenants = by_run.remove(&run.run_id).unwrap_or_default();
        }
        Ok(())
    }

    /// Opens (or, on an activity retry, re-finds) a tenant result. A retry keeps the saved
    /// cursor so the sync can resume; a result that already ended is returned unchanged.
    pub async fn start_tenant_result(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        mode: SyncMode,
    ) -> Result<TenantResultRecord> {
        let row: TenantResultRow = sqlx::query_as(&format!(
            "WITH {} SELECT * FROM result",
            open_tenant_results("SELECT $2::uuid AS managed_tenant_id")
        ))
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .bind(run_id)
        .bind(mode.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(run_missing)?;
        row.into_record()
    }

    /// Changes the mode of a running tenant result (a delta link turned out expired and the
    /// sync fell back to a full enumeration).
    pub async fn set_tenant_result_mode(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        mode: SyncMode,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE run_tenant_results SET mode = $4
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .bind(mode.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Saves progress of a running tenant result: the cursor to resume from and the counts so
    /// far.
    pub async fn save_tenant_progress(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        cursor: Option<&str>,
        tally: &Tally,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE run_tenant_results SET cursor = $4, counts = $5
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .bind(cursor)
        .bind(TallyCounts::from(tally).to_json())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a running tenant result with its error, leaving its counts as the page
    /// transactions and the inactivation step wrote them (they are the counts' only writers, so
    /// retries and resumes cannot make the counts disagree with the audit). `Completed` is recorded as
    /// `NeedsConfirmation` when the run holds inactivations of this tenant for an admin.
    /// Returns the status written, or the stored one if the result had already ended.
    pub async fn finish_tenant_result(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        status: TenantResultStatus,
        error: Option<&serde_json::Value>,
    ) -> Result<TenantResultStatus> {
        if status == TenantResultStatus::Running {
            return Err(StoreError::Invalid(
                "finish_tenant_result needs a final status".to_owned(),
            ));
        }
        // A tenant that failed before its result was opened still gets a result row.
        sqlx::query(
            "INSERT INTO run_tenant_results (tenant_id, run_id, managed_tenant_id, mode)
             VALUES ($1, $2, $3, 'full')
             ON CONFLICT (tenant_id, run_id, managed_tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .execute(&self.pool)
        .await
        .map_err(|error| match StoreError::from(error) {
            StoreError::Invalid(_) => StoreError::NotFound,
            other => other,
        })?;
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE run_tenant_results SET
                 status = CASE
                     WHEN $4 = 'completed' AND EXISTS (
                         SELECT 1 FROM pending_inactivations p
                         WHERE p.tenant_id = $1 AND p.run_id = $2 AND p.managed_tenant_id = $3
                           AND p.state = 'held')
                     THEN 'needs_confirmation' ELSE $4 END,
                 error = $5, finished_at = now()
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3 AND status = 'running'
             RETURNING status",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .bind(status.as_str())
        .bind(error)
        .fetch_optional(&self.pool)
        .await?;
        let status = match status {
            Some(status) => status,
            None => {
                sqlx::query_scalar(
                    "SELECT status FROM run_tenant_results
                 WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3",
                )
                .bind(tenant_id)
                .bind(run_id)
                .bind(managed_tenant_id)
                .fetch_one(&self.pool)
                .await?
            }
        };
        parse_tenant_status(&status)
    }

    /// Takes the sync lease of a managed tenant for `run_id` (SPEC §5.7: at most one run syncs
    /// a managed tenant at a time, whatever the runs' scopes and workers) and, when taken,
    /// opens the run's tenant result as [`Store::start_tenant_result`] does, in one statement.
    /// The lease is free when nobody holds it, when this run holds it (an activity retry), or
    /// when its holder's run ended or the holder's result for this tenant ended. What earlier
    /// runs saw (`run_seen`) is dropped when this run ends ([`DROP_EARLIER_SEEN`]). A run that
    /// finds the lease held gets the holder and opens nothing.
    pub async fn take_lease_and_start(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
        run_id: Uuid,
        mode: SyncMode,
    ) -> Result<LeasedStart> {
        let mut starts = self
            .take_leases_and_start(tenant_id, &[managed_tenant_id], run_id, mode)
            .await?;
        match starts.remove(&managed_tenant_id) {
            Some(Some(start)) => Ok(start),
            // Another attempt of this run opened the result after this statement's snapshot.
            _ => Err(StoreError::NotFound),
        }
    }

    /// [`Store::take_lease_and_start`] for several managed tenants in one statement (the
    /// leases are taken in the tenants' order, so two such statements never deadlock). Each
    /// tenant's lease is taken or found held on its own. A tenant whose lease was taken but
    /// whose result another attempt of this run opened after this statement's snapshot maps
    /// to None: looking again finds it.
    pub async fn take_leases_and_start(
        &self,
        tenant_id: Uuid,
        managed_tenant_ids: &[Uuid],
        run_id: Uuid,
        mode: SyncMode,
    ) -> Result<BTreeMap<Uuid, Option<LeasedStart>>> {
        // When not taken, the holder is read from the statement's snapshot; a holder that
        // committed after it shows as this run, which only means looking again.
        let rows = sqlx::query(&format!(
            "WITH wanted AS (
                 SELECT DISTINCT managed_tenant_id FROM UNNEST($2::uuid[]) AS w(managed_tenant_id)
             ), taken AS (
                 INSERT INTO managed_tenant_sync_leases AS l (tenant_id, managed_tenant_id, run_id)
                 SELECT $1, managed_tenant_id, $3 FROM wanted ORDER BY managed_tenant_id
                 ON CONFLICT (tenant_id, managed_tenant_id) DO UPDATE
                     SET run_id = EXCLUDED.run_id, taken_at = now()
                     WHERE l.run_id = EXCLUDED.run_id
                        OR NOT EXISTS (SELECT 1 FROM runs r
                                       WHERE r.tenant_id = l.tenant_id AND r.run_id = l.run_id
                                         AND r.status = 'running')
                        OR EXISTS (SELECT 1 FROM run_tenant_results t
                                   WHERE t.tenant_id = l.tenant_id AND t.run_id = l.run_id
                                     AND t.managed_tenant_id = l.managed_tenant_id
                                     AND t.status <> 'running')
                 RETURNING managed_tenant_id
             ), {}
             SELECT w.managed_tenant_id AS wanted_id, t.managed_tenant_id IS NOT NULL AS taken,
                    (SELECT run_id FROM managed_tenant_sync_leases h
                     WHERE h.tenant_id = $1 AND h.managed_tenant_id = w.managed_tenant_id) AS holder,
                    result.*
             FROM wanted w
             LEFT JOIN taken t ON t.managed_tenant_id = w.managed_tenant_id
             LEFT JOIN result ON result.managed_tenant_id = w.managed_tenant_id",
            open_tenant_results("SELECT managed_tenant_id FROM taken")
        ))
        .bind(tenant_id)
        .bind(managed_tenant_ids)
        .bind(run_id)
        .bind(mode.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(run_missing)?;
        let mut starts = BTreeMap::new();
        for row in rows {
            let wanted: Uuid = row.try_get("wanted_id")?;
            let start = if !row.try_get::<bool, _>("taken")? {
                let holder: Option<Uuid> = row.try_get("holder")?;
                Some(LeasedStart::Held {
                    holder: holder.unwrap_or(run_id),
                })
            } else if row.try_get::<Option<String>, _>("status")?.is_none() {
                None
            } else {
                Some(LeasedStart::Started(
                    TenantResultRow::from_row(&row)?.into_record()?,
                ))
            };
            starts.insert(wanted, start);
        }
        Ok(starts)
    }

    /// The managed tenants a sync of `scope` covers: mapped to a client (directly or by
    /// creating one) and not missing, in a stable order.
    pub async fn sync_targets(&self, tenant_id: Uuid, scope: RunScope) -> Result<Vec<SyncTarget>> {
        self.sync_targets_page(tenant_id, scope, None, None, None)
            .await
    }

    /// A page of [`Store::sync_targets`]: the targets after `after` (by managed tenant id, the
    /// targets' order), at most `limit` of them. With `fresh_after`, a target whose delta link
    /// was issued after it syncs from that link and reads only what changed, so its links are
    /// not counted: its `few_users` is false, and no one asks (a sync of 200 small tenants
    /// spent 10 ms of its start counting 40,000 links).
    pub async fn sync_targets_page(
        &self,
        tenant_id: Uuid,
        scope: RunScope,
        after: Option<Uuid>,
        limit: Option<i64>,
        fresh_after: Option<DateTime<Utc>>,
    ) -> Result<Vec<SyncTarget>> {
        let client_id = match scope {
            RunScope::All => None,
            RunScope::Client(client_id) => Some(client_id),
        };
        // The link count stops at FEW_USERS + 1: a large tenant costs no more than that.
        let targets: Vec<SyncTarget> = sqlx::query_as(
            "SELECT mt.managed_tenant_id, mt.entra_tenant_id, m.client_id,
                    d.issued_at AS delta_link_issued_at,
                    CASE WHEN d.issued_at > $6 THEN false
                         ELSE (SELECT count(*) FROM (SELECT 1 FROM links l
                                                     WHERE l.tenant_id = m.tenant_id
                                                       AND l.managed_tenant_id = m.managed_tenant_id
                                                     LIMIT $5 + 1) AS linked) <= $5
                    END AS few_users
             FROM mappings m
             JOIN managed_tenants mt
               ON mt.tenant_id = m.tenant_id AND mt.managed_tenant_id = m.managed_tenant_id
             LEFT JOIN delta_state d
               ON d.tenant_id = m.tenant_id AND d.managed_tenant_id = m.managed_tenant_id
              AND EXISTS (SELECT 1 FROM connections c
                          WHERE c.tenant_id = m.tenant_id AND c.kind = 'direct')
             WHERE m.tenant_id = $1 AND m.decision IN ('mapped', 'create_client')
               AND m.client_id IS NOT NULL AND mt.status = 'active'
               AND ($2::uuid IS NULL OR m.client_id = $2)
               AND ($3::uuid IS NULL OR mt.managed_tenant_id > $3)
             ORDER BY mt.managed_tenant_id
             LIMIT $4",
        )
        .bind(tenant_id)
        .bind(client_id)
        .bind(after)
        .bind(limit)
        .bind(FEW_USERS)
        .bind(fresh_after)
        .fetch_all(&self.pool)
        .await?;
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TenantResultStatus::*;

    #[test]
    fn run_status_follows_tenant_results() {
        let cases: [(&[TenantResultStatus], RunStatus); 7] = [
            (&[], RunStatus::Completed),
            (&[Completed, Completed], RunStatus::Completed),
            (&[Completed, NeedsConfirmation], RunStatus::Completed),
            (&[Failed, Failed], RunStatus::Failed),
            (&[Completed, Failed], RunStatus::Partial),
            (&[Cancelled, Failed], RunStatus::Cancelled),
            (&[Completed, Cancelled], RunStatus::Partial),
        ];
        for (statuses, expected) in cases {
            assert_eq!(derive_run_status(statuses), expected, "{statuses:?}");
        }
    }
}
