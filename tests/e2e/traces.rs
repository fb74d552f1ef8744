//! Traces on the real stack: `entra-sync serve` and `entra-sync worker` processes export to an
//! OTLP/HTTP receiver in this test (protobuf, decoded with `opentelemetry-proto`). One sync
//! started through the API is one trace: the API request's span, its workflow-start span, each
//! activity's span (parented through the Temporal header the workflow copies onto its
//! activities) and each CIPP request's span under its tenant's `sync_tenant` activity. The
//! spans carry the PSA tenant, run and managed tenant ids, and no attribute holds a token or an
//! email address. Nothing is exported before SIGTERM (the batch delay is ten minutes): both
//! processes export what they hold in the flush of their graceful shutdown, and the
//! worker's JSON log lines carry the trace's id. The workflow's history, which now holds the
//! trace header, replays against the workflows with the worker's interceptor. A discovery
//! started through the API is a trace of its own, with `discover_tenants` and CIPP's tenant
//! list under its workflow start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use entra_sync::demo::ApiClient;
use entra_sync_simulator::SimulatorConfig;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::Value;
use temporalio_client::UntypedWorkflow;

use crate::harness::Stack;
use crate::workflow_support::{
    eventually, prepare, start_sync, temporal, wait_finished, worker_binary,
};

/// One received span, ids in lower-case hex.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
    /// The span's events (its log lines): name and attributes.
    events: Vec<(String, BTreeMap<String, String>)>,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(number)) => number.to_string(),
        Some(AnyValue::BoolValue(flag)) => flag.to_string(),
        Some(AnyValue::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> axum::http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| resource.attributes.iter())
            .find(|attribute| attribute.key == "service.name")
            .map(|attribute| text(attribute.value.as_ref()))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|attribute| (attribute.key.clone(), text(attribute.value.as_ref())))
                        .collect(),
                    events: span
                        .events
                        .iter()
                        .map(|event| {
                            (
                                event.name.clone(),
                                event
                                    .attributes
                                    .iter()
                                    .map(|attribute| {
                                        (attribute.key.clone(), text(attribute.value.as_ref()))
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                });
            }
        }
    }
    received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .extend(spans);
    axum::http::StatusCode::OK
}

/// The OTLP/HTTP receiver: `POST /v1/traces` on an ephemeral loopback port.
async fn start_receiver() -> Result<(String, Received)> {
    let received: Received = Arc::default();
    let router = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, received))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// An `entra-sync` process exporting traces to `endpoint`, JSON logs in `log`.
fn spawn(
    stack: &Stack,
    role: &str,
    endpoint: &str,
    log: &std::path::Path,
    extra: &[(&str, String)],
) -> Result<tokio::process::Child> {
    tokio::process::Command::new(worker_binary()?)
        .arg(role)
        .env_clear()
        .envs(stack.environment.iter().cloned())
        .envs(extra.iter().map(|(name, value)| (*name, value.clone())))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        // No periodic export during the test: every span must reach the receiver through the
        // flush at the end of a graceful shutdown.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env("ENTRA_SYNC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting entra-sync {role}"))
}

async fn terminate(mut child: tokio::process::Child, role: &str) -> Result<()> {
    let pid = child.id().with_context(|| format!("{role} exited early"))?;
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    anyhow::ensure!(sent.success(), "kill -TERM {role}");
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .with_context(|| format!("{role} did not exit after SIGTERM"))??;
    anyhow::ensure!(status.success(), "{role} exited with {status:?}");
    Ok(())
}

/// The span's ancestors (nearest first) among `spans`, by parent id.
fn ancestors<'a>(span: &ReceivedSpan, spans: &'a [ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
    let by_id: BTreeMap<&str, &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.as_str();
    while let Some(next) = by_id.get(parent) {
        chain.push(*next);
        parent = next.parent_span_id.as_str();
        if chain.len() > 64 {
            break;
        }
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_is_one_trace_from_the_api_request_to_each_provider_request() -> Result<()> {
    let stack = Stack::start(SimulatorConfig {
        tenants: 2,
        users: 40,
        ..SimulatorConfig::default()
    })
    .await?;
    // Connected, discovered and mapped with the in-process (untraced) worker.
    let prepared = stack.run(prepare(&stack)).await?;
    let psa_tenant = prepared.tenant_id.to_string();
    let managed: BTreeSet<String> = prepared.managed.values().cloned().collect();

    let (endpoint, received) = start_receiver().await?;
    let logs = std::env::temp_dir().join(format!(
        "entra-sync-traces-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&logs)?;
    let api_port = free_port()?;
    let api = format!("http://127.0.0.1:{api_port}");
    let serve = spawn(
        &stack,
        "serve",
        &endpoint,
        &logs.join("serve.log"),
        &[("ENTRA_SYNC_LISTEN", format!("127.0.0.1:{api_port}"))],
    )?;
    let worker = spawn(&stack, "worker", &endpoint, &logs.join("worker.log"), &[])?;
    eventually("the API answers", Duration::from_secs(60), || async {
        Ok(match reqwest::get(format!("{api}/healthz")).await {
            Ok(response) if response.status().is_success() => Some(()),
            _ => None,
        })
    })
    .await?;

    let admin = ApiClient::new(&api, &prepared.admin_key)?;
    let (run_id, deduplicated) = start_sync(&admin).await?;
    assert!(!deduplicated);
    let run = wait_finished(&admin, &run_id, Duration::from_secs(180)).await?;
    assert_eq!(run["status"], "completed", "{run}");
    let workflow_id = entra_sync_workflows::workflow_id_for_run("sync", &psa_tenant, &run_id);

    // A discovery through the traced API too.
    let discovery = admin
        .post(
            "/api/v1/integrations/entra/discovery",
            serde_json::json!({}),
        )
        .await?;
    let discovery_id = discovery["run_id"]
        .as_str()
        .context("discovery run_id")?
        .to_owned();
    let discovered = wait_finished(&admin, &discovery_id, Duration::from_secs(120)).await?;
    assert_eq!(discovered["status"], "completed", "{discovered}");

    // Stopped gracefully: each process exports the spans it still holds before exiting.
    assert!(
        received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty(),
        "spans were exported before the shutdown flush"
    );
    terminate(serve, "serve").await?;
    terminate(worker, "worker").await?;
    let spans: Vec<ReceivedSpan> = received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let describe = || {
        spans
            .iter()
            .map(|span| {
                format!(
                    "{} {} {} <- {} {:?}",
                    span.service, span.name, span.span_id, span.parent_span_id, span.attributes
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The API request that started the run.
    let request = spans
        .iter()
        .find(|span| {
            span.service == "entra-sync-api"
                && span.name == "POST /api/v1/integrations/entra/sync"
                && span.attribute("run_id") == run_id
        })
        .with_context(|| format!("no request span for the run:\n{}", describe()))?;
    assert_eq!(request.attribute("tenant_id"), psa_tenant);
    assert_eq!(request.attribute("http.response.status_code"), "202");
    let trace_id = request.trace_id.clone();
    let in_trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect();

    // Its workflow start, a child of the request.
    let start = in_trace
        .iter()
        .find(|span| span.name == "start workflow entra_sync_run")
        .with_context(|| format!("no workflow-start span in the trace:\n{}", describe()))?;
    assert_eq!(start.service, "entra-sync-api");
    assert_eq!(start.parent_span_id, request.span_id);
    assert_eq!(start.attribute("run_id"), run_id);
    assert_eq!(start.attribute("tenant_id"), psa_tenant);
    assert_eq!(start.attribute("workflow_id"), workflow_id);

    // Every activity of the run, in the worker, children of the workflow start.
    let activities: Vec<&ReceivedSpan> = in_trace
        .iter()
        .filter(|span| span.name.starts_with("activity "))
        .collect();
    let names: BTreeSet<&str> = activities.iter().map(|span| span.name.as_str()).collect();
    for expected in [
        "activity prepare_sync",
        "activity sync_tenant",
        "activity finish_run",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing:\n{}",
            describe()
        );
    }
    for activity in &activities {
        assert_eq!(activity.service, "entra-sync-worker", "{activity:?}");
        assert_eq!(activity.parent_span_id, start.span_id, "{activity:?}");
        assert_eq!(activity.attribute("tenant_id"), psa_tenant, "{activity:?}");
        assert_eq!(activity.attribute("run_id"), run_id, "{activity:?}");
    }
    let tenant_syncs: Vec<&&ReceivedSpan> = activities
        .iter()
        .filter(|span| span.name == "activity sync_tenant")
        .collect();
    let synced: BTreeSet<String> = tenant_syncs
        .iter()
        .map(|span| span.attribute("managed_tenant_id").to_owned())
        .collect();
    assert_eq!(synced, managed, "one sync_tenant span per managed tenant");

    // Each CIPP request of the sync, under its tenant's sync_tenant activity.
    let cipp_host = url::Url::parse(&stack.simulator.cipp_base_url())?
        .host_str()
        .unwrap_or_default()
        .to_owned();
    let requests: Vec<&ReceivedSpan> = in_trace
        .iter()
        .filter(|span| span.name.starts_with("GET ") || span.name.starts_with("POST "))
        .filter(|span| span.service == "entra-sync-worker")
        .collect();
    let user_pages: Vec<&&ReceivedSpan> = requests
        .iter()
        .filter(|span| span.attribute("url.path").ends_with("/ListGraphRequest"))
        .collect();
    assert!(
        user_pages.len() >= managed.len(),
        "expected a users request per tenant:\n{}",
        describe()
    );
    for page in &user_pages {
        assert_eq!(page.attribute("server.address"), cipp_host, "{page:?}");
        assert_eq!(page.attribute("http.response.status_code"), "200");
        assert!(!page.attribute("entra_tenant_id").is_empty(), "{page:?}");
        let chain = ancestors(page, &in_trace);
        let activity = chain
            .iter()
            .find(|span| span.name.starts_with("activity "))
            .with_context(|| format!("{page:?} has no activity ancestor"))?;
        assert_eq!(activity.name, "activity sync_tenant", "{page:?}");
        assert!(
            chain.iter().any(|span| span.span_id == start.span_id)
                && chain.iter().any(|span| span.span_id == request.span_id),
            "{page:?} does not lead back to the API request"
        );
    }

    // The discovery: request, start, `discover_tenants` (with CIPP's tenant list under it) and
    // `finish_run`, one trace of its own.
    let discovery_request = spans
        .iter()
        .find(|span| {
            span.name == "POST /api/v1/integrations/entra/discovery"
                && span.attribute("run_id") == discovery_id
        })
        .with_context(|| format!("no discovery request span:\n{}", describe()))?;
    assert_ne!(discovery_request.trace_id, trace_id);
    let discovery_trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == discovery_request.trace_id)
        .cloned()
        .collect();
    let discovery_start = discovery_trace
        .iter()
        .find(|span| span.name == "start workflow entra_discovery_run")
        .context("no discovery workflow-start span")?;
    assert_eq!(discovery_start.parent_span_id, discovery_request.span_id);
    let discover = discovery_trace
        .iter()
        .find(|span| span.name == "activity discover_tenants")
        .context("no discover_tenants span")?;
    assert_eq!(discover.parent_span_id, discovery_start.span_id);
    assert_eq!(discover.attribute("run_id"), discovery_id);
    assert_eq!(discover.attribute("tenant_id"), psa_tenant);
    assert!(discovery_trace.iter().any(|span| {
        span.name == "activity finish_run" && span.parent_span_id == discovery_start.span_id
    }));
    let listing = discovery_trace
        .iter()
        .find(|span| span.attribute("url.path").ends_with("/ListTenants"))
        .with_context(|| format!("no ListTenants request span:\n{}", describe()))?;
    assert!(
        ancestors(listing, &discovery_trace)
            .iter()
            .any(|span| span.span_id == discover.span_id),
        "{listing:?} is not under discover_tenants"
    );

    // No attribute of any exported span or span event (log line) holds a token, a key or an
    // email address.
    let secrets = [
        stack.simulator.config().cipp_api_token.clone(),
        stack.master_key.clone(),
        prepared.admin_key.clone(),
    ];
    for span in &spans {
        let event_attributes = span
            .events
            .iter()
            .flat_map(|(name, attributes)| attributes.iter().chain([(name, name)]));
        for (key, value) in span.attributes.iter().chain(event_attributes) {
            assert!(!value.contains('@'), "an address in {key} of {span:?}");
            assert!(
                !value.to_ascii_lowercase().contains("bearer"),
                "a token in {key} of {span:?}"
            );
            for secret in &secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "a secret in {key} of {span:?}"
                );
            }
        }
    }

    // The worker's JSON log lines written inside the run's activities carry its trace id.
    let worker_log = std::fs::read_to_string(logs.join("worker.log"))?;
    let lines: Vec<Value> = worker_log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect::<Result<_>>()?;
    let finished = lines
        .iter()
        .find(|line| line["message"] == "run finished" && line["run_id"] == run_id.as_str())
        .with_context(|| format!("no `run finished` line:\n{worker_log}"))?;
    assert_eq!(finished["trace_id"], trace_id.as_str(), "{finished}");
    let finish_span = activities
        .iter()
        .find(|span| span.name == "activity finish_run")
        .context("finish_run span")?;
    assert_eq!(finish_span.trace_id, trace_id);
    assert_eq!(
        finished["span_id"].as_str().map(str::len),
        Some(16),
        "{finished}"
    );

    // The history now carries the trace header; it replays with the worker's interceptor.
    let client = temporal(&stack).await?;
    let history = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id.as_str())
        .fetch_history(Default::default())
        .to_json()
        .await?;
    if !String::from_utf8_lossy(&history).contains(entra_sync_workflows::trace::TRACE_HEADER) {
        bail!("the workflow's history holds no trace header");
    }
    let replayer = temporalio_sdk::workflow_replayer::WorkflowReplayer::new(
        temporalio_sdk::workflow_replayer::WorkflowReplayerOptions::new()
            .register_workflow::<entra_sync_workflows::SyncWorkflow>()?
            .workflow_interceptor(entra_sync_workflows::trace::trace_header_interceptor())
            .build(),
    )?;
    replayer
        .replay_workflow(temporalio_client::WorkflowHistory::from_json(&history)?)
        .await
        .map_err(|error| anyhow::anyhow!("the traced history does not replay: {error}"))?;

    if std::env::var_os("ENTRA_SYNC_PRINT_SPANS").is_some() {
        eprintln!("{}", describe());
    }
    eprintln!(
        "traces: {} spans received ({} events), {} in the run's trace ({} activities, {} user-page requests)",
        spans.len(),
        spans.iter().map(|span| span.events.len()).sum::<usize>(),
        in_trace.len(),
        activities.len(),
        user_pages.len()
    );
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}
