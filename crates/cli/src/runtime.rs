//! Building the long-lived parts from configuration: the store, the Temporal client, the
//! worker, and the API server.
//!
//! A starting worker also reconciles: every PSA tenant's recurring-sync Schedule is made to
//! match its settings and connection, and (then periodically) every run still marked `running`
//! whose workflow is closed or gone is finalized, because a terminated or timed-out workflow
//! runs no cleanup code of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_activities::{Activities, TraceContextInterceptor};
use entra_sync_api::WorkflowStarter;
use entra_sync_api::{ApiConfig, AppState, MicrosoftConfig, TemporalStarter};
use entra_sync_connection::{DirectoryFactory, DirectorySettings, HttpSettings};
use entra_sync_secrets::{
    AppCredentialResolver, EnvironmentProvider, FolderProvider, SecretProvider, VaultConfig,
    VaultProvider,
};
use entra_sync_store::runs::{derive_run_status, RunStatus};
use entra_sync_store::workflow_queries::RunningRun;
use entra_sync_store::Store;
use entra_sync_workflows::trace::trace_header_interceptor;
use entra_sync_workflows::{
    workflow_id_for_run, DiscoveryWorkflow, ScheduledSyncWorkflow, SyncBatchWorkflow, SyncWorkflow,
};
use secrecy::SecretString;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_client::{UntypedWorkflow, WorkflowExecutionStatus};
use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::TelemetryOptions;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tracing::{info, warn};
use url::Url;

use crate::config::{Settings, TemporalSettings};

/// Connects to Postgres with the configured encryption key (when one is set).
pub async fn connect_store(settings: &Settings) -> Result<Store> {
    let store = Store::connect_with(&settings.database.url, settings.database.max_connections)
        .await
        .context("connecting to Postgres (DATABASE_URL)")?;
    Ok(match settings.encryption_key {
        Some(_) => store.with_encryption_keys(
            settings.encryption_key()?,
            settings.previous_encryption_keys()?,
        ),
        None => store,
    })
}

/// Connects a Temporal client to `TEMPORAL_ADDRESS` in `TEMPORAL_NAMESPACE`.
pub async fn connect_temporal(temporal: &TemporalSettings) -> Result<Client> {
    let target = if temporal.address.contains("://") {
        temporal.address.clone()
    } else {
        format!("http://{}", temporal.address)
    };
    let target = Url::parse(&target).context("TEMPORAL_ADDRESS is not host:port")?;
    let connection = Connection::connect(
        ConnectionOptions::new(target)
            .identity(format!("entra-sync@{}", std::process::id()))
            .connect_timeout(Duration::from_secs(10))
            .build(),
    )
    .await
    .with_context(|| format!("connecting to Temporal at {}", temporal.address))?;
    Client::new(
        connection,
        ClientOptions::new(temporal.namespace.clone()).build(),
    )
    .context("creating the Temporal client")
}

fn parse_url(value: &str, name: &str) -> Result<Url> {
    Url::parse(value).with_context(|| format!("{name} is not a URL"))
}

pub fn directory_settings(settings: &Settings) -> Result<DirectorySettings> {
    let microsoft = &settings.microsoft;
    Ok(DirectorySettings {
        login_base_url: parse_url(&microsoft.login_base_url, "MICROSOFT_LOGIN_BASE_URL")?,
        graph_base_url: parse_url(&microsoft.graph_base_url, "MICROSOFT_GRAPH_BASE_URL")?,
        http: HttpSettings {
            allow_private_endpoints: settings.allow_private_endpoints,
            ..HttpSettings::default()
        },
        app_registrations: Some(Arc::new(app_registrations(settings)?)),
        redirect_uri: microsoft.oauth_callback_url.clone(),
        retry_after_cap: settings.worker.retry_after_cap(),
    })
}

/// The app-registration resolution of SPEC §2.1 over the configured secret providers: the
/// PSA tenant's secrets, then the environment (`MICROSOFT_*`, as loaded into the settings),
/// then the application's secrets.
pub fn app_registrations(settings: &Settings) -> Result<AppCredentialResolver> {
    use secrecy::ExposeSecret;
    let mut providers: Vec<Arc<dyn SecretProvider>> = Vec::new();
    if let Some(directory) = &settings.secrets.directory {
        providers.push(Arc::new(FolderProvider::new(directory)));
    }
    if let Some(address) = &settings.secrets.vault_address {
        let token = settings
            .secrets
            .vault_token
            .clone()
            .context("a Vault address is set but no token (VAULT_TOKEN)")?;
        providers.push(Arc::new(
            VaultProvider::new(VaultConfig {
                address: parse_url(address, "VAULT_ADDR")?,
                token,
                mount: settings
                    .secrets
                    .vault_mount
                    .clone()
                    .unwrap_or_else(|| "secret".to_owned()),
                prefix: settings
                    .secrets
                    .vault_prefix
                    .clone()
                    .unwrap_or_else(|| "entra-sync".to_owned()),
                cache_ttl: Duration::from_secs(60),
                request_timeout: Duration::from_secs(10),
                allow_private_endpoints: settings.allow_private_endpoints,
            })
            .context("building the Vault client")?,
        ));
    }
    let microsoft = &settings.microsoft;
    let secret = |value: &Option<SecretString>| {
        value
            .as_ref()
            .map(|value| value.expose_secret().to_owned())
            .unwrap_or_default()
    };
    let plain = |value: &Option<String>| value.clone().unwrap_or_default();
    let pairs = [
        ("MICROSOFT_CLIENT_ID", plain(&microsoft.client_id)),
        ("MICROSOFT_CLIENT_SECRET", secret(&microsoft.client_secret)),
        ("MICROSOFT_TENANT_ID", plain(&microsoft.tenant_id)),
        (
            "MICROSOFT_CLIENT_CERTIFICATE",
            secret(&microsoft.client_certificate),
        ),
        (
            "MICROSOFT_CLIENT_CERTIFICATE_KEY",
            secret(&microsoft.client_certificate_key),
        ),
        (
            "MICROSOFT_FEDERATED_TOKEN_FILE",
            plain(&microsoft.federated_token_file),
        ),
    ];
    let environment =
        EnvironmentProvider::from_pairs(pairs.iter().map(|(name, value)| (*name, value.as_str())));
    Ok(AppCredentialResolver::new(providers, environment))
}

/// Per-worker knobs beyond the shared configuration: what distinguishes two workers in one
/// process (tests run several) and how often the run reconciler looks.
#[derive(Clone, Debug)]
pub struct WorkerTuning {
    /// The identity Temporal records for this worker's tasks (default `entra-sync@{pid}`).
    pub identity: Option<String>,
    /// At most this many activities at once (default: the SDK's 100).
    pub max_concurrent_activities: Option<usize>,
    /// How often running runs are checked against their workflows after the start-up check.
    pub reconcile_every: Duration,
}

impl Default for WorkerTuning {
    fn default() -> WorkerTuning {
        WorkerTuning {
            identity: None,
            max_concurrent_activities: None,
            reconcile_every: Duration::from_secs(60),
        }
    }
}

/// How long a stopping worker lets running activities go on when the configuration says
/// nothing (`worker.shutdown_grace_seconds`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// After the grace period the SDK cancels running activities; `sync_tenant` returns at its
/// next page boundary (a page's transaction is never interrupted). This much longer at most,
/// the worker exits anyway: an activity still running then is handed to another worker by
/// its heartbeat timeout, and resumes from the committed cursor.
const SHUTDOWN_HARD_MARGIN: Duration = Duration::from_secs(15);

/// A run whose workflow cannot be found is only declared lost after this long, so a run whose
/// workflow the API is starting right now is left alone.
const MISSING_WORKFLOW_GRACE: Duration = Duration::from_secs(120);

/// Runs a Temporal worker for the sync, discovery and scheduled-sync workflows until
/// `shutdown` completes. Then it stops polling, lets running activities go on for the grace
/// period (`worker.shutdown_grace_seconds`), cancels those still running (they stop at their
/// next page boundary and are retried by another worker from the committed cursor), and
/// returns. The worker future is not `Send`, so this runs on the caller's task.
pub async fn run_worker(
    settings: &Settings,
    store: Store,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    run_worker_tuned(settings, store, WorkerTuning::default(), shutdown).await
}

/// [`run_worker`] with explicit [`WorkerTuning`]. Before polling, reconciles the recurring
/// schedules; while polling, checks running runs against their workflows at once and then
/// every `tuning.reconcile_every`. Reconciliation failures are logged, never fatal: the next
/// check (or worker) tries again.
pub async fn run_worker_tuned(
    settings: &Settings,
    store: Store,
    tuning: WorkerTuning,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    run_worker_metered(settings, store, tuning, None, shutdown).await
}

/// [`run_worker_tuned`] with the Temporal SDK's worker metrics recorded into `sdk_metrics`
/// (see `telemetry::SdkMetrics`).
pub async fn run_worker_metered(
    settings: &Settings,
    store: Store,
    tuning: WorkerTuning,
    sdk_metrics: Option<Arc<dyn CoreMeter>>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let telemetry = TelemetryOptions::builder()
        .maybe_metrics(sdk_metrics)
        .build();
    let runtime_options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|error| anyhow::anyhow!("Temporal runtime options: {error}"))?;
    let runtime =
        Runtime::from_current_tokio(runtime_options).context("starting the Temporal runtime")?;
    let grace = settings
        .worker
        .shutdown_grace_seconds
        .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs);
    let client = connect_temporal(&settings.temporal).await?;
    let starter = TemporalStarter::new(client.clone(), settings.temporal.task_queue.clone());
    if let Err(error) = reconcile_schedules(&store, &starter).await {
        warn!(error = %format!("{error:#}"), "reconciling recurring schedules failed");
    }
    let activities = Activities::new(
        store.clone(),
        DirectoryFactory::new(directory_settings(settings)?),
    )
    .with_max_parallel_tenants(settings.sync.max_parallel_tenants)
    .with_batch_users(settings.sync.batch_users)
    .with_batch_tenants(settings.sync.batch_tenants)
    .with_max_run(settings.worker.max_run());
    let activity_slots = tuning.max_concurrent_activities.unwrap_or(100).max(1);
    let tuner = TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(activity_slots))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .build();
    let options = WorkerOptions::new(settings.temporal.task_queue.clone())
        .register_activities(activities)
        .register_workflow::<SyncWorkflow>()
        .context("registering the sync workflow")?
        .register_workflow::<SyncBatchWorkflow>()
        .context("registering the sync batch workflow")?
        .register_workflow::<DiscoveryWorkflow>()
        .context("registering the discovery workflow")?
        .register_workflow::<ScheduledSyncWorkflow>()
        .context("registering the scheduled sync workflow")?
        // Traces: the workflows copy their start's trace header onto their activities and
        // child workflows; each activity's span continues it (`entra_sync_workflows::trace`).
        .workflow_interceptor(trace_header_interceptor())
        .activity_inbound_interceptor(TraceContextInterceptor)
        .maybe_client_identity_override(tuning.identity.clone())
        .tuner(tuner)
        .graceful_shutdown_period(grace)
        .build();
    let mut worker =
        Worker::new(&runtime, client.clone(), options).context("creating the Temporal worker")?;
    let stop = worker.shutdown_handle();
    info!(task_queue = %settings.temporal.task_queue, "worker started");
    let reconciler = async {
        let mut ticker = tokio::time::interval(tuning.reconcile_every);
        loop {
            ticker.tick().await;
            if let Err(error) = reconcile_runs(&store, &client).await {
                warn!(error = %format!("{error:#}"), "reconciling running runs failed");
            }
        }
    };
    let run = worker.run();
    tokio::pin!(run);
    tokio::pin!(reconciler);
    tokio::select! {
        result = &mut run => return result.context("the worker stopped"),
        _ = shutdown => stop(),
        () = &mut reconciler => {}
    }
    info!(
        grace_seconds = grace.as_secs(),
        "worker shutting down: no new tasks; running activities have the grace period"
    );
    match tokio::time::timeout(grace + SHUTDOWN_HARD_MARGIN, run).await {
        Ok(result) => {
            result.context("the worker stopped while shutting down")?;
            info!("worker stopped");
        }
        Err(_) => warn!(
            "activities still running after the grace period; exiting, their heartbeat timeout hands them to another worker"
        ),
    }
    Ok(())
}

/// Makes every PSA tenant's Schedule match the database: present with the configured interval
/// while the schedule is enabled and the tenant connected, absent otherwise.
pub async fn reconcile_schedules(store: &Store, starter: &TemporalStarter) -> Result<()> {
    let schedules = store
        .tenant_schedules()
        .await
        .context("reading tenant schedules")?;
    let mut failures = 0usize;
    for tenant in &schedules {
        let interval = (tenant.schedule.enabled && tenant.connected)
            .then(|| Duration::from_secs(tenant.schedule.interval_seconds));
        if let Err(error) = starter.apply_schedule(tenant.tenant_id, interval).await {
            failures += 1;
            warn!(tenant_id = %tenant.tenant_id, error = %format!("{error:#}"), "schedule reconcile failed");
        }
    }
    info!(
        tenants = schedules.len(),
        failures, "recurring schedules reconciled"
    );
    Ok(())
}

/// Finalizes runs still marked `running` whose workflow has closed (terminated, timed out,
/// failed, or completed without finishing its run) or cannot be found after a grace period.
/// Returns how many runs it finalized. A run finished concurrently by its own workflow stays as
/// that workflow wrote it (`Store::finish_run` never rewrites a finished run).
pub async fn reconcile_runs(store: &Store, client: &Client) -> Result<usize> {
    let running = store.running_runs().await.context("listing running runs")?;
    let mut finalized = 0usize;
    for run in running {
        match reconcile_run(store, client, &run).await {
            Ok(true) => finalized += 1,
            Ok(false) => {}
            Err(error) => {
                warn!(run_id = %run.run_id, error = %format!("{error:#}"), "run reconcile failed")
            }
        }
    }
    Ok(finalized)
}

async fn reconcile_run(store: &Store, client: &Client, run: &RunningRun) -> Result<bool> {
    let workflow_id = run.workflow_id.clone().unwrap_or_else(|| {
        workflow_id_for_run(
            run.kind.as_str(),
            &run.tenant_id.to_string(),
            &run.run_id.to_string(),
        )
    });
    let described = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id.as_str())
        .describe(Default::default())
        .await;
    let (status, code, message) = match described {
        Ok(description) => match description.status() {
            WorkflowExecutionStatus::Canceled => (
                RunStatus::Cancelled,
                "workflow_cancelled",
                "the run's workflow was cancelled",
            ),
            WorkflowExecutionStatus::Terminated => (
                RunStatus::Failed,
                "workflow_terminated",
                "the run's workflow was terminated before it finished the run",
            ),
            WorkflowExecutionStatus::TimedOut => (
                RunStatus::Failed,
                "workflow_timed_out",
                "the run's workflow timed out before it finished the run",
            ),
            WorkflowExecutionStatus::Failed => (
                RunStatus::Failed,
                "workflow_failed",
                "the run's workflow failed before it finished the run",
            ),
            WorkflowExecutionStatus::Completed => {
                let record = store.get_run(run.tenant_id, run.run_id).await?;
                let statuses: Vec<_> = record.tenants.iter().map(|tenant| tenant.status).collect();
                (
                    derive_run_status(&statuses),
                    "workflow_completed",
                    "the run's workflow ended without recording the run's end",
                )
            }
            // Running, paused, continued (never used here) or a status this build does not
            // know: the workflow is not known to be gone.
            _ => return Ok(false),
        },
        Err(WorkflowInteractionError::NotFound(_)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let age_seconds = i64::try_from(now).unwrap_or(i64::MAX) - run.started_at.timestamp();
            if age_seconds < MISSING_WORKFLOW_GRACE.as_secs() as i64 {
                return Ok(false);
            }
            (
                RunStatus::Failed,
                "workflow_missing",
                "the run's workflow was never started or no longer exists",
            )
        }
        Err(error) => return Err(error).context("describing the run's workflow"),
    };
    let error = serde_json::json!({
        "class": "transient",
        "code": code,
        "message": message,
        "remediation": "run the sync again",
    });
    let error = (status != RunStatus::Completed).then_some(error);
    let changed = store
        .finish_run(run.tenant_id, run.run_id, status, error.as_ref())
        .await?;
    if changed {
        info!(tenant_id = %run.tenant_id, run_id = %run.run_id, %workflow_id, status = status.as_str(), "finalized a run whose workflow had ended");
    }
    Ok(changed)
}

/// The API's state from configuration.
pub async fn api_state(settings: &Settings, store: Store) -> Result<AppState> {
    let client = connect_temporal(&settings.temporal).await?;
    let master_key = settings
        .api
        .master_key
        .clone()
        .context("ENTRA_SYNC_MASTER_KEY is not set; the platform endpoints need it")?;
    let mut config = ApiConfig::new(master_key);
    config.max_parallel_tenants = settings.sync.max_parallel_tenants;
    config.allow_private_endpoints = settings.allow_private_endpoints;
    config.oauth_state_ttl = Duration::from_secs(settings.api.oauth_state_ttl_seconds.max(1));
    config.microsoft = MicrosoftConfig {
        login_base_url: parse_url(
            &settings.microsoft.login_base_url,
            "MICROSOFT_LOGIN_BASE_URL",
        )?,
        graph_base_url: parse_url(
            &settings.microsoft.graph_base_url,
            "MICROSOFT_GRAPH_BASE_URL",
        )?,
        client_id: settings.microsoft.client_id.clone(),
        client_secret: settings.microsoft.client_secret.clone(),
        callback_url: settings.microsoft.oauth_callback_url.clone(),
        app_registrations: Some(Arc::new(app_registrations(settings)?)),
    };
    Ok(AppState::new(
        store,
        Arc::new(TemporalStarter::new(
            client,
            settings.temporal.task_queue.clone(),
        )),
        config,
    ))
}

/// Serves the API, and `/metrics` when given a metrics router, on `listener` until
/// `shutdown` completes.
pub async fn serve(
    state: AppState,
    metrics: Option<axum::Router>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut router = entra_sync_api::router(state);
    if let Some(metrics) = metrics {
        router = router.merge(metrics);
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the API server stopped")
}
