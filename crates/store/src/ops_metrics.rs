//! Aggregates for the operations gauges (`/metrics`): runs by kind and status, and the review
//! backlog. Across all PSA tenants on purpose: metrics carry no tenant label (a label per
//! tenant would grow without bound and name customers in a monitoring system).

use crate::{Result, Store};

/// Runs per (kind, status): every run still running, and those that finished in the last
/// 24 hours (so the gauge shows recent outcomes without counting the whole history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatusCount {
    pub kind: String,
    pub status: String,
    pub count: i64,
}

/// Open review items: how many, and how old the oldest is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReviewBacklog {
    pub open: i64,
    pub oldest_age_seconds: f64,
}

impl Store {
    pub async fn run_status_counts(&self) -> Result<Vec<RunStatusCount>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, status, count(*) FROM runs
             WHERE status = 'running' OR finished_at > now() - interval '24 hours'
             GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, status, count)| RunStatusCount {
                kind,
                status,
                count,
            })
            .collect())
    }

    pub async fn review_backlog(&self) -> Result<ReviewBacklog> {
        let (open, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
             FROM review_items WHERE status = 'open'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ReviewBacklog {
            open,
            oldest_age_seconds: oldest.unwrap_or(0.0),
        })
    }
}
