//! Chaos on the real stack (Temporal, Postgres, the simulator over HTTP): the provider answers
//! the sync's user pages with 20% 429 (with `Retry-After`), 5% 503, cut-off bodies and three
//! 30-second stalls at once. The run must end by itself, bounded in time, and a canonical dump
//! of its contacts, links, review items and audit must equal a clean run's of the same data.
//! The same holds when the run's Postgres server or its Temporal server is restarted mid-run.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use entra_sync_simulator::{FaultKind, FaultSpec, SimulatorConfig};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{
    eventually, prepare, snapshot, start_sync, wait_finished, Prepared, Snapshot,
};

/// A stormy run may take the stalls, Temporal's retry backoff of the cut-off pages and the
/// `Retry-After` waits; it must still end well inside this.
const DEADLINE: Duration = Duration::from_secs(400);
const PAGES: &str = "/cipp/api/ListGraphRequest";

fn data() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 4,
        users: 6_000,
        seed: 4242,
        ..SimulatorConfig::default()
    }
}

/// The run's audit rows without the ids that differ between databases.
type AuditRow = (Option<String>, String, Option<String>);

async fn audit(pool: &PgPool, run_id: &str) -> Result<Vec<AuditRow>> {
    Ok(sqlx::query_as(
        "SELECT cc.object_id, cc.action, c.email
         FROM contact_changes cc
         JOIN contacts c ON c.tenant_id = cc.tenant_id AND c.contact_id = cc.contact_id
         WHERE cc.run_id = $1 ORDER BY 1, 2, 3",
    )
    .bind(Uuid::parse_str(run_id)?)
    .fetch_all(pool)
    .await?)
}

/// Contacts sharing a client and an address beyond the first (prepare makes a few on
/// purpose; a sync must add none).
const DUPLICATES: &str = "SELECT coalesce(sum(n - 1), 0)::bigint FROM
    (SELECT count(*) AS n FROM contacts WHERE email IS NOT NULL
     GROUP BY tenant_id, client_id, lower(email)) AS d";
const INACTIVE: &str = "SELECT count(*) FROM contacts WHERE NOT is_active";

/// Rows of `actual` missing from `expected` plus rows of `expected` missing from `actual`.
fn differences<T: Ord + Clone + Debug>(expected: &[T], actual: &[T]) -> usize {
    let mut counts: BTreeMap<T, i64> = BTreeMap::new();
    for row in expected {
        *counts.entry(row.clone()).or_default() += 1;
    }
    for row in actual {
        *counts.entry(row.clone()).or_default() -= 1;
    }
    counts.values().map(|n| n.unsigned_abs() as usize).sum()
}

struct Outcome {
    run: serde_json::Value,
    snapshot: Snapshot,
    audit: Vec<AuditRow>,
    duplicates: i64,
    inactive: i64,
}

async fn sync_and_dump(stack: &Stack, stormy: bool) -> Result<Outcome> {
    stack
        .run(async {
            let prepared = prepare(stack).await?;
            if stormy {
                stack.simulator.clear_request_log();
                // Three stalls at once (the first three page requests, for different tenants
                // read in parallel), then two certain cut-offs, then the random mix.
                let faults = [
                    (FaultKind::Delay { ms: 30_000 }, Some(3)),
                    (FaultKind::CutOff, Some(2)),
                    (
                        FaultKind::Mix {
                            throttle_percent: 20,
                            unavailable_percent: 5,
                            cut_off_percent: 2,
                            retry_after_secs: 1,
                        },
                        None,
                    ),
                ];
                for (kind, count) in faults {
                    stack.simulator.add_fault(FaultSpec {
                        kind,
                        path_prefix: PAGES.to_owned(),
                        tenant: None,
                        count,
                    })?;
                }
            }
            let (run_id, _) = start_sync(&prepared.admin).await?;
            let run = wait_finished(&prepared.admin, &run_id, DEADLINE).await?;
            stack.simulator.clear_faults();
            dump(stack, &prepared, &run_id, run).await
        })
        .await
}

async fn dump(
    stack: &Stack,
    prepared: &Prepared,
    run_id: &str,
    run: serde_json::Value,
) -> Result<Outcome> {
    Ok(Outcome {
        run,
        snapshot: snapshot(&stack.pool, prepared.tenant_id, run_id).await?,
        audit: audit(&stack.pool, run_id).await?,
        duplicates: stack.count(DUPLICATES).await?,
        inactive: stack.count(INACTIVE).await?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stormy_provider_changes_nothing_in_the_outcome() -> Result<()> {
    let calm = Stack::start(data()).await?;
    let expected = sync_and_dump(&calm, false).await?;
    assert_eq!(expected.run["status"], "completed", "{}", expected.run);

    let stormy = Stack::start(data()).await?;
    let started = Instant::now();
    let actual = sync_and_dump(&stormy, true).await?;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(actual.run["status"], "completed", "{}", actual.run);

    let pages = stormy
        .simulator
        .request_log()
        .into_iter()
        .filter(|request| request.path.ends_with("/ListGraphRequest"))
        .collect::<Vec<_>>();
    let by_status = |status: u16| pages.iter().filter(|r| r.status == status).count();
    let (throttled, unavailable) = (by_status(429), by_status(503));
    let (e, a) = (&expected.snapshot, &actual.snapshot);
    let compared = e.contacts.len() + e.links.len() + e.review_items.len() + expected.audit.len();
    let different = differences(&e.contacts, &a.contacts)
        + differences(&e.links, &a.links)
        + differences(&e.review_items, &a.review_items)
        + differences(&expected.audit, &actual.audit);
    let counts_equal = e.tenant_results == a.tenant_results;
    eprintln!(
        "chaos provider: runs=2 page_requests={} throttled_429={throttled} unavailable_503={unavailable} \
         stalls_30s=3 cut_off>=2 rows_compared={compared} differences={different} \
         duplicates_added={} wrongly_inactivated={} counts_equal={counts_equal} stormy_seconds={seconds:.1}",
        pages.len(),
        actual.duplicates - expected.duplicates,
        actual.inactive - expected.inactive,
    );
    assert!(throttled > 0 && unavailable > 0, "the storm did not happen");
    assert!(compared > 1_000, "too little compared: {compared}");
    assert_eq!(
        different, 0,
        "the stormy run's dump differs from the calm one"
    );
    assert!(
        counts_equal,
        "tenant results: {:?} vs {:?}",
        e.tenant_results, a.tenant_results
    );
    assert_eq!(actual.duplicates, expected.duplicates, "duplicates added");
    assert_eq!(actual.inactive, expected.inactive, "wrongly inactivated");
    assert_eq!(actual.inactive, 0);
    Ok(())
}

/// Compares two outcomes, prints the figures under `name` and fails on any difference.
fn compare(name: &str, expected: &Outcome, actual: &Outcome, extra: &str) {
    let (e, a) = (&expected.snapshot, &actual.snapshot);
    let compared = e.contacts.len() + e.links.len() + e.review_items.len() + expected.audit.len();
    let different = differences(&e.contacts, &a.contacts)
        + differences(&e.links, &a.links)
        + differences(&e.review_items, &a.review_items)
        + differences(&expected.audit, &actual.audit);
    let counts_equal = e.tenant_results == a.tenant_results;
    eprintln!(
        "chaos {name}: runs=2 {extra} rows_compared={compared} differences={different} \
         duplicates_added={} wrongly_inactivated={} counts_equal={counts_equal}",
        actual.duplicates - expected.duplicates,
        actual.inactive - expected.inactive,
    );
    assert!(compared > 1_000, "too little compared: {compared}");
    assert_eq!(
        different, 0,
        "the disturbed run's dump differs from the calm one"
    );
    assert!(
        counts_equal,
        "tenant results: {:?} vs {:?}",
        e.tenant_results, a.tenant_results
    );
    assert_eq!(actual.duplicates, expected.duplicates, "duplicates added");
    assert_eq!(actual.inactive, expected.inactive, "wrongly inactivated");
    assert_eq!(actual.inactive, 0);
}

/// Runs a `deploy/scripts/lib.sh` function on `dir`; returns what it printed.
fn lib_sh(function: &str, dir: &Path) -> Result<String> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scripts/lib.sh");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source \"$0\" && {function} \"$1\""))
        .arg(lib)
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{function}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

const BIG_TENANT_USERS: i64 = 8_000;

fn one_big_tenant() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 1,
        users: BIG_TENANT_USERS as usize,
        seed: 77,
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

/// The run's Postgres server is restarted (fast shutdown cuts every connection of the worker,
/// the API and the test) after the first batches committed; the run resumes and ends by itself
/// with the same outcome as a run that was left alone. The server is a private one, so the
/// restart disturbs no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_changes_nothing_in_the_outcome() -> Result<()> {
    let calm = Stack::start(one_big_tenant()).await?;
    let expected = sync_and_dump(&calm, false).await?;
    assert_eq!(expected.run["status"], "completed", "{}", expected.run);

    let dir = std::env::temp_dir().join(format!("entra-chaos-pg-{}", Uuid::new_v4().simple()));
    let server_url = lib_sh("pg_start", &dir)?;
    let started = Instant::now();
    let disturbed = async {
        let temporal = std::env::var("TEMPORAL_ADDRESS")?;
        let stormy =
            Stack::start_on(one_big_tenant(), &server_url, &temporal, |_| Vec::new()).await?;
        stormy
            .run(async {
                let prepared = prepare(&stormy).await?;
                let (run_id, _) = start_sync(&prepared.admin).await?;
                eventually(
                    "a first batch committed",
                    Duration::from_secs(120),
                    || async { Ok((seen(&stormy, &run_id).await? >= 1_000).then_some(())) },
                )
                .await?;
                anyhow::ensure!(
                    seen(&stormy, &run_id).await? < BIG_TENANT_USERS,
                    "the restart came after the last page; the test would prove nothing"
                );
                let restart_dir = dir.clone();
                tokio::task::spawn_blocking(move || lib_sh("pg_restart", &restart_dir)).await??;
                let run = wait_finished(&prepared.admin, &run_id, DEADLINE).await?;
                dump(&stormy, &prepared, &run_id, run).await
            })
            .await
    }
    .await;
    let _ = lib_sh("pg_stop", &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let actual = disturbed?;
    assert_eq!(actual.run["status"], "completed", "{}", actual.run);
    compare(
        "postgres_restart",
        &expected,
        &actual,
        &format!(
            "restarts_survived=1 seconds={:.1}",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// The Temporal server (a private dev server with its SQLite database) is stopped and started
/// again on the same port after the first batches committed; the worker reconnects, the run
/// resumes and ends by itself with the same outcome as a run that was left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporal_restart_mid_run_changes_nothing_in_the_outcome() -> Result<()> {
    let calm = Stack::start(one_big_tenant()).await?;
    let expected = sync_and_dump(&calm, false).await?;
    assert_eq!(expected.run["status"], "completed", "{}", expected.run);

    let dir =
        std::env::temp_dir().join(format!("entra-chaos-temporal-{}", Uuid::new_v4().simple()));
    let temporal = lib_sh("temporal_start", &dir)?;
    let started = Instant::now();
    let disturbed = async {
        let server_url = std::env::var("DATABASE_URL")?;
        let stormy =
            Stack::start_on(one_big_tenant(), &server_url, &temporal, |_| Vec::new()).await?;
        stormy
            .run(async {
                let prepared = prepare(&stormy).await?;
                let (run_id, _) = start_sync(&prepared.admin).await?;
                eventually(
                    "a first batch committed",
                    Duration::from_secs(120),
                    || async { Ok((seen(&stormy, &run_id).await? >= 1_000).then_some(())) },
                )
                .await?;
                anyhow::ensure!(
                    seen(&stormy, &run_id).await? < BIG_TENANT_USERS,
                    "the restart came after the last page; the test would prove nothing"
                );
                let restart_dir = dir.clone();
                tokio::task::spawn_blocking(move || lib_sh("temporal_restart", &restart_dir))
                    .await??;
                let run = wait_finished(&prepared.admin, &run_id, DEADLINE).await?;
                dump(&stormy, &prepared, &run_id, run).await
            })
            .await
    }
    .await;
    let _ = lib_sh("temporal_stop", &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let actual = disturbed?;
    assert_eq!(actual.run["status"], "completed", "{}", actual.run);
    compare(
        "temporal_restart",
        &expected,
        &actual,
        &format!(
            "restarts_survived=1 seconds={:.1}",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
