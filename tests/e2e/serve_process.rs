//! `entra-sync serve` as a process, configured like the container image: JSON logs, the API on
//! one port and `/metrics`, `/healthz`, `/readyz` on the operations port only. The container
//! HEALTHCHECK (`entra-sync healthcheck`) passes once it is up and fails when nothing answers;
//! the database gauges are there without any tenant label; SIGTERM drains and exits cleanly;
//! every log line is one JSON object, and none carries a trace id (traces are off without
//! `OTEL_EXPORTER_OTLP_ENDPOINT`).

use std::time::Duration;

use anyhow::{Context, Result};
use entra_sync_simulator::SimulatorConfig;
use serde_json::Value;

use crate::harness::Stack;
use crate::workflow_support::{eventually, worker_binary};

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn healthcheck(stack: &Stack, url: Option<&str>, ops_listen: &str) -> Result<bool> {
    let mut command = tokio::process::Command::new(worker_binary()?);
    command
        .arg("healthcheck")
        .env_clear()
        .envs(stack.environment.iter().cloned())
        .env("ENTRA_SYNC__METRICS__LISTEN", ops_listen)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(url) = url {
        command.args(["--url", url]);
    }
    Ok(command.status().await?.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_process_keeps_metrics_off_the_api_and_stops_on_sigterm() -> Result<()> {
    let stack = Stack::start(SimulatorConfig {
        tenants: 1,
        users: 10,
        ..SimulatorConfig::default()
    })
    .await?;
    let api_port = free_port()?;
    let ops_port = free_port()?;
    let ops_listen = format!("0.0.0.0:{ops_port}");
    let log = std::env::temp_dir().join(format!(
        "entra-sync-serve-{}-{}.log",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut child = tokio::process::Command::new(worker_binary()?)
        .arg("serve")
        .env_clear()
        .envs(stack.environment.iter().cloned())
        .env("ENTRA_SYNC_LISTEN", format!("127.0.0.1:{api_port}"))
        .env("ENTRA_SYNC__METRICS__LISTEN", &ops_listen)
        .env("ENTRA_SYNC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting entra-sync serve")?;

    // The HEALTHCHECK: the wildcard listen address is asked on loopback.
    eventually(
        "the healthcheck passes",
        Duration::from_secs(60),
        || async { Ok(healthcheck(&stack, None, &ops_listen).await?.then_some(())) },
    )
    .await?;
    assert!(
        !healthcheck(&stack, Some("http://127.0.0.1:1/healthz"), &ops_listen).await?,
        "the healthcheck passed with nothing listening"
    );

    let api = format!("http://127.0.0.1:{api_port}");
    let ops = format!("http://127.0.0.1:{ops_port}");
    assert_eq!(reqwest::get(format!("{api}/readyz")).await?.status(), 200);
    assert_eq!(reqwest::get(format!("{ops}/readyz")).await?.status(), 200);
    let on_api = reqwest::get(format!("{api}/metrics")).await?;
    assert_eq!(on_api.status(), 404, "/metrics is on the public API");
    let metrics = eventually("the database gauges", Duration::from_secs(60), || async {
        let text = reqwest::get(format!("{ops}/metrics")).await?.text().await?;
        Ok(text
            .contains("entra_sync_runs{kind=\"sync\",status=\"running\"} 0")
            .then_some(text))
    })
    .await?;
    assert!(metrics.contains("entra_sync_review_backlog 0"), "{metrics}");
    assert!(
        metrics.contains("entra_sync_active_connections 0"),
        "{metrics}"
    );
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        if let Some((_, labels)) = line.split_once('{') {
            assert!(!labels.contains("tenant"), "a tenant label: {line}");
        }
    }

    let pid = child.id().context("serve exited early")?;
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("serve did not exit after SIGTERM")??;
    assert!(status.success(), "serve exited with {status:?}");

    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("a log line is not JSON: {line}"))
        })
        .collect::<Result<_>>()?;
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "API listening" && line["level"] == "INFO"),
        "{text}"
    );
    assert!(
        !text.contains(&stack.master_key),
        "the master key was logged"
    );
    // Traces are off without OTEL_EXPORTER_OTLP_ENDPOINT: no line carries a trace id.
    assert!(
        lines.iter().all(|line| line.get("trace_id").is_none()),
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
    Ok(())
}
