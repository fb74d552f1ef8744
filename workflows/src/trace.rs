//! Trace context across Temporal: the API puts the W3C trace context (`traceparent`, and
//! `tracestate` when there is one) of its workflow-start span into the start's Temporal header
//! [`TRACE_HEADER`]; [`trace_header_interceptor`] copies that header, unchanged, onto every
//! activity the workflow schedules and every child workflow it starts; the worker's activity
//! interceptor (`entra_sync_activities::TraceContextInterceptor`) makes it the parent of the
//! activity's span. One run is thus one trace from the API request to each provider request.
//!
//! The header's key and encoding are those of the Temporal SDKs' OpenTelemetry interceptors
//! (`_tracer-data`, a JSON string map), so a trace also continues through other SDKs' workers.
//!
//! Workflow code stays deterministic: the interceptor only copies bytes that are already in
//! the workflow's history (the start event's header) into the commands it issues; it reads no
//! clock, does no I/O and creates no span. A workflow started without the header (a Temporal
//! Schedule's firing, a history recorded before traces existed) schedules exactly the commands
//! it did before.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use temporalio_common::protos::temporal::api::common::v1::Payload;
use temporalio_sdk::workflow_interceptors::{
    CancellableWorkflowOutboundFuture, ExecuteWorkflowInput, ExecuteWorkflowResult,
    ScheduleActivityInput, ScheduleActivityResult, ScheduleLocalActivityInput,
    StartChildWorkflowInput, StartChildWorkflowResult, WorkflowInterceptor,
    WorkflowInterceptorConstructor, WorkflowInterceptorContext, WorkflowInterceptorFuture,
    WorkflowNext,
};

/// The Temporal header that carries the trace context (the key the Temporal SDKs use).
pub const TRACE_HEADER: &str = "_tracer-data";

/// The header payload for a propagator's carrier (`traceparent` → value, …): a JSON object,
/// encoded `json/plain` as Temporal's default payload converter does.
pub fn carrier_payload(carrier: &BTreeMap<String, String>) -> Payload {
    let mut metadata = HashMap::new();
    metadata.insert("encoding".to_owned(), b"json/plain".to_vec());
    Payload {
        metadata,
        data: serde_json::to_vec(carrier).unwrap_or_else(|_| b"{}".to_vec()),
        ..Default::default()
    }
}

/// The carrier in a header payload; None when the payload is not a JSON string map.
pub fn payload_carrier(payload: &Payload) -> Option<BTreeMap<String, String>> {
    serde_json::from_slice(&payload.data).ok()
}

/// The trace header among `headers`, decoded.
pub fn trace_carrier(headers: &HashMap<String, Payload>) -> Option<BTreeMap<String, String>> {
    headers.get(TRACE_HEADER).and_then(payload_carrier)
}

/// Copies the workflow's trace header onto its activities and child workflows.
#[derive(Default)]
pub struct TraceHeaderInterceptor {
    /// The start header's trace payload, read when the workflow's run method is invoked (again
    /// on every rebuild of an evicted workflow, from the same history).
    header: Rc<RefCell<Option<Payload>>>,
}

impl TraceHeaderInterceptor {
    fn stamp(&self, headers: &mut HashMap<String, Payload>) {
        if let Some(payload) = self.header.borrow().as_ref() {
            headers
                .entry(TRACE_HEADER.to_owned())
                .or_insert_with(|| payload.clone());
        }
    }
}

impl WorkflowInterceptor for TraceHeaderInterceptor {
    fn execute<'a>(
        &'a self,
        _ctx: WorkflowInterceptorContext,
        input: ExecuteWorkflowInput,
        next: WorkflowNext<
            'a,
            ExecuteWorkflowInput,
            WorkflowInterceptorFuture<'a, ExecuteWorkflowResult>,
        >,
    ) -> WorkflowInterceptorFuture<'a, ExecuteWorkflowResult> {
        *self.header.borrow_mut() = input.headers().get(TRACE_HEADER).cloned();
        next.run(input)
    }

    fn schedule_activity(
        &self,
        _ctx: WorkflowInterceptorContext,
        mut input: ScheduleActivityInput,
        next: WorkflowNext<
            'static,
            ScheduleActivityInput,
            CancellableWorkflowOutboundFuture<ScheduleActivityResult>,
        >,
    ) -> CancellableWorkflowOutboundFuture<ScheduleActivityResult> {
        self.stamp(input.headers_mut());
        next.run(input)
    }

    fn schedule_local_activity(
        &self,
        _ctx: WorkflowInterceptorContext,
        mut input: ScheduleLocalActivityInput,
        next: WorkflowNext<
            'static,
            ScheduleLocalActivityInput,
            CancellableWorkflowOutboundFuture<ScheduleActivityResult>,
        >,
    ) -> CancellableWorkflowOutboundFuture<ScheduleActivityResult> {
        self.stamp(input.headers_mut());
        next.run(input)
    }

    fn start_child_workflow(
        &self,
        _ctx: WorkflowInterceptorContext,
        mut input: StartChildWorkflowInput,
        next: WorkflowNext<
            'static,
            StartChildWorkflowInput,
            CancellableWorkflowOutboundFuture<StartChildWorkflowResult>,
        >,
    ) -> CancellableWorkflowOutboundFuture<StartChildWorkflowResult> {
        self.stamp(input.headers_mut());
        next.run(input)
    }
}

/// The constructor a worker (and the replay test) registers: one interceptor per workflow
/// instance.
pub fn trace_header_interceptor() -> WorkflowInterceptorConstructor {
    WorkflowInterceptorConstructor::new(|_| TraceHeaderInterceptor::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carrier_round_trips_through_the_header_payload() {
        let mut carrier = BTreeMap::new();
        carrier.insert(
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        );
        let payload = carrier_payload(&carrier);
        assert_eq!(
            payload.metadata.get("encoding").map(Vec::as_slice),
            Some(b"json/plain".as_slice())
        );
        assert_eq!(payload_carrier(&payload), Some(carrier.clone()));
        let mut headers = HashMap::new();
        headers.insert(TRACE_HEADER.to_owned(), payload);
        assert_eq!(trace_carrier(&headers), Some(carrier));
        assert_eq!(trace_carrier(&HashMap::new()), None);
    }
}
