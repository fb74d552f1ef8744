//! The database gauges of `/metrics` after real runs: runs by kind and status, and the review
//! backlog (and the sync's step timings), read by `telemetry::refresh_database_gauges` (which the API process runs every 30
//! seconds) and rendered by the process's Prometheus recorder — with no PSA-tenant label.

use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync::telemetry;
use entra_sync_simulator::SimulatorConfig;

use crate::harness::Stack;
use crate::workflow_support::{prepare, start_sync, wait_finished};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_review_gauges_follow_the_database() -> Result<()> {
    let stack = Stack::start(SimulatorConfig {
        tenants: 2,
        users: 300,
        ..SimulatorConfig::default()
    })
    .await?;
    let handle = telemetry::recorder()?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(180)).await?;
            assert_eq!(run["status"], "completed", "{run}");

            telemetry::refresh_database_gauges(&stack.store).await?;
            let text = handle.render();
            let open_reviews = stack
                .count("SELECT count(*) FROM review_items WHERE status = 'open'")
                .await?;
            assert!(open_reviews > 0, "the data makes review items");
            assert_eq!(
                sample(&text, "entra_sync_runs{kind=\"sync\",status=\"completed\"}"),
                Some(1.0),
                "{text}"
            );
            assert_eq!(
                sample(
                    &text,
                    "entra_sync_runs{kind=\"discovery\",status=\"completed\"}"
                ),
                Some(1.0),
                "{text}"
            );
            assert_eq!(
                sample(&text, "entra_sync_runs{kind=\"sync\",status=\"running\"}"),
                Some(0.0),
                "{text}"
            );
            assert_eq!(
                sample(&text, "entra_sync_review_backlog"),
                Some(open_reviews as f64),
                "{text}"
            );
            let oldest = sample(&text, "entra_sync_review_backlog_oldest_seconds")
                .context("the oldest review item's age")?;
            assert!(oldest >= 0.0, "{text}");
            // Where the sync's time went, by step (tests in this process share the recorder,
            // so only presence is certain).
            for step in ["provider_read", "plan", "database"] {
                let count = sample(
                    &text,
                    &format!("entra_sync_sync_step_seconds_count{{step=\"{step}\"}}"),
                )
                .with_context(|| format!("no {step} step in {text}"))?;
                assert!(count >= 1.0, "{step}: {text}");
            }
            assert!(
                !text.contains(&prepared.tenant_id.to_string()),
                "a PSA tenant id in the metrics"
            );
            Ok(())
        })
        .await
}
