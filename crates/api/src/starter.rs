//! Starting and cancelling runs' workflows. Handlers talk to the [`WorkflowStarter`] trait, so
//! the API tests use a recording fake while production uses [`TemporalStarter`].

use async_trait::async_trait;
use entra_sync_workflows::contract::{DiscoveryRunInput, SyncRunInput};
use entra_sync_workflows::trace::{carrier_payload, TRACE_HEADER};
use entra_sync_workflows::{workflow_id_for_run, DiscoveryWorkflow, SyncWorkflow};
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowCancelOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::common::v1::Header;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What the API needs from Temporal.
#[async_trait]
pub trait WorkflowStarter: Send + Sync {
    /// Starts the sync workflow of an existing run row; returns the workflow id.
    async fn start_sync(&self, input: SyncRunInput) -> anyhow::Result<String>;
    /// Starts the discovery workflow of an existing run row; returns the workflow id.
    async fn start_discovery(&self, input: DiscoveryRunInput) -> anyhow::Result<String>;
    /// Requests cancellation of a running workflow.
    async fn cancel(&self, workflow_id: &str) -> anyhow::Result<()>;
    /// Whether Temporal answers; `/readyz` asks. Starters that cannot tell say yes.
    async fn ready(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Creates, updates or (None) deletes the PSA tenant's recurring sync schedule. Starters
    /// without schedule support leave it to the worker's reconciliation on start.
    async fn apply_schedule(
        &self,
        _tenant_id: uuid::Uuid,
        _interval: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// Deletes the PSA tenant's recurring sync schedule, if any.
    async fn remove_schedule(&self, tenant_id: uuid::Uuid) -> anyhow::Result<()> {
        self.apply_schedule(tenant_id, None).await
    }
}

/// The production starter: a connected Temporal client and the workers' task queue.
#[derive(Clone)]
pub struct TemporalStarter {
    pub client: Client,
    pub task_queue: String,
}

impl TemporalStarter {
    pub fn new(client: Client, task_queue: impl Into<String>) -> TemporalStarter {
        TemporalStarter {
            client,
            task_queue: task_queue.into(),
        }
    }

    /// One workflow per run: the id is derived from the run, a second start of the same run
    /// fails instead of creating a twin, and a finished run's id is never reused.
    fn options(&self, workflow_id: String) -> WorkflowStartOptions {
        WorkflowStartOptions::new(self.task_queue.clone(), workflow_id)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .build()
    }

    /// [`Self::options`] with the trace context of `span` in the start's Temporal header, so
    /// the worker's activities continue this trace (see `entra_sync_workflows::trace`).
    fn traced_options(&self, workflow_id: String, span: &tracing::Span) -> WorkflowStartOptions {
        let mut options = self.options(workflow_id);
        options.header = trace_header(span);
        options
    }
}

/// The span of one workflow start: a child of the API request's span, the parent of every
/// activity of the run. Ids only (PSA tenant, run, workflow).
fn start_span(
    workflow_type: &str,
    tenant_id: &str,
    run_id: &str,
    workflow_id: &str,
) -> tracing::Span {
    tracing::info_span!(
        "workflow.start",
        otel.name = format!("start workflow {workflow_type}"),
        otel.kind = "producer",
        workflow_type,
        workflow_id,
        tenant_id,
        run_id,
    )
}

/// The Temporal header carrying `span`'s W3C trace context; None when there is no trace
/// (OpenTelemetry off: the propagator is a no-op and the span has no valid context).
pub fn trace_header(span: &tracing::Span) -> Option<Header> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::BTreeMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut CarrierInjector(&mut carrier))
    });
    if carrier.is_empty() {
        return None;
    }
    let mut fields = std::collections::HashMap::new();
    fields.insert(TRACE_HEADER.to_owned(), carrier_payload(&carrier));
    Some(Header { fields })
}

struct CarrierInjector<'a>(&'a mut std::collections::BTreeMap<String, String>);

impl opentelemetry::propagation::Injector for CarrierInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

#[async_trait]
impl WorkflowStarter for TemporalStarter {
    async fn start_sync(&self, input: SyncRunInput) -> anyhow::Result<String> {
        let workflow_id = workflow_id_for_run("sync", &input.tenant_id, &input.run_id);
        let span = start_span(
            "entra_sync_run",
            &input.tenant_id,
            &input.run_id,
            &workflow_id,
        );
        let options = self.traced_options(workflow_id.clone(), &span);
        self.client
            .start_workflow(SyncWorkflow::run, input, options)
            .instrument(span)
            .await
            .map_err(|error| anyhow::anyhow!("starting the sync workflow failed: {error}"))?;
        Ok(workflow_id)
    }

    async fn start_discovery(&self, input: DiscoveryRunInput) -> anyhow::Result<String> {
        let workflow_id = workflow_id_for_run("discovery", &input.tenant_id, &input.run_id);
        let span = start_span(
            "entra_discovery_run",
            &input.tenant_id,
            &input.run_id,
            &workflow_id,
        );
        let options = self.traced_options(workflow_id.clone(), &span);
        self.client
            .start_workflow(DiscoveryWorkflow::run, input, options)
            .instrument(span)
            .await
            .map_err(|error| anyhow::anyhow!("starting the discovery workflow failed: {error}"))?;
        Ok(workflow_id)
    }

    /// The frontend's gRPC health check, bounded so `/readyz` answers quickly.
    async fn ready(&self) -> anyhow::Result<()> {
        use temporalio_common::protos::grpc::health::v1::HealthCheckRequest;
        let mut health = self.client.connection().health_service();
        let check = health.check(temporalio_client::tonic::Request::new(
            HealthCheckRequest::default(),
        ));
        tokio::time::timeout(std::time::Duration::from_secs(2), check)
            .await
            .map_err(|_| anyhow::anyhow!("temporal health check timed out"))?
            .map_err(|status| anyhow::anyhow!("temporal health check failed: {}", status.code()))?;
        Ok(())
    }

    async fn cancel(&self, workflow_id: &str) -> anyhow::Result<()> {
        self.client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id)
            .cancel(
                WorkflowCancelOptions::builder()
                    .reason("cancelled through the API".to_owned())
                    .build(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("cancelling the workflow failed: {error}"))
    }

    /// One Schedule per PSA tenant (`schedule_id_for_tenant`): created when missing, otherwise
    /// updated in place (interval, action, overlap policy skip, unpaused), deleted when
    /// `interval` is None. Every step tolerates the state another caller left behind, so the
    /// API and a starting worker can both apply the same settings.
    async fn apply_schedule(
        &self,
        tenant_id: uuid::Uuid,
        interval: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        use temporalio_client::schedules::{
            CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy,
            ScheduleSpec,
        };
        use temporalio_client::tonic::Code;

        let tenant = tenant_id.to_string();
        let schedule_id = entra_sync_workflows::schedule_id_for_tenant(&tenant);
        let handle = self.client.get_schedule_handle(schedule_id.clone());
        let status_code = |error: &ScheduleError| match error {
            ScheduleError::Rpc(status) => Some(status.code()),
            _ => None,
        };
        let Some(interval) = interval else {
            return match handle.delete(Default::default()).await {
                Err(error) if status_code(&error) != Some(Code::NotFound) => Err(anyhow::anyhow!(
                    "deleting the schedule {schedule_id} failed: {error}"
                )),
                _ => Ok(()),
            };
        };
        let action = ScheduleAction::start_workflow(
            entra_sync_workflows::ScheduledSyncWorkflow::run,
            entra_sync_workflows::contract::ScheduledSyncInput {
                version: entra_sync_workflows::contract::CONTRACT_VERSION,
                tenant_id: tenant.clone(),
            },
            self.task_queue.clone(),
            entra_sync_workflows::scheduled_workflow_id_prefix(&tenant),
        );
        let spec = ScheduleSpec::from_interval(interval);
        let update = |action: ScheduleAction, spec: ScheduleSpec| {
            let handle = handle.clone();
            async move {
                handle
                    .update(
                        move |update| {
                            update
                                .set_spec(spec)
                                .set_action(action)
                                .set_overlap_policy(ScheduleOverlapPolicy::Skip)
                                .set_paused(false);
                        },
                        Default::default(),
                    )
                    .await
            }
        };
        let result = match handle.describe(Default::default()).await {
            Ok(_) => update(action, spec).await,
            Err(error) if status_code(&error) == Some(Code::NotFound) => {
                let created = self
                    .client
                    .create_schedule(
                        schedule_id.clone(),
                        CreateScheduleOptions::builder()
                            .action(action.clone())
                            .spec(spec.clone())
                            .overlap_policy(ScheduleOverlapPolicy::Skip)
                            .build(),
                    )
                    .await;
                match created {
                    Ok(_) => Ok(()),
                    // Someone created it in between: bring theirs up to date instead.
                    Err(error) if status_code(&error) == Some(Code::AlreadyExists) => {
                        update(action, spec).await
                    }
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        result
            .map_err(|error| anyhow::anyhow!("applying the schedule {schedule_id} failed: {error}"))
    }
}
