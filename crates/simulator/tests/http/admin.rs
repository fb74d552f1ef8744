//! The admin HTTP API: directory changes, faults, settings, state and reset.

use serde_json::{json, Value};

use crate::{app_token, client, get, start};

async fn post(url: String, body: Value) -> (u16, Value) {
    let response = client().post(url).json(&body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_changes_show_up_in_graph_and_reset_restores_the_seed() {
    let sim = start().await;
    let admin = format!("{}/_admin", sim.base_url());
    let tenant = sim
        .msp()
        .tenants
        .into_iter()
        .find(|tenant| tenant.users.len() < 900)
        .expect("a tenant that fits one page");
    let domain = tenant.default_domain().to_string();

    let (status, user) = post(
        format!("{admin}/tenants/{domain}/users"),
        json!({"given_name": "Ada", "surname": "Lovelace", "job_title": "Analyst"}),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    let id = user["id"].as_str().expect("id").to_string();
    assert_eq!(user["mail"], format!("ada.lovelace@{domain}"));

    let response = client()
        .patch(format!("{admin}/tenants/{}/users/{id}", tenant.tenant_id))
        .json(&json!({"display_name": "Ada King", "mail": null}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status().as_u16(), 200);
    let (status, _) = post(
        format!("{admin}/tenants/{}/users/{id}/disable", tenant.tenant_id),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        format!("{admin}/tenants/{}/users/{id}/restore", tenant.tenant_id),
        json!({}),
    )
    .await;
    assert_eq!(
        status, 409,
        "restoring a user that is not deleted is refused"
    );
    let (status, _) = post(
        format!("{admin}/tenants/{}/users/nobody/disable", tenant.tenant_id),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);

    let token = app_token(&sim, &tenant.tenant_id).await;
    let (_, _, body) = get(
        &format!(
            "{}/v1.0/users?$select=id,displayName,mail,accountEnabled&$top=999",
            sim.graph_base_url()
        ),
        &token,
    )
    .await;
    let ada = body["value"]
        .as_array()
        .and_then(|users| users.iter().find(|user| user["id"] == id.as_str()).cloned())
        .expect("new user listed");
    assert_eq!(ada["displayName"], "Ada King");
    assert!(ada["mail"].is_null());
    assert_eq!(ada["accountEnabled"], false);

    let (status, fault) = post(
        format!("{admin}/faults"),
        json!({"kind": "throttle", "retry_after_secs": 2, "path_prefix": "/graph", "count": 1}),
    )
    .await;
    assert_eq!(status, 200, "{fault}");
    let (status, _, _) = get(&format!("{}/v1.0/users", sim.graph_base_url()), &token).await;
    assert_eq!(status, 429);
    let (status, settings) =
        post(format!("{admin}/settings"), json!({"delta_page_size": 50})).await;
    assert_eq!(status, 200);
    assert_eq!(settings["delta_page_size"], 50);
    let (status, _) = post(format!("{admin}/settings"), json!({"no_such_setting": 1})).await;
    assert_eq!(status, 400);

    let state: Value = client()
        .get(format!("{admin}/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(
        state["tenants"].as_array().map(Vec::len),
        Some(sim.msp().tenants.len())
    );
    let summary = state["tenants"]
        .as_array()
        .and_then(|tenants| {
            tenants
                .iter()
                .find(|row| row["tenant_id"] == tenant.tenant_id.as_str())
                .cloned()
        })
        .expect("tenant in the summary");
    assert_eq!(summary["users"], tenant.users.len() + 1);

    let (status, _) = post(format!("{admin}/reset"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(sim.msp(), entra_sync_simulator::generate(sim.config()));
    assert!(sim.request_log().is_empty());
}
