//! Graceful shutdown and the worker's observability, on the real stack with real `entra-sync
//! worker` processes: a worker logging JSON and serving `/metrics` is sent SIGTERM in the
//! middle of a sync; it stops polling, hands its running tenant back at a page boundary after
//! its grace period and exits cleanly; a second worker finishes the run, and the contacts,
//! links, review items and counts equal those of an undisturbed run of the same data. Along
//! the way: every log line of both workers is one JSON object and holds no secret, and the
//! metrics carry the Temporal SDK's worker metrics and no PSA-tenant label.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::SimulatorConfig;
use serde_json::Value;
use temporalio_client::UntypedWorkflow;
use uuid::Uuid;

use crate::harness::Stack;
use crate::workflow_support::{
    eventually, prepare, snapshot, start_sync, wait_finished, worker_binary, Prepared,
    WorkerProcess,
};

const USERS: usize = 20_000;
/// SIGTERM once this many users are committed (pages hold 999 users).
const TERMINATE_AFTER_SEEN: i64 = 2_000;

fn tenant() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 1,
        users: USERS,
        seed: 2027,
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

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// An `entra-sync worker` process with JSON logs (to a file), `/metrics` on its own port and
/// a short shutdown grace period, so the test sees the hand-over rather than the end of the
/// tenant.
struct ObservedWorker {
    child: tokio::process::Child,
    log: PathBuf,
    metrics_url: String,
}

impl ObservedWorker {
    fn spawn(stack: &Stack, name: &str) -> Result<ObservedWorker> {
        let log = std::env::temp_dir().join(format!(
            "entra-sync-{name}-{}-{}.log",
            std::process::id(),
            rand::random::<u32>()
        ));
        let port = free_port()?;
        let child = tokio::process::Command::new(worker_binary()?)
            .arg("worker")
            .env_clear()
            .envs(stack.environment.iter().cloned())
            .env("RUST_LOG", "info")
            .env("ENTRA_SYNC_LOG_FORMAT", "json")
            .env("ENTRA_SYNC__METRICS__LISTEN", format!("127.0.0.1:{port}"))
            .env("ENTRA_SYNC__WORKER__SHUTDOWN_GRACE_SECONDS", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the entra-sync worker process")?;
        Ok(ObservedWorker {
            child,
            log,
            metrics_url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn get(&self, path: &str) -> Result<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.metrics_url)).await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// SIGTERM (through kill(1): the workspace forbids `unsafe`, so no libc call), then waits
    /// for the process to exit.
    async fn terminate(&mut self) -> Result<ExitStatus> {
        let pid = self.child.id().context("the worker already exited")?;
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        // Far longer than the grace period plus the hard margin: this bounds a hang, it does
        // not measure speed.
        tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .context("the worker did not exit after SIGTERM")?
            .context("waiting for the worker")
    }

    async fn stop(mut self) -> Result<Vec<Value>> {
        self.child.start_kill()?;
        self.child.wait().await?;
        self.logs()
    }

    /// Every line of the log, each parsed as one JSON object.
    fn logs(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(&self.log)?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let value: Value = serde_json::from_str(line)
                    .with_context(|| format!("a log line is not JSON: {line}"))?;
                anyhow::ensure!(
                    value.is_object()
                        && value["level"].is_string()
                        && value["timestamp"].is_string(),
                    "a log line is not a log object: {line}"
                );
                Ok(value)
            })
            .collect()
    }
}

async fn undisturbed(
    stack: &Stack,
    prepared: &Prepared,
) -> Result<crate::workflow_support::Snapshot> {
    let worker = WorkerProcess::spawn(stack, "undisturbed")?;
    let (run_id, _) = start_sync(&prepared.admin).await?;
    let run = wait_finished(&prepared.admin, &run_id, Duration::from_secs(300)).await?;
    worker.kill().await?;
    assert_eq!(run["status"], "completed", "{run}");
    snapshot(&stack.pool, prepared.tenant_id, &run_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_running_tenant_to_another_worker_without_duplicates() -> Result<()> {
    let calm = Stack::start(tenant()).await?;
    let stormy = Stack::start(tenant()).await?;
    let calm_prepared = calm.run(prepare(&calm)).await?;
    let stormy_prepared = stormy.run(prepare(&stormy)).await?;

    let stormy_run = async {
        let mut first = ObservedWorker::spawn(&stormy, "graceful-first")?;
        let (run_id, _) = start_sync(&stormy_prepared.admin).await?;
        eventually(
            &format!("{TERMINATE_AFTER_SEEN} users committed"),
            Duration::from_secs(180),
            || async { Ok((seen(&stormy, &run_id).await? >= TERMINATE_AFTER_SEEN).then_some(())) },
        )
        .await?;

        // The worker's operations listener, mid-run.
        let (health, _) = first.get("/healthz").await?;
        assert_eq!(health, 200);
        let (ready, _) = first.get("/readyz").await?;
        assert_eq!(ready, 200);
        let (status, metrics) = first.get("/metrics").await?;
        assert_eq!(status, 200);

        let second = ObservedWorker::spawn(&stormy, "graceful-second")?;
        assert!(
            seen(&stormy, &run_id).await? < USERS as i64,
            "the tenant finished before SIGTERM; the test would prove nothing"
        );
        let exit = first.terminate().await?;
        assert!(exit.success(), "the worker did not exit cleanly: {exit:?}");
        let first_logs = first.logs()?;
        let run = wait_finished(&stormy_prepared.admin, &run_id, Duration::from_secs(300)).await?;
        let second_logs = second.stop().await?;
        anyhow::Ok((run_id, run, metrics, first_logs, second_logs))
    };
    let (calm_outcome, stormy_outcome) =
        tokio::join!(undisturbed(&calm, &calm_prepared), stormy_run);
    let expected = calm_outcome?;
    let (run_id, run, metrics, first_logs, second_logs) = stormy_outcome?;

    assert_eq!(run["status"], "completed", "{run}");
    let actual = snapshot(&stormy.pool, stormy_prepared.tenant_id, &run_id).await?;
    let counts = &expected
        .tenant_results
        .first()
        .context("a tenant result")?
        .2;
    assert_eq!(counts["seen"], USERS as u64, "{counts}");
    assert_eq!(
        actual.tenant_results, expected.tenant_results,
        "tenant result counts"
    );
    assert_eq!(actual.review_items, expected.review_items, "review items");
    assert_eq!(actual.links.len(), expected.links.len(), "link count");
    assert!(actual.links == expected.links, "links differ");
    assert_eq!(actual.contacts.len(), expected.contacts.len(), "contacts");
    assert!(actual.contacts == expected.contacts, "contacts differ");

    // Handed over, not finished by the first worker within its grace period: the tenant's
    // activity ended on a later attempt, whose previous attempt failed with the SDK's
    // `WorkerShutdown` (the cancel the grace period issued, honoured at a page boundary).
    let client = crate::workflow_support::temporal(&stormy).await?;
    let workflow_id = entra_sync_workflows::workflow_id_for_run(
        "sync",
        &stormy_prepared.tenant_id.to_string(),
        &run_id,
    );
    let history: Value = serde_json::from_slice(
        &client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id.as_str())
            .fetch_history(Default::default())
            .to_json()
            .await?,
    )?;
    let handed_over = history["events"]
        .as_array()
        .context("history events")?
        .iter()
        .filter_map(|event| event["attributes"].get("ActivityTaskStartedEventAttributes"))
        .any(|started| {
            started["attempt"].as_u64().unwrap_or(0) >= 2
                && started["last_failure"]
                    .to_string()
                    .contains("WorkerShutdown")
        });
    assert!(
        handed_over,
        "no activity was retried after a worker shutdown: {history}"
    );

    // The first worker said it was shutting down, and the second one did the rest.
    let messages = |logs: &[Value]| -> Vec<String> {
        logs.iter()
            .map(|line| line["message"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let first_messages = messages(&first_logs);
    assert!(
        first_messages
            .iter()
            .any(|message| message.starts_with("worker shutting down")),
        "{first_messages:?}"
    );
    assert!(
        messages(&second_logs)
            .iter()
            .any(|message| message == "worker started"),
        "{second_logs:?}"
    );

    // No secret in any log line: the CIPP token, the master key, the encryption key, the
    // PSA tenant admin's API key.
    let config = stormy.simulator.config().clone();
    let secrets = [
        config.cipp_api_token.clone(),
        stormy.master_key.clone(),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
        stormy_prepared.admin_key.clone(),
    ];
    for line in first_logs.iter().chain(&second_logs) {
        let text = line.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret was logged: {text}"
            );
        }
    }

    // The worker's metrics: its own and the Temporal SDK's, and nothing per PSA tenant.
    assert!(
        metrics.contains("entra_sync_users_processed_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("temporal_worker_task_slots_available"),
        "{metrics}"
    );
    // Mid-run, the activity that has finished is the run's `prepare_sync`, a local activity.
    assert!(
        metrics.contains("temporal_local_activity_execution_latency"),
        "{metrics}"
    );
    assert_no_tenant_labels(&metrics, &stormy_prepared)?;
    Ok(())
}

/// No label names a tenant, and no PSA tenant id or managed tenant id appears as a value.
fn assert_no_tenant_labels(metrics: &str, prepared: &Prepared) -> Result<()> {
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split('}').next().unwrap_or("");
        for pair in labels.split(',').filter(|pair| !pair.is_empty()) {
            let name = pair.split('=').next().unwrap_or("").trim();
            anyhow::ensure!(!name.contains("tenant"), "a tenant label: {line}");
        }
    }
    let tenant_id = prepared.tenant_id.to_string();
    anyhow::ensure!(
        !metrics.contains(&tenant_id),
        "the PSA tenant id is in the metrics"
    );
    for (entra_tenant_id, managed_tenant_id) in &prepared.managed {
        anyhow::ensure!(
            !metrics.contains(entra_tenant_id.as_str())
                && !metrics.contains(managed_tenant_id.as_str()),
            "a managed tenant's id is in the metrics"
        );
    }
    Ok(())
}
