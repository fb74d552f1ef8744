//! Crash test on a real Temporal server and Postgres: a 20,000-user tenant syncs while its
//! `entra-sync worker` process is killed with SIGKILL at three random page boundaries (each
//! after more pages have committed; the points are printed, and `ENTRA_SYNC_CRASH_POINTS`
//! replays a given set) and a new worker process is started each time. The run completes, resumes
//! from the committed cursor instead of starting over (the simulator sees one enumeration
//! start), and the final contacts, links, review items and counts equal those of an
//! uninterrupted run of the same data in a second database; the counts equal the audit rows.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use entra_sync_simulator::SimulatorConfig;
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{
    eventually, prepare, snapshot, start_sync, wait_finished, Prepared, Snapshot, WorkerProcess,
};

const USERS: usize = 20_000;
/// How many times the worker is killed in one run.
const KILLS: usize = 3;

/// The points at which the worker is killed: once this many users have been committed (pages
/// hold 999 users, so a point falls at a page boundary or inside the batch in flight). Three
/// distinct random points, at least two batches apart, between the first page and the last
/// few; `ENTRA_SYNC_CRASH_POINTS=a,b,c` replays a failing set.
fn kill_points() -> Result<Vec<i64>> {
    if let Ok(points) = std::env::var("ENTRA_SYNC_CRASH_POINTS") {
        let points = points
            .split(',')
            .map(|point| point.trim().parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .context("ENTRA_SYNC_CRASH_POINTS is a comma-separated list of user counts")?;
        return Ok(points);
    }
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let gap = 2 * entra_sync_activities::DEFAULT_BATCH_USERS as i64;
    loop {
        let mut points: Vec<i64> = (0..KILLS)
            .map(|_| rng.gen_range(1_000..(USERS as i64 - 3_000)))
            .collect();
        points.sort_unstable();
        if points.windows(2).all(|pair| pair[1] - pair[0] >= gap) {
            return Ok(points);
        }
    }
}

fn big_tenant() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 1,
        users: USERS,
        seed: 2026,
        ..SimulatorConfig::default()
    }
}

async fn seen(stack: &Stack, run_id: &str) -> Result<i64> {
    let seen: Option<i64> = sqlx::query_scalar(
        "SELECT max((counts->>'seen')::bigint) FROM run_tenant_results WHERE run_id = $1",
    )
    .bind(Uuid::parse_str(run_id)?)
    .fetch_one(&stack.pool)
    .await?;
    Ok(seen.unwrap_or(0))
}

/// Syncs with one worker process that is never disturbed.
async fn uninterrupted(stack: &Stack, prepared: &Prepared) -> Result<(String, Snapshot)> {
    let worker = WorkerProcess::spawn(stack, "uninterrupted")?;
    let (run_id, _) = start_sync(&prepared.admin).await?;
    let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(300)).await?;
    worker.kill().await?;
    assert_eq!(run["status"], "completed", "{run}");
    let snapshot = snapshot(&stack.pool, prepared.tenant_id, &run_id).await?;
    Ok((run_id, snapshot))
}

/// Syncs while killing the worker process at each of `points`.
async fn crashing(
    stack: &Stack,
    prepared: &Prepared,
    points: &[i64],
) -> Result<(String, Snapshot)> {
    let mut worker = WorkerProcess::spawn(stack, "crash-0")?;
    let (run_id, _) = start_sync(&prepared.admin).await?;
    for (index, &threshold) in points.iter().enumerate() {
        eventually(
            &format!("{threshold} users committed"),
            Duration::from_secs(120),
            || async {
                let seen = seen(stack, &run_id).await?;
                Ok((seen >= threshold).then_some(()))
            },
        )
        .await?;
        assert!(
            seen(stack, &run_id).await? < USERS as i64,
            "the kill point came after the last page; the test would prove nothing"
        );
        worker.kill().await?;
        worker = WorkerProcess::spawn(stack, &format!("crash-{}", index + 1))?;
    }
    let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(300)).await?;
    worker.kill().await?;
    assert_eq!(run["status"], "completed", "{run}");
    let snapshot = snapshot(&stack.pool, prepared.tenant_id, &run_id).await?;
    Ok((run_id, snapshot))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_worker_mid_run_changes_nothing_in_the_outcome() -> Result<()> {
    let started = Instant::now();
    let points = kill_points()?;
    eprintln!(
        "crash test: killing the worker after {points:?} committed users (replay with ENTRA_SYNC_CRASH_POINTS={})",
        points.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    );
    let calm = Stack::start(big_tenant()).await?;
    let stormy = Stack::start(big_tenant()).await?;
    let calm_prepared = calm.run(prepare(&calm)).await?;
    let stormy_prepared = stormy.run(prepare(&stormy)).await?;
    stormy.simulator.clear_request_log();

    let (calm_outcome, stormy_outcome) = tokio::join!(
        uninterrupted(&calm, &calm_prepared),
        crashing(&stormy, &stormy_prepared, &points)
    );
    let (_, expected) = calm_outcome?;
    let (stormy_run, actual) = stormy_outcome?;

    // Sanity: the run did real work of every kind being compared.
    let counts = &expected
        .tenant_results
        .first()
        .context("a tenant result")?
        .2;
    assert_eq!(counts["seen"], USERS as u64, "{counts}");
    assert!(counts["created"].as_u64().unwrap_or(0) > 10_000, "{counts}");
    assert!(counts["linked"].as_u64().unwrap_or(0) > 50, "{counts}");
    assert!(
        !expected.review_items.is_empty(),
        "no review items to compare"
    );

    assert_eq!(
        actual.tenant_results, expected.tenant_results,
        "tenant result counts"
    );
    assert_eq!(actual.review_items, expected.review_items, "review items");
    assert_eq!(actual.links.len(), expected.links.len(), "link count");
    assert!(actual.links == expected.links, "links differ");
    assert_eq!(
        actual.contacts.len(),
        expected.contacts.len(),
        "contact count"
    );
    assert!(actual.contacts == expected.contacts, "contacts differ");

    // One owner for the counts: after three kills and resumes, each count of the tenant result
    // equals the audit rows the run wrote for it (a page replayed after a kill is neither
    // counted nor audited twice).
    let stormy_counts = &actual.tenant_results.first().context("a tenant result")?.2;
    for (count, action) in [
        ("created", "create"),
        ("linked", "link"),
        ("updated", "update"),
        ("inactivated", "inactivate"),
    ] {
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM contact_changes WHERE run_id = $1 AND action = $2",
        )
        .bind(Uuid::parse_str(&stormy_run)?)
        .bind(action)
        .fetch_one(&stormy.pool)
        .await?;
        assert_eq!(
            stormy_counts[count].as_i64().unwrap_or(0),
            audited,
            "{count} vs {action} audit rows: {stormy_counts}"
        );
    }
    eprintln!(
        "crash test: counts equal the audit rows after {} kills at {points:?}: {stormy_counts}",
        points.len()
    );

    // Resumed, not restarted: one request started the enumeration, and per kill at most the
    // pages of the batch in flight were read twice (a batch of `DEFAULT_BATCH_USERS` users
    // spans two 999-user pages).
    let pages: Vec<_> = stormy
        .simulator
        .request_log()
        .into_iter()
        .filter(|request| request.path.ends_with("/ListGraphRequest"))
        .collect();
    let starts = pages
        .iter()
        .filter(|request| !request.query.as_deref().unwrap_or("").contains("nextLink"))
        .count();
    assert_eq!(starts, 1, "the enumeration restarted from the beginning");
    let page_count = USERS.div_ceil(999);
    let pages_per_batch = entra_sync_activities::DEFAULT_BATCH_USERS.div_ceil(999);
    assert!(
        pages.len() <= page_count + points.len() * pages_per_batch,
        "{} page requests for {page_count} pages and kills at {points:?}",
        pages.len(),
    );
    eprintln!("crash test took {:?}", started.elapsed());
    Ok(())
}

/// A direct connection's small tenants (fresh delta links) sync their delta rounds in a local
/// activity, which sends no heartbeats. Its worker process is killed while the round is being
/// read: the workflow task it was running times out, a new worker runs the activity again, and
/// the run completes with each new user created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_in_a_local_delta_round_is_replaced_and_nothing_counts_twice() -> Result<()>
{
    use entra_sync::demo::{create_psa_tenant, ApiClient};
    use entra_sync_simulator::{FaultKind, FaultSpec, NewUser};
    use temporalio_common::protos::temporal::api::enums::v1::EventType;

    use crate::processes::{connect_direct, direct_environment, discover_and_map_all, sync_all};

    let stack = Stack::start_with(
        SimulatorConfig {
            tenants: 2,
            users: 80,
            seed: 2027,
            ..SimulatorConfig::default()
        },
        direct_environment,
    )
    .await?;
    let master = ApiClient::new(&stack.api_url, &stack.master_key)?;
    let (tenant_id, admin_key) =
        create_psa_tenant(&master, "crash-delta-msp", "admin@crash-delta.example").await?;
    let admin = ApiClient::new(&stack.api_url, &admin_key)?;
    let mapped = stack
        .run(async {
            connect_direct(&stack.api_url, &admin_key).await?;
            let mapped = discover_and_map_all(&admin).await?;
            let initial = sync_all(&admin).await?;
            anyhow::ensure!(initial["status"] == "completed", "{initial}");
            Ok(mapped)
        })
        .await?;

    // One new user per customer tenant, and every delta read answering slowly enough for the
    // worker to be killed in the middle of it.
    let simulator = &stack.simulator;
    for tenant in &simulator.msp().tenants {
        simulator.add_user(
            &tenant.tenant_id,
            NewUser {
                given_name: "Grace".into(),
                surname: "Hopper".into(),
                ..NewUser::default()
            },
        )?;
    }
    let slow_reads = simulator.add_fault(FaultSpec::everywhere(
        FaultKind::Delay { ms: 4_000 },
        "/graph/v1.0/users/delta",
    ))?;

    let worker = WorkerProcess::spawn(&stack, "local-delta-0")?;
    let (run_id, _) = start_sync(&admin).await?;
    let run_uuid = Uuid::parse_str(&run_id)?;
    crate::workflow_support::wait_for_a_tenant(&stack.pool, run_uuid, true).await?;
    // The tenants' tokens are redeemed as the round starts, in milliseconds; the reads then
    // wait four seconds. Killing the worker between a refresh token's redemption and the
    // storing of the token that replaces it would lose the grant (the simulator, like
    // Microsoft, rotates refresh tokens), which is another test's subject: kill it in the reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.kill().await?;
    simulator.remove_fault(slow_reads);
    let replacement = WorkerProcess::spawn(&stack, "local-delta-1")?;
    let run = wait_finished(&admin, &run_id, Duration::from_secs(120)).await?;
    replacement.kill().await?;

    assert_eq!(run["status"], "completed", "{run}");
    let results = run["tenants"].as_array().context("tenants")?;
    assert_eq!(results.len(), mapped, "{run}");
    for result in results {
        assert_eq!(
            (result["status"].as_str(), result["mode"].as_str()),
            (Some("completed"), Some("delta")),
            "{result}"
        );
    }
    assert_eq!(run["totals"]["created"], mapped, "{run}");
    let created: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND full_name = 'Grace Hopper'",
    )
    .bind(Uuid::parse_str(&tenant_id)?)
    .fetch_one(&stack.pool)
    .await?;
    assert_eq!(created as usize, mapped, "one contact per new user");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contact_changes WHERE run_id = $1 AND action = 'create'",
    )
    .bind(run_uuid)
    .fetch_one(&stack.pool)
    .await?;
    assert_eq!(audited as usize, mapped, "one audit row per creation");

    // The killed worker's workflow task timed out, and the tenants ran as a local activity.
    let workflow_id = entra_sync_workflows::workflow_id_for_run("sync", &tenant_id, &run_id);
    let events = crate::workflow_support::temporal(&stack)
        .await?
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(&workflow_id)
        .fetch_history(Default::default())
        .into_events()
        .await?;
    assert!(
        events
            .iter()
            .any(|event| event.event_type() == EventType::WorkflowTaskTimedOut),
        "no workflow task timed out: the worker was not killed mid-task"
    );
    assert!(
        events
            .iter()
            .all(|event| event.event_type() != EventType::ActivityTaskScheduled),
        "a tenant ran as an activity task, not locally"
    );
    Ok(())
}
