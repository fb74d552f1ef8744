//! CIPP: ListTenants (with the AllTenants row and the 200 error row), ListUsers, ListGraphRequest paging and queueing, errors.

use entra_sync_simulator::{FaultKind, FaultSpec, Simulator, SimulatorConfig};
use serde_json::Value;

use crate::{get, start, token_request};

#[tokio::test]
async fn list_tenants_with_the_pre_issued_or_a_minted_token() {
    let sim = start().await;
    let msp = sim.msp();
    let api_token = sim.config().cipp_api_token.clone();
    let url = format!("{}/api/ListTenants", sim.cipp_base_url());
    let (status, _, body) = get(&url, &api_token).await;
    assert_eq!(status, 200);
    let rows = body.as_array().expect("a bare array");
    assert_eq!(rows.len(), msp.tenants.len());
    for field in [
        "customerId",
        "defaultDomainName",
        "initialDomainName",
        "displayName",
        "delegatedPrivilegeStatus",
        "relationshipEnd",
        "GraphErrorCount",
        "LastGraphError",
    ] {
        assert!(rows[0].get(field).is_some(), "{field}");
    }
    assert_eq!(rows[0]["customerId"], msp.tenants[0].tenant_id.as_str());
    assert_eq!(
        rows[0]["defaultDomainName"],
        msp.tenants[0].default_domain()
    );

    let (_, _, body) = get(&format!("{url}?AllTenantSelector=true"), &api_token).await;
    let rows = body.as_array().expect("array");
    assert_eq!(rows.len(), msp.tenants.len() + 1);
    assert!(rows.iter().any(|row| row["customerId"] == "AllTenants"));

    // Client credentials against the MSP tenant with api://{client id}/.default.
    let config = sim.config().clone();
    let scope = format!("api://{}/.default", config.cipp_client_id);
    let (status, token_body) = token_request(
        &sim,
        &config.partner_tenant_id,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &config.cipp_client_id),
            ("client_secret", &config.cipp_client_secret),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{token_body}");
    let minted = token_body["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(get(&url, &minted).await.0, 200);
    // The CIPP token is not a Graph token.
    assert_eq!(
        get(&format!("{}/v1.0/users", sim.graph_base_url()), &minted)
            .await
            .0,
        401
    );
    assert_eq!(get(&url, "bad-token").await.0, 401);
}

#[tokio::test]
async fn list_tenants_failures() {
    let sim = start().await;
    let api_token = sim.config().cipp_api_token.clone();
    let url = format!("{}/api/ListTenants", sim.cipp_base_url());
    let fault = |kind| FaultSpec {
        kind,
        path_prefix: "/cipp/api/ListTenants".to_string(),
        tenant: None,
        count: Some(1),
    };
    sim.add_fault(fault(FaultKind::CippTenantsErrorRow))
        .expect("fault");
    let (status, _, body) = get(&url, &api_token).await;
    assert_eq!(status, 200);
    let rows = body.as_array().expect("array");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["customerId"], "");
    assert!(rows[0]["displayName"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Failed to retrieve tenants"));

    // A tenant with a consent problem shows it in GraphErrorCount / LastGraphError.
    let tenant = sim.msp().tenants[2].tenant_id.clone();
    sim.set_consent_fault(
        &tenant,
        Some(entra_sync_simulator::ConsentFault::Aadsts90099),
    )
    .expect("consent");
    let (_, _, body) = get(&url, &api_token).await;
    let row = body
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|row| row["customerId"] == tenant.as_str())
                .cloned()
        })
        .expect("row");
    assert_eq!(row["GraphErrorCount"], 1);
    assert!(row["LastGraphError"]
        .as_str()
        .unwrap_or_default()
        .contains("AADSTS90099"));

    sim.add_fault(fault(FaultKind::CippForbidden))
        .expect("fault");
    let response = crate::client()
        .get(&url)
        .bearer_auth(&api_token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 403);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/plain"));

    sim.add_fault(fault(FaultKind::CippDisabled))
        .expect("fault");
    let response = crate::client()
        .get(&url)
        .bearer_auth(&api_token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response.text().await.expect("text"),
        "This feature has been disabled"
    );
}

#[tokio::test]
async fn list_users_returns_everything_with_cipp_fields() {
    let sim = start().await;
    let tenant = sim.msp().tenants[0].clone();
    let api_token = sim.config().cipp_api_token.clone();
    let (status, _, body) = get(
        &format!(
            "{}/api/ListUsers?tenantFilter={}",
            sim.cipp_base_url(),
            tenant.default_domain()
        ),
        &api_token,
    )
    .await;
    assert_eq!(status, 200);
    let rows = body.as_array().expect("array");
    assert_eq!(rows.len(), tenant.users.len());
    let with_aliases = rows
        .iter()
        .find(|row| {
            row["proxyAddresses"]
                .as_array()
                .is_some_and(|list| list.len() > 1)
        })
        .expect("a user with several proxy addresses");
    let joined: Vec<&str> = with_aliases["proxyAddresses"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(with_aliases["Aliases"], joined.join(", "));
    let upn = with_aliases["userPrincipalName"].as_str().expect("upn");
    assert_eq!(
        format!(
            "{}@{}",
            with_aliases["username"].as_str().unwrap_or_default(),
            with_aliases["primDomain"].as_str().unwrap_or_default()
        ),
        upn
    );
    assert!(rows[0].get("accountEnabled").is_some() && rows[0].get("userType").is_some());
}

#[tokio::test]
async fn list_graph_request_pages_with_next_link() {
    let sim = start().await;
    let tenant = sim
        .msp()
        .tenants
        .into_iter()
        .find(|tenant| tenant.users.len() > 999)
        .expect("a big tenant");
    let api_token = sim.config().cipp_api_token.clone();
    let base = format!(
        "{}/api/ListGraphRequest?Endpoint=users&tenantFilter={}&Version=v1.0&manualPagination=true&$top=999&$select=id,mail,userPrincipalName,proxyAddresses",
        sim.cipp_base_url(),
        tenant.tenant_id
    );
    let mut total = 0;
    let mut url = base.clone();
    let mut pages = 0;
    loop {
        let (status, _, body) = get(&url, &api_token).await;
        assert_eq!(status, 200, "{body}");
        total += body["Results"].as_array().expect("Results").len();
        pages += 1;
        match body["Metadata"]["nextLink"].as_str() {
            Some(next) => {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                url = format!("{base}&nextLink={encoded}");
            }
            None => break,
        }
        assert!(pages < 20);
    }
    assert!(pages >= 2);
    assert_eq!(total, tenant.users.len());

    let (status, _, body) = get(
        &format!(
            "{}/api/ListGraphRequest?Endpoint=nothing&tenantFilter={}",
            sim.cipp_base_url(),
            tenant.tenant_id
        ),
        &api_token,
    )
    .await;
    assert_eq!(status, 400);
    let message = body.as_str().expect("a JSON string");
    assert!(
        message.starts_with("Graph Error:") && message.contains(" - Endpoint: "),
        "{message}"
    );
}

#[tokio::test]
async fn count_on_a_huge_tenant_is_queued() {
    let sim = Simulator::start(SimulatorConfig {
        tenants: 1,
        users: 8_100,
        ..SimulatorConfig::default()
    })
    .await
    .expect("start");
    let tenant = sim.msp().tenants[0].tenant_id.clone();
    let api_token = sim.config().cipp_api_token.clone();
    let (status, _, body) = get(
        &format!(
            "{}/api/ListGraphRequest?Endpoint=users&tenantFilter={tenant}&Version=v1.0&manualPagination=true&$top=999&$count=true",
            sim.cipp_base_url()
        ),
        &api_token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["Metadata"]["Queued"], true);
    assert!(body["Results"].as_array().is_some_and(Vec::is_empty));
}
