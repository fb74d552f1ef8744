//! Queries for the worker's housekeeping: the runs still marked `running`, across every PSA
//! tenant, so the run reconciler can compare them with their Temporal workflows.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::runs::RunKind;
use crate::{Result, Store};

/// A run whose row says `running`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningRun {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
    pub kind: RunKind,
    /// None while the starter has not recorded it yet (or never will, after a crash).
    pub workflow_id: Option<String>,
    pub started_at: DateTime<Utc>,
}

/// A `runs` row as `running_runs` selects it.
type RunningRow = (Uuid, Uuid, String, Option<String>, DateTime<Utc>);

impl Store {
    /// Every `running` run, oldest first. Served by the partial index behind
    /// `runs_one_running_per_scope`, so it stays cheap however long the run history grows.
    pub async fn running_runs(&self) -> Result<Vec<RunningRun>> {
        let rows: Vec<RunningRow> = sqlx::query_as(
            "SELECT tenant_id, run_id, kind, workflow_id, started_at FROM runs
             WHERE status = 'running' ORDER BY started_at",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(tenant_id, run_id, kind, workflow_id, started_at)| {
                Some(RunningRun {
                    tenant_id,
                    run_id,
                    kind: RunKind::parse(&kind)?,
                    workflow_id,
                    started_at,
                })
            })
            .collect())
    }
}
