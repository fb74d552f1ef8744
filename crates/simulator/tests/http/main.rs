//! HTTP tests of the simulator: each module drives one surface over real HTTP with reqwest.

mod admin;
mod cipp;
mod graph;
mod login;

use entra_sync_simulator::{Simulator, SimulatorConfig};
use serde_json::Value;

/// A small configuration with two tenants above 999 users (sizes are deterministic for the seed).
pub fn small_config() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 5,
        users: 2_800,
        ..SimulatorConfig::default()
    }
}

pub async fn start() -> Simulator {
    Simulator::start(small_config())
        .await
        .expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds")
}

/// Posts a form to the token endpoint of `tenant` and returns status and JSON body.
pub async fn token_request(sim: &Simulator, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = client()
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            sim.login_base_url()
        ))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("token body is JSON"))
}

/// An app-only Graph token (client credentials) for `tenant`.
pub async fn app_token(sim: &Simulator, tenant: &str) -> String {
    let config = sim.config().clone();
    let (status, body) = token_request(
        sim,
        tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &config.app_client_id),
            ("client_secret", &config.app_client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

/// GET with a bearer token; returns status, headers and the body parsed as JSON (Null if not JSON).
pub async fn get(url: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client()
        .get(url)
        .bearer_auth(token)
        .header("x-ms-throttle-priority", "Low")
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Asserts the MICROSOFT.md §4 Graph error body and returns its code.
pub fn graph_error_code(body: &Value) -> String {
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["innerError"]["request-id"].is_string(), "{body}");
    assert!(error["innerError"]["date"].is_string(), "{body}");
    error["code"].as_str().expect("error code").to_string()
}
