//! The activity span: every activity runs inside one `activity` span whose parent is the trace
//! context its workflow was started with (the Temporal header
//! `entra_sync_workflows::trace::TRACE_HEADER`, copied onto each activity by the workflow
//! interceptor), so the activity, and each provider request under it, joins the API request's
//! trace. The span carries the activity type, the attempt, and the ids found in the activity's
//! input: PSA tenant id, run id and managed tenant id — ids only, never a token or an address.
//!
//! Without a tracer (OpenTelemetry off) the span is an ordinary `tracing` span: log lines
//! written inside it carry its fields.

use opentelemetry::trace::TraceContextExt;
use temporalio_sdk::interceptors::{
    ActivityInboundInterceptor, ExecuteActivityInput, ExecuteActivityOutput, Next,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use entra_sync_workflows::contract::{
    DiscoverInput, FinishRunInput, OpenScheduledRunInput, PrepareSyncInput, ScheduleSettingsInput,
    SyncTenantInput, SyncTenantsInput, TenantFailureInput,
};
use entra_sync_workflows::trace::trace_carrier;

/// Registered on the worker (`WorkerOptions::activity_inbound_interceptor`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextInterceptor;

/// The ids an activity's input names: (PSA tenant, run, managed tenant).
fn input_ids(input: &ExecuteActivityInput) -> (Option<&str>, Option<&str>, Option<&str>) {
    if let Some(input) = input.args_ref::<SyncTenantInput>() {
        return (
            Some(&input.tenant_id),
            Some(&input.run_id),
            Some(&input.target.managed_tenant_id),
        );
    }
    if let Some(input) = input.args_ref::<TenantFailureInput>() {
        return (
            Some(&input.tenant_id),
            Some(&input.run_id),
            Some(&input.managed_tenant_id),
        );
    }
    // Several tenants: each has its own span under this one (`sync_tenant_inner`).
    if let Some(input) = input.args_ref::<SyncTenantsInput>() {
        return (Some(&input.tenant_id), Some(&input.run_id), None);
    }
    if let Some(input) = input.args_ref::<PrepareSyncInput>() {
        return (Some(&input.tenant_id), Some(&input.run_id), None);
    }
    if let Some(input) = input.args_ref::<FinishRunInput>() {
        return (Some(&input.tenant_id), Some(&input.run_id), None);
    }
    if let Some(input) = input.args_ref::<DiscoverInput>() {
        return (Some(&input.tenant_id), Some(&input.run_id), None);
    }
    if let Some(input) = input.args_ref::<ScheduleSettingsInput>() {
        return (Some(&input.tenant_id), None, None);
    }
    if let Some(input) = input.args_ref::<OpenScheduledRunInput>() {
        return (Some(&input.tenant_id), None, None);
    }
    (None, None, None)
}

/// The remote parent in the activity's headers, when there is a valid one. Extracted with the
/// process's propagator (W3C trace context, installed with the tracer; without a tracer the
/// no-op propagator finds nothing).
fn remote_parent(input: &ExecuteActivityInput) -> Option<opentelemetry::Context> {
    let carrier = trace_carrier(input.headers())?;
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&CarrierExtractor(&carrier))
    });
    context.span().span_context().is_valid().then_some(context)
}

struct CarrierExtractor<'a>(&'a std::collections::BTreeMap<String, String>);

impl opentelemetry::propagation::Extractor for CarrierExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

impl ActivityInboundInterceptor for TraceContextInterceptor {
    fn execute_activity<'a>(
        &'a self,
        input: ExecuteActivityInput,
        next: Next<'a, ExecuteActivityInput, ExecuteActivityOutput<'a>>,
    ) -> ExecuteActivityOutput<'a> {
        let info = input.activity_info();
        let activity_type = info.activity_type.clone();
        let attempt = info.attempt;
        let (tenant_id, run_id, managed_tenant_id) = input_ids(&input);
        let span = tracing::info_span!(
            parent: None,
            "activity",
            otel.name = format!("activity {activity_type}"),
            otel.kind = "consumer",
            activity_type = %activity_type,
            attempt,
            tenant_id,
            run_id,
            managed_tenant_id,
        );
        if let Some(parent) = remote_parent(&input) {
            // Only fails when no OpenTelemetry layer is installed: nothing to parent then.
            let _ = span.set_parent(parent);
        }
        Box::pin(next.run(input).instrument(span))
    }
}
