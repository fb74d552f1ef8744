//! The operator subcommands of the `entra-sync` binary, run as a separate process against the
//! API: sync with a followed progress display, runs, one run, the review queue, and creating
//! PSA tenants and users with the master key.

use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::SimulatorConfig;

use crate::harness::Stack;
use crate::workflow_support::{prepare, worker_binary};

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn cli(stack: &Stack, key: &str, args: &[&str]) -> Result<Output> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(worker_binary()?)
            .args(args)
            .env("ENTRA_SYNC_API_URL", &stack.api_url)
            .env("ENTRA_SYNC_API_KEY", key)
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .context("the command did not finish")??;
    Ok(Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_work_through_the_api() -> Result<()> {
    let stack = Stack::start(SimulatorConfig {
        tenants: 3,
        users: 450,
        ..SimulatorConfig::default()
    })
    .await?;
    stack
        .run(async {
            let prepared = prepare(&stack).await?;
            let key = prepared.admin_key.as_str();

            let synced = cli(&stack, key, &["sync", "--all"]).await?;
            assert!(synced.success, "{}{}", synced.stdout, synced.stderr);
            assert!(synced.stdout.contains("started run "), "{}", synced.stdout);
            assert!(
                synced.stdout.contains("completed: 3/3 tenants finished"),
                "{}",
                synced.stdout
            );
            let run_id = synced
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix("started run "))
                .context("no run id printed")?
                .trim()
                .to_owned();

            let runs = cli(&stack, key, &["runs"]).await?;
            assert!(
                runs.success && runs.stdout.contains(&run_id),
                "{}{}",
                runs.stdout,
                runs.stderr
            );
            let run = cli(&stack, key, &["run", &run_id]).await?;
            assert!(run.success, "{}", run.stderr);
            assert!(
                run.stdout
                    .starts_with(&format!("run {run_id} (sync manual, all) completed")),
                "{}",
                run.stdout
            );
            let tenant_lines = run
                .stdout
                .lines()
                .skip(1)
                .filter(|line| line.contains(" completed "))
                .count();
            assert_eq!(tenant_lines, 3, "{}", run.stdout);

            let open: i64 =
                sqlx::query_scalar("SELECT count(*) FROM review_items WHERE status = 'open'")
                    .fetch_one(&stack.pool)
                    .await?;
            assert!(open > 0, "the seeding queues someone for review");
            let listed = cli(&stack, key, &["review", "list"]).await?;
            assert!(listed.success, "{}", listed.stderr);
            let item_id = listed
                .stdout
                .lines()
                .find(|line| line.contains("multiple_candidates"))
                .and_then(|line| line.split_whitespace().next())
                .context("no review item listed")?
                .to_owned();
            let dismissed = cli(
                &stack,
                key,
                &[
                    "review",
                    "resolve",
                    &item_id,
                    "--dismiss",
                    "duplicate contacts",
                ],
            )
            .await?;
            assert!(
                dismissed.success && dismissed.stdout.contains("dismissed"),
                "{}{}",
                dismissed.stdout,
                dismissed.stderr
            );
            let status: String =
                sqlx::query_scalar("SELECT status FROM review_items WHERE item_id = $1::uuid")
                    .bind(&item_id)
                    .fetch_one(&stack.pool)
                    .await?;
            assert_eq!(status, "dismissed");

            let tenant = cli(&stack, &stack.master_key, &["create-tenant", "Second MSP"]).await?;
            assert!(tenant.success, "{}", tenant.stderr);
            let tenant_id = tenant
                .stdout
                .split_whitespace()
                .nth(1)
                .context("no tenant id printed")?
                .to_owned();
            let user = cli(
                &stack,
                &stack.master_key,
                &[
                    "create-user",
                    "--tenant",
                    &tenant_id,
                    "--email",
                    "ops@second.example",
                    "--permission",
                    "system_settings.read",
                ],
            )
            .await?;
            assert!(
                user.success && user.stdout.contains("esk_"),
                "{}{}",
                user.stdout,
                user.stderr
            );

            // A wrong key fails with the API's message and a non-zero exit.
            let refused = cli(&stack, "esk_not-a-key", &["runs"]).await?;
            assert!(!refused.success);
            assert!(refused.stderr.contains("401"), "{}", refused.stderr);
            Ok(())
        })
        .await
}
