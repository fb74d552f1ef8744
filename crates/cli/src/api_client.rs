//! A small client of entra-sync's own HTTP API, used by the demo and the operator
//! subcommands: JSON in and out, `x-api-key` auth, and errors that carry the API's message.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// A client of the API for one key.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ApiClient {
    pub fn new(base: &str, key: &str) -> Result<ApiClient> {
        Ok(ApiClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    pub fn with_key(&self, key: &str) -> ApiClient {
        ApiClient {
            http: self.http.clone(),
            base: self.base.clone(),
            key: key.to_owned(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("x-api-key", &self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path} answered non-JSON"))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Polls a run until it is no longer `running`.
    pub async fn wait_for_run(
        &self,
        run_id: &str,
        deadline: Duration,
        mut progress: impl FnMut(&Value),
    ) -> Result<Value> {
        let started = Instant::now();
        loop {
            let run = self
                .get(&format!("/api/v1/integrations/entra/sync/runs/{run_id}"))
                .await?;
            progress(&run);
            if run["status"] != "running" {
                return Ok(run);
            }
            if started.elapsed() > deadline {
                bail!("run {run_id} still running after {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
