//! Identity platform: client credentials, authorization code with PKCE, refresh-token rotation, the Secure
//! Application Model, consent problems and AADSTS errors on demand.

use base64::Engine;
use entra_sync_simulator::{ConsentFault, FaultKind, FaultSpec, Simulator};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{app_token, client, get, graph_error_code, start, token_request};

const REDIRECT: &str = "http://localhost:8080/auth/oauth2/microsoft/callback";
const SCOPES: &str = "offline_access openid https://graph.microsoft.com/DelegatedAdminRelationship.Read.All https://graph.microsoft.com/Directory.Read.All";

/// MICROSOFT.md §1 error body.
fn assert_aad_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    let description = body["error_description"].as_str().expect("description");
    assert!(
        description.starts_with(&format!("AADSTS{code}:")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Runs the authorize endpoint and returns the redirect Location.
async fn authorize(sim: &Simulator, verifier: &str, state: &str) -> url::Url {
    let response = client()
        .get(format!(
            "{}/organizations/oauth2/v2.0/authorize",
            sim.login_base_url()
        ))
        .query(&[
            ("client_id", sim.config().app_client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("response_mode", "query"),
            ("scope", SCOPES),
            ("state", state),
            ("code_challenge", &challenge(verifier)),
            ("code_challenge_method", "S256"),
            ("prompt", "select_account"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    url::Url::parse(&location).expect("absolute redirect")
}

fn query_value(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

async fn redeem(sim: &Simulator, code: &str, verifier: &str) -> (u16, Value) {
    let config = sim.config().clone();
    token_request(
        sim,
        "organizations",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &config.app_client_id),
            ("client_secret", &config.app_client_secret),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("scope", SCOPES),
        ],
    )
    .await
}

async fn refresh(sim: &Simulator, tenant: &str, refresh_token: &str, scope: &str) -> (u16, Value) {
    let config = sim.config().clone();
    token_request(
        sim,
        tenant,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &config.app_client_id),
            ("client_secret", &config.app_client_secret),
            ("refresh_token", refresh_token),
            ("scope", scope),
        ],
    )
    .await
}

#[tokio::test]
async fn client_credentials_need_the_right_secret_and_a_default_scope() {
    let sim = start().await;
    let config = sim.config().clone();
    let partner = config.partner_tenant_id.clone();
    let (status, body) = token_request(
        &sim,
        &partner,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &config.app_client_id),
            ("client_secret", &config.app_client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["access_token"].is_string());
    assert!(
        body.get("refresh_token").is_none(),
        "client credentials never return a refresh token"
    );

    let (status, body) = token_request(
        &sim,
        &partner,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &config.app_client_id),
            ("client_secret", "wrong"),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 7000215);

    let (status, body) = token_request(
        &sim,
        &partner,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &config.app_client_id),
            ("client_secret", &config.app_client_secret),
            ("scope", "https://graph.microsoft.com/User.Read.All"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_scope");

    let (status, body) = token_request(
        &sim,
        "00000000-0000-4000-8000-000000000bad",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &config.app_client_id),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_request", 90002);

    let (status, body) = token_request(
        &sim,
        &partner,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-2222-4333-8444-555555555555"),
            ("client_secret", "x"),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "unauthorized_client", 700016);
}

#[tokio::test]
async fn authorization_code_with_pkce_then_rotating_refresh_tokens() {
    let sim = start().await;
    let verifier = "a-very-long-code-verifier-with-enough-entropy-0123456789";
    let redirect = authorize(&sim, verifier, "state-123").await;
    assert!(redirect.as_str().starts_with(REDIRECT));
    assert_eq!(
        query_value(&redirect, "state").as_deref(),
        Some("state-123")
    );
    let code = query_value(&redirect, "code").expect("code");

    // A wrong verifier fails PKCE and does not use the code up.
    let (status, body) = redeem(
        &sim,
        &code,
        "another-verifier-that-does-not-match-the-challenge",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    let (status, body) = redeem(&sim, &code, verifier).await;
    assert_eq!(status, 200, "{body}");
    let refresh_token = body["refresh_token"]
        .as_str()
        .expect("refresh token with offline_access")
        .to_string();
    assert!(body["id_token"].is_string());
    assert!(body["scope"]
        .as_str()
        .unwrap_or_default()
        .contains("Directory.Read.All"));
    let partner_token = body["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let (status, _, _) = get(
        &format!(
            "{}/v1.0/tenantRelationships/delegatedAdminRelationships",
            sim.graph_base_url()
        ),
        &partner_token,
    )
    .await;
    assert_eq!(status, 200);

    // MICROSOFT.md §1: redeeming a code twice gives AADSTS54005.
    let (status, body) = redeem(&sim, &code, verifier).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 54005);

    // Refresh tokens rotate: the response carries a new one and the old one stops working.
    let partner = sim.config().partner_tenant_id.clone();
    let (status, body) = refresh(&sim, &partner, &refresh_token, SCOPES).await;
    assert_eq!(status, 200, "{body}");
    let rotated = body["refresh_token"]
        .as_str()
        .expect("new refresh token")
        .to_string();
    assert_ne!(rotated, refresh_token);
    let (status, body) = refresh(&sim, &partner, &refresh_token, SCOPES).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 70008);

    // The Secure Application Model: the same refresh token redeemed at a customer tenant.
    let customer = sim.msp().tenants[3].clone();
    let (status, body) = refresh(
        &sim,
        &customer.tenant_id,
        &rotated,
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let customer_token = body["access_token"]
        .as_str()
        .expect("customer token")
        .to_string();
    let rotated = body["refresh_token"]
        .as_str()
        .expect("rotated again")
        .to_string();
    let (status, _, body) = get(
        &format!("{}/v1.0/users?$top=999", sim.graph_base_url()),
        &customer_token,
    )
    .await;
    assert_eq!(status, 200);
    let first_page = body["value"].as_array().expect("users").len();
    assert_eq!(first_page, customer.users.len().min(999));

    // Consent missing in a customer tenant: AADSTS90099 at its token endpoint.
    sim.set_consent_fault(&customer.tenant_id, Some(ConsentFault::Aadsts90099))
        .expect("consent");
    let (status, body) = refresh(
        &sim,
        &customer.tenant_id,
        &rotated,
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 90099);
    sim.set_consent_fault(
        &customer.tenant_id,
        Some(ConsentFault::GraphIdentityNotFound),
    )
    .expect("consent");
    let (status, _, body) = get(
        &format!("{}/v1.0/users", sim.graph_base_url()),
        &customer_token,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(graph_error_code(&body), "Authorization_IdentityNotFound");
    sim.set_consent_fault(&customer.tenant_id, Some(ConsentFault::GraphRequestDenied))
        .expect("consent");
    let (status, _, body) = get(
        &format!("{}/v1.0/users", sim.graph_base_url()),
        &customer_token,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(graph_error_code(&body), "Authorization_RequestDenied");
}

#[tokio::test]
async fn codes_expire_and_denials_redirect_with_an_error() {
    let sim = start().await;
    let verifier = "verifier-for-the-expiry-test-0123456789-0123456789";
    let code = query_value(&authorize(&sim, verifier, "s1").await, "code").expect("code");
    sim.advance_clock(11 * 60);
    let (status, body) = redeem(&sim, &code, verifier).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    sim.add_fault(FaultSpec {
        kind: FaultKind::AuthorizeDenied,
        path_prefix: "/login".to_string(),
        tenant: None,
        count: Some(1),
    })
    .expect("fault");
    let redirect = authorize(&sim, verifier, "s2").await;
    assert_eq!(
        query_value(&redirect, "error").as_deref(),
        Some("access_denied")
    );
    assert!(query_value(&redirect, "error_description").is_some());
    assert_eq!(query_value(&redirect, "state").as_deref(), Some("s2"));
    assert!(query_value(&redirect, "code").is_none());

    // A redirect URI that is not registered is refused.
    let mut settings = sim.settings();
    settings.redirect_uris =
        vec!["https://psa.example.com/auth/oauth2/microsoft/callback".to_string()];
    sim.set_settings(settings);
    let response = client()
        .get(format!(
            "{}/organizations/oauth2/v2.0/authorize",
            sim.login_base_url()
        ))
        .query(&[
            ("client_id", sim.config().app_client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", "abc"),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_aad_error(&body, "invalid_request", 50011);
}

#[tokio::test]
async fn aadsts_errors_on_demand_and_access_token_expiry() {
    let sim = start().await;
    let tenant = sim.msp().tenants[0].tenant_id.clone();
    sim.add_fault(FaultSpec {
        kind: FaultKind::TokenError { aadsts: 50173 },
        path_prefix: "/login".to_string(),
        tenant: Some(tenant.clone()),
        count: Some(1),
    })
    .expect("fault");
    let config = sim.config().clone();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", config.app_client_id.as_str()),
        ("client_secret", config.app_client_secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = token_request(&sim, &tenant, &form).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 50173);
    let (status, _) = token_request(&sim, &tenant, &form).await;
    assert_eq!(status, 200);

    let token = app_token(&sim, &tenant).await;
    sim.advance_clock(3600);
    let (status, _, body) = get(&format!("{}/v1.0/users", sim.graph_base_url()), &token).await;
    assert_eq!(status, 401);
    assert_eq!(graph_error_code(&body), "InvalidAuthenticationToken");
}

#[tokio::test]
async fn client_secret_basic_is_accepted() {
    let sim = start().await;
    let config = sim.config().clone();
    let response = client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.login_base_url(),
            config.partner_tenant_id
        ))
        .basic_auth(&config.app_client_id, Some(&config.app_client_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status().as_u16(), 200);
    let response = client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.login_base_url(),
            config.partner_tenant_id
        ))
        .basic_auth(&config.app_client_id, Some("wrong"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn admin_consent_clears_a_tenants_consent_problem() {
    let sim = start().await;
    let tenant = sim.msp().tenants[1].tenant_id.clone();
    sim.set_consent_fault(&tenant, Some(ConsentFault::Aadsts65001))
        .expect("consent");
    let config = sim.config().clone();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", config.app_client_id.as_str()),
        ("client_secret", config.app_client_secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = token_request(&sim, &tenant, &form).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 65001);

    let response = client()
        .get(format!("{}/{tenant}/adminconsent", sim.login_base_url()))
        .query(&[
            ("client_id", config.app_client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "c1"),
        ])
        .send()
        .await
        .expect("adminconsent");
    assert_eq!(response.status().as_u16(), 302);
    let location =
        url::Url::parse(response.headers()["location"].to_str().expect("location")).expect("url");
    assert_eq!(
        query_value(&location, "admin_consent").as_deref(),
        Some("True")
    );
    assert_eq!(
        query_value(&location, "tenant").as_deref(),
        Some(tenant.as_str())
    );
    assert_eq!(query_value(&location, "state").as_deref(), Some("c1"));
    assert_eq!(token_request(&sim, &tenant, &form).await.0, 200);
}
