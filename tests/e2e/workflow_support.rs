//! Shared pieces of the workflow tests: preparing a connected, discovered and mapped PSA tenant
//! through the API, running in-process workers with explicit tuning, `entra-sync worker`
//! processes that can be killed, a comparable snapshot of what a sync wrote, and recording of
//! workflow histories for the replay tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use entra_sync::demo::{create_psa_tenant, ApiClient};
use entra_sync::runtime::{self, WorkerTuning};
use serde_json::{json, Value};
use sqlx::PgPool;
use temporalio_client::{Client, UntypedWorkflow};
use uuid::Uuid;

use crate::harness::Stack;

/// A PSA tenant ready to sync: connected through CIPP, discovered, every tenant mapped.
pub struct Prepared {
    pub tenant_id: Uuid,
    pub admin: ApiClient,
    pub admin_key: String,
    /// Entra tenant id to managed tenant id.
    pub managed: BTreeMap<String, String>,
}

/// Awaits `check` until it yields a value, polling every 100 ms, failing after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() > deadline {
            bail!("{what}: not reached within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the PSA tenant and its admin, one client per simulated tenant (by its default
/// domain), contacts that make some users link, some queue for review (two contacts share an
/// address) and the rest be created; connects CIPP, discovers and maps every tenant. Needs a
/// worker (discovery is a workflow): call it inside `Stack::run` or [`with_worker`].
pub async fn prepare(stack: &Stack) -> Result<Prepared> {
    let master = ApiClient::new(&stack.api_url, &stack.master_key)?;
    let (tenant_id, admin_key) =
        create_psa_tenant(&master, "Workflow MSP", "admin@workflow-msp.example").await?;
    let admin = master.with_key(&admin_key);

    let msp = stack.simulator.msp();
    for customer in &msp.tenants {
        let client = admin
            .post(
                "/api/v1/clients",
                json!({"name": customer.display_name, "domains": [customer.default_domain()]}),
            )
            .await?;
        let client_id = client["client_id"]
            .as_str()
            .context("client_id")?
            .to_owned();
        for (index, user) in customer.users.iter().enumerate() {
            let Some(mail) = user.mail.clone() else {
                continue;
            };
            let copies = match index % 150 {
                7 => 1,
                11 => 2,
                _ => continue,
            };
            for _ in 0..copies {
                admin
                    .post(
                        "/api/v1/contacts",
                        json!({"client_id": client_id, "full_name": user.display_name, "email": mail}),
                    )
                    .await?;
            }
        }
    }
    let config = stack.simulator.config().clone();
    admin
        .post(
            "/api/v1/integrations/entra/connect/cipp",
            json!({"base_url": stack.simulator.cipp_base_url(), "api_token": config.cipp_api_token}),
        )
        .await?;
    let started = admin
        .post("/api/v1/integrations/entra/discovery", json!({}))
        .await?;
    let discovery = admin
        .wait_for_run(
            started["run_id"].as_str().context("discovery run_id")?,
            Duration::from_secs(120),
            |_| {},
        )
        .await?;
    if discovery["status"] != "completed" {
        bail!("discovery ended {discovery}");
    }
    let preview = admin
        .get("/api/v1/integrations/entra/mappings/preview")
        .await?;
    let items = preview["items"].as_array().cloned().unwrap_or_default();
    let mut managed = BTreeMap::new();
    let mut decisions = Vec::new();
    for item in &items {
        let managed_tenant_id = item["managed_tenant_id"].as_str().unwrap_or("").to_owned();
        managed.insert(
            item["entra_tenant_id"].as_str().unwrap_or("").to_owned(),
            managed_tenant_id.clone(),
        );
        let client_id = item["candidates"][0]["client_id"]
            .as_str()
            .with_context(|| format!("no candidate client for {item}"))?;
        decisions.push(json!({"managed_tenant_id": managed_tenant_id, "action": "map", "client_id": client_id}));
    }
    if managed.len() != msp.tenants.len() {
        bail!(
            "discovery found {} of {} tenants",
            managed.len(),
            msp.tenants.len()
        );
    }
    admin
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            json!({"decisions": decisions, "start_initial_sync": false}),
        )
        .await?;
    Ok(Prepared {
        tenant_id: Uuid::parse_str(&tenant_id)?,
        admin,
        admin_key,
        managed,
    })
}

/// Starts a sync of every mapped tenant through the API; returns `(run_id, deduplicated)`.
pub async fn start_sync(admin: &ApiClient) -> Result<(String, bool)> {
    let started = admin
        .post("/api/v1/integrations/entra/sync", json!({"scope": "all"}))
        .await?;
    Ok((
        started["run_id"].as_str().context("run_id")?.to_owned(),
        started["deduplicated"].as_bool().context("deduplicated")?,
    ))
}

/// Waits until a tenant result of the run is `running` (`true`: its sync is under way) or
/// has ended (`false`).
pub async fn wait_for_a_tenant(pool: &PgPool, run_id: Uuid, running: bool) -> Result<()> {
    let what = if running {
        "a tenant under way"
    } else {
        "a tenant ended"
    };
    eventually(what, Duration::from_secs(60), || async {
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM run_tenant_results
             WHERE run_id = $1 AND (status = 'running') = $2",
        )
        .bind(run_id)
        .bind(running)
        .fetch_one(pool)
        .await?;
        Ok((found > 0).then_some(()))
    })
    .await
}

/// Polls a run through the API until it is no longer `running`.
pub async fn wait_finished(admin: &ApiClient, run_id: &str, deadline: Duration) -> Result<Value> {
    admin.wait_for_run(run_id, deadline, |_| {}).await
}

/// Runs `scenario` while in-process workers with the given tunings serve the stack's task
/// queue, then stops them. Several workers in one process share nothing but the queue.
pub async fn with_workers<T>(
    stack: &Stack,
    tunings: Vec<WorkerTuning>,
    scenario: impl Future<Output = Result<T>>,
) -> Result<T> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = tunings.into_iter().map(|tuning| {
        let mut stopped = stopped.clone();
        runtime::run_worker_tuned(&stack.settings, stack.store.clone(), tuning, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
    });
    let all_workers = async {
        let results = join_local(workers.collect()).await;
        results.into_iter().collect::<Result<Vec<()>>>()
    };
    tokio::pin!(all_workers);
    tokio::pin!(scenario);
    let outcome = tokio::select! {
        result = &mut all_workers => {
            result?;
            bail!("the workers stopped before the scenario finished");
        }
        outcome = &mut scenario => outcome,
    };
    let _ = stop.send(true);
    all_workers.await?;
    outcome
}

/// Polls every future in turn on the current task (worker futures are not `Send`).
async fn join_local<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// A worker tuning for tests: a name Temporal records, and a fast run reconciler.
pub fn tuning(identity: &str, max_concurrent_activities: Option<usize>) -> WorkerTuning {
    WorkerTuning {
        identity: Some(identity.to_owned()),
        max_concurrent_activities,
        reconcile_every: Duration::from_millis(500),
    }
}

/// A Temporal client for the stack's server and namespace.
pub async fn temporal(stack: &Stack) -> Result<Client> {
    runtime::connect_temporal(&stack.settings.temporal).await
}

/// The `entra-sync` binary next to this test binary (`target/<profile>/entra-sync`), which
/// `make test` builds before running the tests.
pub fn worker_binary() -> Result<PathBuf> {
    let test_binary = std::env::current_exe()?;
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary has no target directory")?;
    let binary = profile_dir.join("entra-sync");
    if !binary.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --bin entra-sync` (make test does)",
            binary.display()
        );
    }
    Ok(binary)
}

/// An `entra-sync worker` process for the stack; killed when dropped.
pub struct WorkerProcess {
    child: tokio::process::Child,
}

impl WorkerProcess {
    pub fn spawn(stack: &Stack, name: &str) -> Result<WorkerProcess> {
        let log =
            std::env::temp_dir().join(format!("entra-sync-{name}-{}.log", std::process::id()));
        let child = tokio::process::Command::new(worker_binary()?)
            .arg("worker")
            .env_clear()
            .envs(stack.environment.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the entra-sync worker process")?;
        Ok(WorkerProcess { child })
    }

    /// SIGKILL: no shutdown code runs, in-flight activities are simply lost.
    pub async fn kill(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// A contact as compared: client name, full name, email, phone, mobile, job title, active.
pub type ContactRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

/// What a sync wrote for a PSA tenant, free of ids that differ between databases: contacts
/// (with their client's name), links (by directory user), review items, and each tenant
/// result's status and counts.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub contacts: Vec<ContactRow>,
    pub links: Vec<(String, String, Option<String>)>,
    pub review_items: Vec<(String, String, String, String)>,
    pub tenant_results: Vec<(String, String, Value)>,
}

pub async fn snapshot(pool: &PgPool, tenant_id: Uuid, run_id: &str) -> Result<Snapshot> {
    let run_id = Uuid::parse_str(run_id)?;
    let contacts = sqlx::query_as(
        "SELECT cl.name, c.full_name, c.email, c.phone, c.mobile, c.job_title, c.is_active
         FROM contacts c JOIN clients cl ON cl.tenant_id = c.tenant_id AND cl.client_id = c.client_id
         WHERE c.tenant_id = $1
         ORDER BY 1, 2, 3, 4, 5, 6, 7",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let links = sqlx::query_as(
        "SELECT mt.entra_tenant_id, l.object_id, c.email
         FROM links l
         JOIN managed_tenants mt ON mt.tenant_id = l.tenant_id AND mt.managed_tenant_id = l.managed_tenant_id
         JOIN contacts c ON c.tenant_id = l.tenant_id AND c.contact_id = l.contact_id
         WHERE l.tenant_id = $1 ORDER BY 1, 2",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let review_items = sqlx::query_as(
        "SELECT mt.entra_tenant_id, r.object_id, r.reason, r.status
         FROM review_items r
         JOIN managed_tenants mt ON mt.tenant_id = r.tenant_id AND mt.managed_tenant_id = r.managed_tenant_id
         WHERE r.tenant_id = $1 ORDER BY 1, 2, 3, 4",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let tenant_results = sqlx::query_as(
        "SELECT mt.entra_tenant_id, r.status, r.counts
         FROM run_tenant_results r
         JOIN managed_tenants mt ON mt.tenant_id = r.tenant_id AND mt.managed_tenant_id = r.managed_tenant_id
         WHERE r.tenant_id = $1 AND r.run_id = $2 ORDER BY 1",
    )
    .bind(tenant_id)
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    Ok(Snapshot {
        contacts,
        links,
        review_items,
        tenant_results,
    })
}

/// When `ENTRA_SYNC_RECORD_HISTORIES` names a directory, saves the workflow's history there as
/// `<name>.json` for `workflows/tests/replay.rs`. Recording is how new histories are made after
/// an intended workflow change; the replay test then guards them.
pub async fn record_history(client: &Client, workflow_id: &str, name: &str) -> Result<()> {
    let Ok(directory) = std::env::var("ENTRA_SYNC_RECORD_HISTORIES") else {
        return Ok(());
    };
    let history = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .fetch_history(Default::default())
        .to_json()
        .await?;
    std::fs::create_dir_all(&directory)?;
    std::fs::write(
        PathBuf::from(directory).join(format!("{name}.json")),
        history,
    )?;
    Ok(())
}
