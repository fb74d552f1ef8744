//! HTTP tests of the API over a real Postgres: the access matrix, bad input, feature flags,
//! run deduplication and failure handling, and OpenAPI completeness.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use support::*;

/// What an endpoint requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Requires {
    Platform,
    /// A PSA permission; `read` says whether the read-only user holds it.
    Psa {
        read: bool,
    },
    EntraRead,
    EntraUpdate,
    /// `system_settings.read`, refused to client-portal users, not behind the UI flag.
    Audit,
}

#[derive(Clone, Debug)]
struct Endpoint {
    method: Method,
    /// The path as the OpenAPI document names it.
    template: &'static str,
    /// The path requested.
    path: String,
    body: Option<Value>,
    requires: Requires,
    /// Status for the authorized caller of tenant A (master key for platform endpoints).
    ok: StatusCode,
    /// Status for a fully privileged user of tenant B.
    other_tenant: StatusCode,
}

fn endpoint(
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    requires: Requires,
    ok: StatusCode,
    other_tenant: StatusCode,
) -> Endpoint {
    Endpoint {
        method,
        template,
        path,
        body,
        requires,
        ok,
        other_tenant,
    }
}

/// Every endpoint, in an order where each authorized call finds the state it expects.
fn endpoints(world: &World) -> Vec<Endpoint> {
    use Requires::*;
    let forbidden = StatusCode::FORBIDDEN;
    let entra = "/api/v1/integrations/entra";
    let run = world.discovery_run_a;
    let managed = world.managed_tenant_a;
    vec![
        endpoint(Method::POST, "/api/v1/platform/tenants", "/api/v1/platform/tenants".into(),
            Some(json!({"name": "Matrix MSP"})), Platform, StatusCode::CREATED, forbidden),
        endpoint(Method::POST, "/api/v1/platform/tenants/{tenant_id}/users",
            format!("/api/v1/platform/tenants/{}/users", world.tenant_a),
            Some(json!({"email": "matrix@msp-a.test", "user_type": "internal", "permissions": []})),
            Platform, StatusCode::CREATED, forbidden),
        endpoint(Method::POST, "/api/v1/platform-feature-flags", "/api/v1/platform-feature-flags".into(),
            Some(json!({"__action": "ensure_entra_phase1_flags"})), Platform, StatusCode::OK, forbidden),
        endpoint(Method::POST, "/api/v1/platform-feature-flags/{flag}/tenants",
            "/api/v1/platform-feature-flags/entra-integration-ui/tenants".into(),
            Some(json!({"__action": "add", "tenantId": world.tenant_a})), Platform, StatusCode::OK, forbidden),
        endpoint(Method::GET, "/api/v1/clients", "/api/v1/clients".into(), None,
            Psa { read: true }, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/clients", "/api/v1/clients".into(),
            Some(json!({"name": "Northwind", "domains": ["northwind.test"]})),
            Psa { read: false }, StatusCode::CREATED, StatusCode::CREATED),
        endpoint(Method::GET, "/api/v1/contacts", format!("/api/v1/contacts?client_id={}", world.client_a), None,
            Psa { read: true }, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/contacts", "/api/v1/contacts".into(),
            Some(json!({"client_id": world.client_a, "full_name": "Grace Hopper", "email": "grace@contoso.com"})),
            Psa { read: false }, StatusCode::CREATED, StatusCode::NOT_FOUND),
        endpoint(Method::PATCH, "/api/v1/contacts/{contact_id}", format!("/api/v1/contacts/{}", world.contact_a),
            Some(json!({"job_title": "Engineer", "sync_locked": true})),
            Psa { read: false }, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::GET, "/api/v1/contacts/{contact_id}/history",
            format!("/api/v1/contacts/{}/history", world.contact_a), None,
            Psa { read: true }, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::GET, "/api/v1/integrations/entra", entra.into(), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/integrations/entra/connect/cipp", format!("{entra}/connect/cipp"),
            Some(json!({"base_url": "http://127.0.0.1:9", "api_token": "not-a-real-token"})),
            EntraUpdate, StatusCode::BAD_GATEWAY, StatusCode::BAD_GATEWAY),
        endpoint(Method::POST, "/api/v1/integrations/entra/validate", format!("{entra}/validate"), None,
            EntraUpdate, StatusCode::CONFLICT, StatusCode::CONFLICT),
        endpoint(Method::POST, "/api/v1/integrations/entra/discovery", format!("{entra}/discovery"), None,
            EntraUpdate, StatusCode::CONFLICT, StatusCode::CONFLICT),
        endpoint(Method::GET, "/api/v1/integrations/entra/managed-tenants", format!("{entra}/managed-tenants"), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::GET, "/api/v1/integrations/entra/mappings/preview", format!("{entra}/mappings/preview"), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/integrations/entra/mappings/confirm", format!("{entra}/mappings/confirm"),
            Some(json!({"decisions": [{"managed_tenant_id": managed, "action": "map", "client_id": world.client_a}],
                        "start_initial_sync": true})),
            EntraUpdate, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::GET, "/api/v1/integrations/entra/mappings", format!("{entra}/mappings"), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/integrations/entra/sync", format!("{entra}/sync"),
            Some(json!({"scope": "all"})), EntraUpdate, StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        endpoint(Method::GET, "/api/v1/integrations/entra/sync/runs", format!("{entra}/sync/runs"), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::GET, "/api/v1/integrations/entra/sync/runs/{run_id}", format!("{entra}/sync/runs/{run}"), None,
            EntraRead, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::POST, "/api/v1/integrations/entra/sync/runs/{run_id}/cancel",
            format!("{entra}/sync/runs/{run}/cancel"), None,
            EntraUpdate, StatusCode::CONFLICT, StatusCode::NOT_FOUND),
        endpoint(Method::GET,
            "/api/v1/integrations/entra/sync/runs/{run_id}/tenants/{managed_tenant_id}/held-inactivations",
            format!("{entra}/sync/runs/{run}/tenants/{managed}/held-inactivations"), None,
            EntraRead, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::POST,
            "/api/v1/integrations/entra/sync/runs/{run_id}/tenants/{managed_tenant_id}/held-inactivations",
            format!("{entra}/sync/runs/{run}/tenants/{managed}/held-inactivations"),
            Some(json!({"action": "apply"})), EntraUpdate, StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
        endpoint(Method::POST, "/api/v1/integrations/entra/mappings/{managed_tenant_id}/unmap",
            format!("{entra}/mappings/{managed}/unmap"), None,
            EntraUpdate, StatusCode::NO_CONTENT, StatusCode::NOT_FOUND),
        endpoint(Method::GET, "/api/v1/integrations/entra/settings", format!("{entra}/settings"), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::PUT, "/api/v1/integrations/entra/settings", format!("{entra}/settings"),
            Some(json!({"field_policy": {"job_title": "fill_blank"},
                        "schedule": {"enabled": true, "interval_seconds": 3600}})),
            EntraUpdate, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/integrations/entra/sync/preflight", format!("{entra}/sync/preflight"),
            Some(json!({"scope": "all"})), EntraUpdate, StatusCode::CONFLICT, StatusCode::CONFLICT),
        endpoint(Method::GET, "/api/v1/integrations/entra/reconciliation-queue",
            format!("{entra}/reconciliation-queue?status=open"), None,
            EntraRead, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/integrations/entra/reconciliation-queue/{item_id}/resolve",
            format!("{entra}/reconciliation-queue/{}/resolve", world.review_item_a),
            Some(json!({"action": "dismiss", "note": "a duplicate mailbox"})),
            EntraUpdate, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::POST, "/api/v1/integrations/entra/reconciliation-queue/{item_id}/reopen",
            format!("{entra}/reconciliation-queue/{}/reopen", world.review_item_a), None,
            EntraUpdate, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::GET, "/api/v1/integrations/entra/managed-tenants/{managed_tenant_id}/filters",
            format!("{entra}/managed-tenants/{managed}/filters"), None,
            EntraRead, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::PUT, "/api/v1/integrations/entra/managed-tenants/{managed_tenant_id}/filters",
            format!("{entra}/managed-tenants/{managed}/filters"),
            Some(json!({"licensed_only": true, "domain_deny": ["contractors.contoso.com"]})),
            EntraUpdate, StatusCode::OK, StatusCode::NOT_FOUND),
        endpoint(Method::POST, "/api/v1/integrations/entra/connect/direct", format!("{entra}/connect/direct"), None,
            EntraUpdate, StatusCode::UNPROCESSABLE_ENTITY, StatusCode::UNPROCESSABLE_ENTITY),
        endpoint(Method::GET, "/api/v1/audit", "/api/v1/audit".into(), None,
            Audit, StatusCode::OK, StatusCode::OK),
        endpoint(Method::POST, "/api/v1/integrations/entra/disconnect", format!("{entra}/disconnect"), None,
            EntraUpdate, StatusCode::OK, StatusCode::OK),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Caller {
    NoKey,
    UnknownKey,
    Portal,
    Reader,
    OtherTenant,
    Master,
    Updater,
}

const CALLERS: [Caller; 7] = [
    Caller::NoKey,
    Caller::UnknownKey,
    Caller::Portal,
    Caller::Reader,
    Caller::OtherTenant,
    Caller::Master,
    Caller::Updater,
];

fn expected(endpoint: &Endpoint, caller: Caller) -> StatusCode {
    use Requires::*;
    let forbidden = StatusCode::FORBIDDEN;
    match (caller, endpoint.requires) {
        (Caller::NoKey | Caller::UnknownKey, _) => StatusCode::UNAUTHORIZED,
        (Caller::Master, Platform) => endpoint.ok,
        (Caller::Master, _) | (_, Platform) => forbidden,
        (Caller::Portal, Psa { .. }) => endpoint.ok,
        (Caller::Portal, _) => forbidden,
        (Caller::Reader, Psa { read: true } | EntraRead | Audit) => endpoint.ok,
        (Caller::Reader, _) => forbidden,
        (Caller::OtherTenant, _) => endpoint.other_tenant,
        (Caller::Updater, _) => endpoint.ok,
    }
}

fn key_of(world: &World, caller: Caller) -> Option<String> {
    match caller {
        Caller::NoKey => None,
        Caller::UnknownKey => Some("esk_this-key-was-never-issued".to_owned()),
        Caller::Portal => Some(world.portal.clone()),
        Caller::Reader => Some(world.reader.clone()),
        Caller::OtherTenant => Some(world.other.clone()),
        Caller::Master => Some(MASTER_KEY.to_owned()),
        Caller::Updater => Some(world.updater.clone()),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn access_matrix(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let mut failures = Vec::new();
    for endpoint in endpoints(&world) {
        for caller in CALLERS {
            let key = key_of(&world, caller);
            let response = app
                .call(
                    endpoint.method.clone(),
                    &endpoint.path,
                    key.as_deref(),
                    endpoint.body.clone(),
                )
                .await;
            let want = expected(&endpoint, caller);
            if response.status != want {
                failures.push(format!(
                    "{} {} as {caller:?}: got {} want {want}: {}",
                    endpoint.method, endpoint.template, response.status, response.body
                ));
            }
            if response.status.is_client_error() || response.status.is_server_error() {
                assert!(
                    !response.code().is_empty(),
                    "{} {} as {caller:?}: error without the error shape: {}",
                    endpoint.method,
                    endpoint.template,
                    response.body
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "access matrix mismatches:\n{}",
        failures.join("\n")
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn openapi_documents_every_route(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let document = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(document.status, StatusCode::OK);
    let paths = document.body["paths"].as_object().expect("paths").clone();
    let mut templates: Vec<(String, String)> = endpoints(&world)
        .iter()
        .map(|endpoint| {
            (
                endpoint.method.as_str().to_lowercase(),
                endpoint.template.to_owned(),
            )
        })
        .collect();
    for extra in [
        "/healthz",
        "/readyz",
        "/api/v1/openapi.json",
        "/auth/oauth2/microsoft/callback",
    ] {
        templates.push(("get".to_owned(), extra.to_owned()));
    }
    for (method, template) in &templates {
        assert!(
            paths
                .get(template)
                .and_then(|item| item.get(method))
                .is_some(),
            "{method} {template} is routed but missing from the OpenAPI document"
        );
    }
    // And the other way round: every documented operation is routed (answers something other
    // than the router's own 404/405).
    for (path, item) in &paths {
        for method in item.as_object().expect("path item").keys() {
            let concrete = path
                .replace("{tenant_id}", &Uuid::nil().to_string())
                .replace("{flag}", "entra-integration-ui")
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        Uuid::nil().to_string()
                    } else {
                        segment.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method: Method = method.to_uppercase().parse().expect("method");
            let response = app.call(method.clone(), &concrete, None, None).await;
            assert!(
                !matches!(response.code(), "route_not_found" | "method_not_allowed"),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

/// A valid body per endpoint that takes one, with the key that may call it.
fn body_endpoints(world: &World) -> Vec<(Method, String, Value, String)> {
    let entra = "/api/v1/integrations/entra";
    vec![
        (
            Method::PUT,
            format!("{entra}/managed-tenants/{}/filters", world.managed_tenant_a),
            json!({"exclusion_patterns": ["^svc-"]}),
            world.updater.clone(),
        ),
        (
            Method::POST,
            "/api/v1/platform/tenants".into(),
            json!({"name": "Bad Input MSP"}),
            MASTER_KEY.to_owned(),
        ),
        (
            Method::POST,
            format!("/api/v1/platform/tenants/{}/users", world.tenant_a),
            json!({"email": "bad-input@msp-a.test", "user_type": "internal", "permissions": ["client.read"]}),
            MASTER_KEY.to_owned(),
        ),
        (
            Method::POST,
            "/api/v1/platform-feature-flags".into(),
            json!({"__action": "ensure_entra_phase1_flags"}),
            MASTER_KEY.to_owned(),
        ),
        (
            Method::POST,
            "/api/v1/platform-feature-flags/entra-integration-ui/tenants".into(),
            json!({"__action": "add", "tenantId": world.tenant_a}),
            MASTER_KEY.to_owned(),
        ),
        (
            Method::POST,
            "/api/v1/clients".into(),
            json!({"name": "Injected", "domains": ["injected.test"]}),
            world.updater.clone(),
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            json!({"client_id": world.client_a, "full_name": "Injected Person", "email": "inj@contoso.com"}),
            world.updater.clone(),
        ),
        (
            Method::PATCH,
            format!("/api/v1/contacts/{}", world.contact_a),
            json!({"job_title": "CTO"}),
            world.updater.clone(),
        ),
        (
            Method::POST,
            format!("{entra}/connect/cipp"),
            json!({"base_url": "http://127.0.0.1:9", "api_token": "token"}),
            world.updater.clone(),
        ),
        (
            Method::POST,
            format!("{entra}/mappings/confirm"),
            json!({"decisions": [{"managed_tenant_id": world.managed_tenant_a, "action": "skip"}]}),
            world.updater.clone(),
        ),
        (
            Method::POST,
            format!("{entra}/sync"),
            json!({"scope": "client", "client_id": world.client_a}),
            world.updater.clone(),
        ),
        (
            Method::POST,
            format!(
                "{entra}/sync/runs/{}/tenants/{}/held-inactivations",
                world.discovery_run_a, world.managed_tenant_a
            ),
            json!({"action": "discard"}),
            world.updater.clone(),
        ),
    ]
}

/// Replaces every string in `value` with `text`.
fn replace_strings(value: &Value, text: &str) -> Value {
    replace_strings_with(value, &Value::String(text.to_owned()))
}

/// Replaces every string in `value` with `replacement`.
fn replace_strings_with(value: &Value, replacement: &Value) -> Value {
    match value {
        Value::String(_) => replacement.clone(),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| replace_strings_with(item, replacement))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), replace_strings_with(item, replacement)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn bad_input_is_a_4xx_with_a_message(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let mut failures = Vec::new();
    for (method, path, valid, key) in body_endpoints(&world) {
        let mut with_unknown = valid.clone();
        with_unknown["zz_unknown_field"] = json!(1);
        let huge = json!({"name": "x".repeat(2 * 1024 * 1024)}).to_string();
        let wrong_types = replace_strings_with(&valid, &json!(12345));
        let bad_request = [StatusCode::BAD_REQUEST].as_slice();
        let unprocessable = [StatusCode::UNPROCESSABLE_ENTITY].as_slice();
        // serde reports a value of the wrong type inside an enum as a syntax error, so type
        // errors may be either; both carry serde's message with the position.
        let type_error = [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].as_slice();
        let cases: Vec<(&str, Option<String>, &[StatusCode])> = vec![
            ("malformed json", Some("{,}".to_owned()), bad_request),
            (
                "truncated json",
                Some("{\"a\": tru".to_owned()),
                bad_request,
            ),
            ("wrong types", Some(wrong_types.to_string()), type_error),
            ("array for object", Some("[1, 2, 3]".to_owned()), type_error),
            ("number for object", Some("42".to_owned()), unprocessable),
            (
                "unknown field",
                Some(with_unknown.to_string()),
                unprocessable,
            ),
            (
                "huge body",
                Some(huge),
                [StatusCode::PAYLOAD_TOO_LARGE].as_slice(),
            ),
            ("empty body", Some(String::new()), bad_request),
        ];
        for (name, body, want) in cases {
            let response = app
                .request_text(method.clone(), &path, Some(&key), body)
                .await;
            if !want.contains(&response.status) || response.code().is_empty() {
                failures.push(format!(
                    "{method} {path} [{name}]: got {} want {want:?}: {}",
                    response.status, response.body
                ));
            }
        }
        for text in [
            "'; DROP TABLE contacts; --",
            "\" OR 1=1 --",
            "<script>alert(1)</script>",
            "{{7*7}}${7*7}",
            "../../../../etc/passwd",
            "\u{0000}nul",
            "😀 ünïcödé",
        ] {
            let response = app
                .call(
                    method.clone(),
                    &path,
                    Some(&key),
                    Some(replace_strings(&valid, text)),
                )
                .await;
            let bad_error = response.status.is_client_error() && response.code().is_empty();
            if response.status.is_server_error() || bad_error {
                failures.push(format!(
                    "{method} {path} [injection {text:?}]: got {}: {}",
                    response.status, response.body
                ));
            }
        }
    }
    // Invalid UUIDs in paths.
    let entra = "/api/v1/integrations/entra";
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/v1/contacts/not-a-uuid".to_owned(),
            Some(json!({"job_title": "x"})),
        ),
        (
            Method::POST,
            "/api/v1/platform/tenants/1%27%20OR%201=1/users".to_owned(),
            Some(json!({"email": "a@b.test", "user_type": "internal"})),
        ),
        (Method::GET, format!("{entra}/sync/runs/12345"), None),
        (Method::POST, format!("{entra}/sync/runs/xyz/cancel"), None),
        (Method::POST, format!("{entra}/mappings/zzz/unmap"), None),
        (
            Method::POST,
            format!("{entra}/reconciliation-queue/not-an-id/resolve"),
            Some(json!({"action": "create_new"})),
        ),
        (
            Method::POST,
            format!(
                "{entra}/sync/runs/{}/tenants/nope/held-inactivations",
                world.discovery_run_a
            ),
            Some(json!({"action": "apply"})),
        ),
    ] {
        let key = if path.contains("/platform/") {
            MASTER_KEY.to_owned()
        } else {
            world.updater.clone()
        };
        let response = app.call(method.clone(), &path, Some(&key), body).await;
        if response.status != StatusCode::BAD_REQUEST || response.code() != "invalid_path" {
            failures.push(format!(
                "{method} {path}: got {}: {}",
                response.status, response.body
            ));
        }
    }
    // Query strings.
    for path in [
        "/api/v1/contacts?client_id=not-a-uuid",
        "/api/v1/contacts?include_inactive=maybe",
        "/api/v1/clients?limit=-1",
        "/api/v1/clients?limit=0",
        "/api/v1/clients?cursor=%27%3B--",
        "/api/v1/integrations/entra/sync/runs?kind=bogus",
    ] {
        let response = app.get(path, &world.updater).await;
        if !response.status.is_client_error() || response.code().is_empty() {
            failures.push(format!(
                "GET {path}: got {}: {}",
                response.status, response.body
            ));
        }
    }
    // The injection attempts left the schema alone.
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(app.store.pool())
        .await
        .expect("contacts table still exists");
    assert!(contacts >= 1);
    assert!(
        failures.is_empty(),
        "bad input handling:\n{}",
        failures.join("\n")
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn ui_flag_off_hides_every_entra_endpoint_and_deletes_nothing(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let confirmed = app
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            &world.updater,
            json!({"decisions": [{"managed_tenant_id": world.managed_tenant_a, "action": "map",
                                  "client_id": world.client_a}]}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let before_tenants = app
        .get("/api/v1/integrations/entra/managed-tenants", &world.updater)
        .await;
    let before_mappings = app
        .get("/api/v1/integrations/entra/mappings", &world.updater)
        .await;
    let before_runs = app
        .get("/api/v1/integrations/entra/sync/runs", &world.updater)
        .await;

    set_flag(&app, "entra-integration-ui", world.tenant_a, false).await;
    for endpoint in endpoints(&world) {
        if !matches!(
            endpoint.requires,
            Requires::EntraRead | Requires::EntraUpdate
        ) {
            continue;
        }
        let response = app
            .call(
                endpoint.method.clone(),
                &endpoint.path,
                Some(&world.updater),
                endpoint.body.clone(),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{} {} with the UI flag off: {}",
            endpoint.method,
            endpoint.template,
            response.body
        );
    }
    // PSA endpoints are not part of the integration.
    assert_eq!(
        app.get("/api/v1/contacts", &world.updater).await.status,
        StatusCode::OK
    );
    // Tenant B is unaffected.
    assert_eq!(
        app.get("/api/v1/integrations/entra", &world.other)
            .await
            .status,
        StatusCode::OK
    );

    set_flag(&app, "entra-integration-ui", world.tenant_a, true).await;
    let after_tenants = app
        .get("/api/v1/integrations/entra/managed-tenants", &world.updater)
        .await;
    let after_mappings = app
        .get("/api/v1/integrations/entra/mappings", &world.updater)
        .await;
    let after_runs = app
        .get("/api/v1/integrations/entra/sync/runs", &world.updater)
        .await;
    assert_eq!(before_tenants.body, after_tenants.body);
    assert_eq!(before_mappings.body, after_mappings.body);
    assert_eq!(before_runs.body, after_runs.body);
    assert_eq!(
        after_mappings.body["items"].as_array().map(Vec::len),
        Some(1)
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn sub_flags_gate_their_features(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    set_flag(
        &app,
        "entra-integration-client-sync-action",
        world.tenant_a,
        false,
    )
    .await;
    let client_sync = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "client", "client_id": world.client_a}),
        )
        .await;
    assert_eq!(client_sync.status, StatusCode::NOT_FOUND);
    assert_eq!(client_sync.code(), "feature_disabled");
    // The preflight of a single client follows the same flag.
    let client_preflight = app
        .post(
            "/api/v1/integrations/entra/sync/preflight",
            &world.updater,
            json!({"scope": "client", "client_id": world.client_a}),
        )
        .await;
    assert_eq!(client_preflight.status, StatusCode::NOT_FOUND);
    assert_eq!(client_preflight.code(), "feature_disabled");
    set_flag(&app, "entra-integration-cipp", world.tenant_a, false).await;
    let cipp = app
        .post(
            "/api/v1/integrations/entra/connect/cipp",
            &world.updater,
            json!({"base_url": "https://cipp.example.test", "api_token": "t"}),
        )
        .await;
    assert_eq!(cipp.status, StatusCode::NOT_FOUND);
    set_flag(&app, "entra-integration-field-sync", world.tenant_a, false).await;
    let status = app.get("/api/v1/integrations/entra", &world.updater).await;
    assert_eq!(status.body["features"]["field_sync"], json!(false));
    assert_eq!(status.body["features"]["ambiguous_queue"], json!(true));
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_second_sync_request_while_running_is_deduplicated(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let first = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "all"}),
        )
        .await;
    let second = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "all"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.body);
    assert_eq!(first.body["deduplicated"], json!(false));
    assert_eq!(second.body["deduplicated"], json!(true));
    assert_eq!(first.body["run_id"], second.body["run_id"]);
    assert_eq!(app.starter.syncs.lock().expect("lock").len(), 1);
    // Another scope is another run.
    let client = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "client", "client_id": world.client_a}),
        )
        .await;
    assert_eq!(client.body["deduplicated"], json!(false));
    assert_ne!(client.body["run_id"], first.body["run_id"]);
    let input = app.starter.syncs.lock().expect("lock")[0].clone();
    assert_eq!(input.tenant_id, world.tenant_a.to_string());
    assert_eq!(Some(input.run_id.as_str()), first.body["run_id"].as_str());

    let run_id = first.body["run_id"].as_str().expect("run id");
    let run = app
        .get(
            &format!("/api/v1/integrations/entra/sync/runs/{run_id}"),
            &world.updater,
        )
        .await;
    assert_eq!(run.status, StatusCode::OK);
    assert_eq!(run.body["status"], json!("running"));
    assert_eq!(run.body["kind"], json!("sync"));
    assert_eq!(run.body["scope"], json!("all"));
    assert_eq!(run.body["trigger"], json!("manual"));
    assert!(run.body["totals"]["skipped"].is_object(), "{}", run.body);
    assert!(run.body["tenants"].is_array());

    // Cancel goes to the workflow.
    let cancelled = app
        .post(
            &format!("/api/v1/integrations/entra/sync/runs/{run_id}/cancel"),
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.body);
    assert_eq!(app.starter.cancels.lock().expect("lock").len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_run_whose_workflow_cannot_start_is_finished_as_failed(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    app.starter
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let response = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "all"}),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        response.body
    );
    assert_eq!(response.code(), "workflow_start_failed");
    let runs = app
        .get(
            "/api/v1/integrations/entra/sync/runs?kind=sync",
            &world.updater,
        )
        .await;
    let items = runs.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], json!("failed"));
    assert_eq!(items[0]["error"]["code"], json!("workflow_start_failed"));
    // Nothing stays running: the next request starts a fresh run.
    app.starter
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let retry = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "all"}),
        )
        .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert_eq!(retry.body["deduplicated"], json!(false));
}

#[sqlx::test(migrations = "../../migrations")]
async fn preview_is_read_only_and_confirm_starts_the_initial_sync(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let snapshot = |pool: PgPool| async move {
        let rows: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM mappings), (SELECT count(*) FROM mapping_decisions),
                    (SELECT count(*) FROM clients), (SELECT count(*) FROM managed_tenants)",
        )
        .fetch_one(&pool)
        .await
        .expect("snapshot");
        rows
    };
    let before = snapshot(app.store.pool().clone()).await;
    let preview = app
        .get("/api/v1/integrations/entra/mappings/preview", &world.reader)
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(before, snapshot(app.store.pool().clone()).await);
    let items = preview.body["items"].as_array().expect("items");
    let contoso = items
        .iter()
        .find(|item| item["display_name"] == json!("Contoso Ltd"))
        .expect("contoso");
    assert_eq!(contoso["state"], json!("auto_matched"));
    assert_eq!(contoso["client_id"], json!(world.client_a));
    assert_eq!(contoso["candidates"][0]["reason"], json!("primary_domain"));
    let fabrikam = items
        .iter()
        .find(|item| item["display_name"] == json!("Fabrikam"))
        .expect("fabrikam");
    assert_eq!(fabrikam["state"], json!("unmatched"));

    let confirmed = app
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            &world.updater,
            json!({"decisions": [
                {"managed_tenant_id": world.managed_tenant_a, "action": "map", "client_id": world.client_a},
                {"managed_tenant_id": fabrikam["managed_tenant_id"], "action": "create_client"}],
              "start_initial_sync": true}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert_eq!(confirmed.body["mappings"].as_array().map(Vec::len), Some(2));
    let run_id = confirmed.body["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let run = app
        .get(
            &format!("/api/v1/integrations/entra/sync/runs/{run_id}"),
            &world.updater,
        )
        .await;
    assert_eq!(run.body["trigger"], json!("initial"));

    // All or none: one bad decision leaves everything as it was.
    let before = snapshot(app.store.pool().clone()).await;
    let refused = app
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            &world.updater,
            json!({"decisions": [
                {"managed_tenant_id": world.managed_tenant_a, "action": "skip"},
                {"managed_tenant_id": world.managed_tenant_a, "action": "map", "client_id": Uuid::new_v4()}]}),
        )
        .await;
    // The client it names does not exist: 404, like an unknown id in a path.
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert_eq!(refused.code(), "unknown_client");
    assert_eq!(before, snapshot(app.store.pool().clone()).await);
    // Two decisions for one (existing) managed tenant contradict each other.
    let twice = app
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            &world.updater,
            json!({"decisions": [
                {"managed_tenant_id": world.managed_tenant_a, "action": "skip"},
                {"managed_tenant_id": world.managed_tenant_a, "action": "map", "client_id": world.client_a}]}),
        )
        .await;
    assert_eq!(
        twice.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        twice.body
    );
    assert_eq!(twice.code(), "duplicate_managed_tenant");
    assert_eq!(before, snapshot(app.store.pool().clone()).await);
    let preview = app
        .get("/api/v1/integrations/entra/mappings/preview", &world.reader)
        .await;
    let states: Vec<&str> = preview.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["state"].as_str())
        .collect();
    assert_eq!(states, vec!["mapped", "create_client"]);
}

#[sqlx::test(migrations = "../../migrations")]
async fn contacts_show_links_and_changes_are_audited(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let patched = app
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{}", world.contact_a),
            Some(&world.updater),
            Some(json!({"phone": "+1 555 0100", "email": null, "sync_locked": true})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["phone"], json!("+1 555 0100"));
    assert_eq!(patched.body["email"], Value::Null);
    assert_eq!(patched.body["sync_locked"], json!(true));
    assert_eq!(patched.body["link"], Value::Null);
    let listed = app
        .get(
            "/api/v1/contacts?include_inactive=true&limit=1",
            &world.updater,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    assert!(listed.body.get("next_cursor").is_some());
    let audit = app
        .store
        .list_api_audit(world.tenant_a, &Default::default())
        .await
        .expect("audit");
    let actions: Vec<&str> = audit
        .items
        .iter()
        .map(|entry| entry.action.as_str())
        .collect();
    assert!(actions.contains(&"contact.update"), "{actions:?}");
    assert!(actions.contains(&"contact.create"), "{actions:?}");
    assert!(actions.contains(&"client.create"), "{actions:?}");
    // Another tenant's user cannot see tenant A's contacts.
    let other = app.get("/api/v1/contacts", &world.other).await;
    assert_eq!(other.body["items"], json!([]));
}

#[sqlx::test(migrations = "../../migrations")]
async fn health_endpoints_answer(pool: PgPool) {
    let app = TestApp::new(pool);
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let missing = app
        .call(Method::GET, "/api/v1/nothing-here", None, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "route_not_found");
}

#[sqlx::test(migrations = "../../migrations")]
async fn settings_are_validated_and_saved(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let path = "/api/v1/integrations/entra/settings";
    let defaults = app.get(path, &world.reader).await;
    assert_eq!(defaults.status, StatusCode::OK);
    assert_eq!(defaults.body["schedule"]["enabled"], json!(false));
    assert_eq!(defaults.body["schedule"]["interval_seconds"], json!(86400));
    assert_eq!(defaults.body["field_policy"]["name"], json!("off"));
    assert_eq!(defaults.body["field_sync_enabled"], json!(true));
    for (body, why) in [
        (
            json!({"schedule": {"enabled": true, "interval_seconds": 60}}),
            "interval too short",
        ),
        (
            json!({"schedule": {"interval_seconds": 31 * 24 * 3600}}),
            "interval too long",
        ),
        (
            json!({"filters": {"exclusion_patterns": ["(unclosed"]}}),
            "regex does not compile",
        ),
        (
            json!({"field_policy": {"shoe_size": "overwrite"}}),
            "unknown field",
        ),
        (
            json!({"field_policy": {"name": "sometimes"}}),
            "unknown policy",
        ),
        (
            json!({"filters": {"domain_allow": ["not a domain"]}}),
            "bad domain",
        ),
        (json!({"schedule": {"every": "day"}}), "unknown key"),
        (
            json!({"filters": {"include_groups": ["Sales Team"]}}),
            "include group that is not a GUID",
        ),
        (
            json!({"filters": {"exclude_groups": ["5b0e6c5e-0000-4000-8000"]}}),
            "exclude group that is not a GUID",
        ),
    ] {
        let response = app
            .call(Method::PUT, path, Some(&world.updater), Some(body))
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}: {}",
            response.body
        );
        assert!(!response.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty());
    }
    let saved = app
        .call(
            Method::PUT,
            path,
            Some(&world.updater),
            Some(
                json!({"field_policy": {"job_title": "overwrite", "phone": "fill_blank"},
                        "filters": {"licensed_only": true, "exclusion_patterns": ["^svc-"],
                                    "include_groups": [" 5B0E6C5E-0000-4000-8000-000000000001 "]},
                        "schedule": {"enabled": true, "interval_seconds": 900}}),
            ),
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let read = app.get(path, &world.reader).await;
    assert_eq!(read.body["field_policy"]["job_title"], json!("overwrite"));
    assert_eq!(read.body["field_policy"]["name"], json!("off"));
    assert_eq!(read.body["filters"]["licensed_only"], json!(true));
    assert_eq!(
        read.body["filters"]["include_groups"],
        json!(["5b0e6c5e-0000-4000-8000-000000000001"]),
        "group ids are stored trimmed and lowercase"
    );
    assert_eq!(read.body["filters"]["exclude_groups"], json!([]));
    assert_eq!(read.body["schedule"]["interval_seconds"], json!(900));
    let status = app.get("/api/v1/integrations/entra", &world.reader).await;
    assert_eq!(status.body["schedule"]["enabled"], json!(true));
}

#[sqlx::test(migrations = "../../migrations")]
async fn linking_a_review_item_to_another_clients_contact_needs_consent(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let other_client = app
        .post(
            "/api/v1/clients",
            &world.updater,
            json!({"name": "Other Co"}),
        )
        .await;
    let other_client_id = other_client.body["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other_contact = app
        .post(
            "/api/v1/contacts",
            &world.updater,
            json!({"client_id": other_client_id, "full_name": "Ada Elsewhere", "email": "ada@other.test"}),
        )
        .await;
    let other_contact_id = other_contact.body["contact_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let resolve = format!(
        "/api/v1/integrations/entra/reconciliation-queue/{}/resolve",
        world.review_item_a
    );
    let refused = app
        .post(
            &resolve,
            &world.updater,
            json!({"action": "link_existing", "contact_id": other_contact_id}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.code(), "contact_in_other_client");
    let linked = app
        .post(
            &resolve,
            &world.updater,
            json!({"action": "link_existing", "contact_id": other_contact_id, "allow_other_client": true}),
        )
        .await;
    assert_eq!(linked.status, StatusCode::OK, "{}", linked.body);
    assert_eq!(linked.body["status"], json!("resolved"));
    let again = app
        .post(&resolve, &world.updater, json!({"action": "create_new"}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let contact = app
        .get("/api/v1/contacts?email=ada@other.test", &world.reader)
        .await;
    assert_eq!(
        contact.body["items"][0]["link"]["object_id"],
        json!("object-ada")
    );
    let queue = app
        .get(
            "/api/v1/integrations/entra/reconciliation-queue?status=resolved",
            &world.reader,
        )
        .await;
    assert_eq!(queue.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        queue.body["items"][0]["candidates"][0]["full_name"],
        json!("Ada Lovelace")
    );
    set_flag(
        &app,
        "entra-integration-ambiguous-queue",
        world.tenant_a,
        false,
    )
    .await;
    let hidden = app
        .get(
            "/api/v1/integrations/entra/reconciliation-queue",
            &world.reader,
        )
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
}

async fn start_simulator() -> entra_sync_simulator::Simulator {
    entra_sync_simulator::Simulator::start(entra_sync_simulator::SimulatorConfig {
        tenants: 3,
        users: 60,
        ..entra_sync_simulator::SimulatorConfig::default()
    })
    .await
    .expect("simulator starts")
}

#[sqlx::test(migrations = "../../migrations")]
async fn cipp_connect_validates_before_saving_then_preflight_writes_nothing(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let simulator = start_simulator().await;
    let connect = "/api/v1/integrations/entra/connect/cipp";
    let wrong = app
        .post(
            connect,
            &world.updater,
            json!({"base_url": simulator.cipp_base_url(), "api_token": "wrong-token"}),
        )
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.body
    );
    assert!(
        !wrong.body.to_string().contains("wrong-token"),
        "the token is echoed"
    );
    let status = app.get("/api/v1/integrations/entra", &world.reader).await;
    assert_eq!(status.body["connection"]["status"], json!("disconnected"));

    let insecure = app
        .post(
            connect,
            &world.updater,
            json!({"base_url": "http://cipp.example.test", "api_token": "t"}),
        )
        .await;
    assert_eq!(insecure.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(insecure.code(), "invalid_base_url");

    // A schedule is enabled while disconnected: it exists only once a connection is saved.
    let schedule = app
        .call(
            Method::PUT,
            "/api/v1/integrations/entra/settings",
            Some(&world.updater),
            Some(json!({"schedule": {"enabled": true, "interval_seconds": 1800}})),
        )
        .await;
    assert_eq!(schedule.status, StatusCode::OK);
    let last_schedule = || {
        app.starter
            .schedules
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a schedule call")
    };
    assert_eq!(last_schedule(), (world.tenant_a, None));

    let token = simulator.config().cipp_api_token.clone();
    let connected = app
        .post(
            connect,
            &world.updater,
            json!({"base_url": simulator.cipp_base_url(), "api_token": token}),
        )
        .await;
    assert_eq!(connected.status, StatusCode::OK, "{}", connected.body);
    assert_eq!(connected.body["connection"]["status"], json!("connected"));
    assert_eq!(connected.body["connection"]["kind"], json!("cipp"));
    assert_eq!(connected.body["tenants_visible"], json!(3));
    assert!(!connected.body.to_string().contains(&token));
    assert_eq!(
        last_schedule(),
        (world.tenant_a, Some(std::time::Duration::from_secs(1800)))
    );

    let validated = app
        .post(
            "/api/v1/integrations/entra/validate",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(validated.status, StatusCode::OK, "{}", validated.body);
    assert_eq!(validated.body["ok"], json!(true));

    let discovery = app
        .post(
            "/api/v1/integrations/entra/discovery",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(discovery.status, StatusCode::ACCEPTED, "{}", discovery.body);
    assert_eq!(app.starter.discoveries.lock().expect("lock").len(), 1);

    // Map one simulated tenant and preflight it: counts come back, nothing is written.
    let msp = simulator.msp();
    let simulated = &msp.tenants[0];
    let records = vec![entra_sync_store::discovery::DiscoveredTenantRecord {
        entra_tenant_id: simulated.tenant_id.clone(),
        display_name: "Simulated".to_owned(),
        domains: Vec::new(),
    }];
    let run = app
        .store
        .start_run(&entra_sync_store::runs::NewRun {
            tenant_id: world.tenant_a,
            kind: entra_sync_store::runs::RunKind::Discovery,
            trigger: entra_sync_store::runs::RunTrigger::Manual,
            scope: entra_sync_store::runs::RunScope::All,
            requested_by: None,
        })
        .await
        .expect("run");
    // The discovery started above never ends (the fake starter runs no workflow), so this
    // finds it; recording the listing stands in for the workflow.
    app.store
        .record_discovery(world.tenant_a, run.run_id, &records)
        .await
        .expect("record");
    let managed = app
        .store
        .list_managed_tenants(world.tenant_a)
        .await
        .expect("managed")
        .into_iter()
        .find(|tenant| tenant.entra_tenant_id == simulated.tenant_id.to_lowercase())
        .expect("simulated tenant");
    let confirm = app
        .post(
            "/api/v1/integrations/entra/mappings/confirm",
            &world.updater,
            json!({"decisions": [{"managed_tenant_id": managed.managed_tenant_id, "action": "map",
                                  "client_id": world.client_a}]}),
        )
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let count_contacts = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contacts")
            .fetch_one(app.store.pool())
            .await
            .expect("count")
    };
    let before = count_contacts().await;
    let preflight = app
        .post(
            "/api/v1/integrations/entra/sync/preflight",
            &world.updater,
            json!({"scope": "all"}),
        )
        .await;
    assert_eq!(preflight.status, StatusCode::OK, "{}", preflight.body);
    let tenants = preflight.body["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 1, "{}", preflight.body);
    assert_eq!(tenants[0]["error"], Value::Null, "{}", preflight.body);
    assert!(
        tenants[0]["counts"]["seen"].as_u64().unwrap_or(0) > 0,
        "{}",
        preflight.body
    );
    assert!(
        preflight.body["totals"]["created"].as_u64().unwrap_or(0) > 0,
        "{}",
        preflight.body
    );
    assert_eq!(before, count_contacts().await, "preflight wrote contacts");

    let disconnected = app
        .post(
            "/api/v1/integrations/entra/disconnect",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(disconnected.status, StatusCode::OK);
    assert_eq!(disconnected.body["status"], json!("disconnected"));
    assert_eq!(last_schedule(), (world.tenant_a, None));
    let mappings = app
        .get("/api/v1/integrations/entra/mappings", &world.reader)
        .await;
    assert_eq!(
        mappings.body["items"].as_array().map(Vec::len),
        Some(1),
        "mappings kept"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn oauth_callback_rejects_unknown_state(pool: PgPool) {
    let app = TestApp::new(pool);
    let browser = app
        .call(
            Method::GET,
            "/auth/oauth2/microsoft/callback?code=abc&state=forged-state-value",
            None,
            None,
        )
        .await;
    assert_eq!(browser.status, StatusCode::SEE_OTHER);
    let request = axum::http::Request::builder()
        .uri("/auth/oauth2/microsoft/callback?code=abc&state=forged-state-value")
        .header("accept", "application/json")
        .body(axum::body::Body::empty())
        .expect("request");
    let json_response = app.raw(request).await;
    assert_eq!(json_response.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_response.code(), "invalid_state");
    assert!(!json_response.body.to_string().contains("abc"));
}

#[sqlx::test(migrations = "../../migrations")]
async fn missing_content_type_is_415(pool: PgPool) {
    let app = TestApp::new(pool);
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/api/v1/platform/tenants")
        .header("x-api-key", MASTER_KEY)
        .body(axum::body::Body::from("{\"name\":\"x\"}"))
        .expect("request");
    let response = app.raw(request).await;
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.code(), "unsupported_media_type");
}

#[sqlx::test(migrations = "../../migrations")]
async fn sync_and_confirm_bodies_are_strict(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let sync = "/api/v1/integrations/entra/sync";
    for (body, want) in [
        (
            json!({"scope": "all", "client_id": world.client_a}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"scope": "client"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"scope": "everything"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"scope": "client", "client_id": Uuid::new_v4()}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let response = app.post(sync, &world.updater, body.clone()).await;
        assert_eq!(response.status, want, "{body}: {}", response.body);
    }
    // A client of another PSA tenant is unknown here.
    let foreign_client = app
        .post(
            "/api/v1/clients",
            &world.other,
            json!({"name": "B's client"}),
        )
        .await;
    let response = app
        .post(
            sync,
            &world.updater,
            json!({"scope": "client", "client_id": foreign_client.body["client_id"]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.code(), "unknown_client");
    assert!(app.starter.syncs.lock().expect("lock").is_empty());

    let confirm = "/api/v1/integrations/entra/mappings/confirm";
    // Another PSA tenant's client is unknown here too.
    let response = app
        .post(
            confirm,
            &world.updater,
            json!({"decisions": [{"managed_tenant_id": world.managed_tenant_a, "action": "map",
                                  "client_id": foreign_client.body["client_id"]}]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND, "{}", response.body);
    assert_eq!(response.code(), "unknown_client");
    for body in [
        json!({"decisions": []}),
        json!({"decisions": [{"managed_tenant_id": world.managed_tenant_a, "action": "map"}]}),
        json!({"decisions": [{"managed_tenant_id": world.managed_tenant_a, "action": "skip", "client_id": world.client_a}]}),
        json!({"decisions": [{"managed_tenant_id": world.managed_tenant_a, "action": "skip"},
                             {"managed_tenant_id": world.managed_tenant_a, "action": "create_client"}]}),
    ] {
        let response = app.post(confirm, &world.updater, body.clone()).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            response.body
        );
    }
    let mappings = app
        .get("/api/v1/integrations/entra/mappings", &world.reader)
        .await;
    assert_eq!(mappings.body["items"], json!([]));
}

#[sqlx::test(migrations = "../../migrations")]
async fn resolve_bodies_are_strict(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let resolve = format!(
        "/api/v1/integrations/entra/reconciliation-queue/{}/resolve",
        world.review_item_a
    );
    for body in [
        json!({"action": "create_new", "contact_id": world.contact_a}),
        json!({"action": "dismiss", "note": "x", "allow_other_client": true}),
        json!({"action": "link_existing"}),
        json!({"action": "merge"}),
    ] {
        let response = app.post(&resolve, &world.updater, body.clone()).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            response.body
        );
    }
    let created = app
        .post(&resolve, &world.updater, json!({"action": "create_new"}))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["status"], json!("resolved"));
}

#[sqlx::test(migrations = "../../migrations")]
async fn direct_connection_completes_through_the_callback(pool: PgPool) {
    let simulator = start_simulator().await;
    let callback = "http://localhost:8080/auth/oauth2/microsoft/callback";
    let sim_config = simulator.config().clone();
    let app = TestApp::with_config(pool, |config| {
        config.microsoft.login_base_url =
            url::Url::parse(&simulator.login_base_url()).expect("login url");
        config.microsoft.graph_base_url =
            url::Url::parse(&simulator.graph_base_url()).expect("graph url");
        config.microsoft.client_id = Some(sim_config.app_client_id.clone());
        config.microsoft.client_secret = Some(secrecy::SecretString::from(
            sim_config.app_client_secret.clone(),
        ));
        config.microsoft.callback_url = Some(callback.to_owned());
    });
    let world = world(&app).await;
    let started = app
        .post(
            "/api/v1/integrations/entra/connect/direct",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let authorize_url = started.body["authorize_url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(authorize_url.contains("code_challenge_method=S256"));
    assert!(authorize_url.contains("prompt=select_account"));

    // The browser's trip through Microsoft: the simulator consents and redirects back.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = browser.get(&authorize_url).send().await.expect("authorize");
    assert_eq!(answer.status().as_u16(), 302);
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("location")
        .to_owned();
    let location = url::Url::parse(&location).expect("location url");
    assert_eq!(location.path(), "/auth/oauth2/microsoft/callback");
    let query = location.query().expect("query").to_owned();

    // A key of another PSA tenant presented with the callback is refused.
    let foreign = axum::http::Request::builder()
        .uri(format!("/auth/oauth2/microsoft/callback?{query}"))
        .header("accept", "application/json")
        .header("x-api-key", &world.other)
        .body(axum::body::Body::empty())
        .expect("request");
    let refused = app.raw(foreign).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.code(), "tenant_mismatch");
    let status = app.get("/api/v1/integrations/entra", &world.reader).await;
    assert_eq!(status.body["connection"]["status"], json!("disconnected"));

    // A fresh flow, completed by the right browser.
    let started = app
        .post(
            "/api/v1/integrations/entra/connect/direct",
            &world.updater,
            json!({}),
        )
        .await;
    let authorize_url = started.body["authorize_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let answer = browser.get(&authorize_url).send().await.expect("authorize");
    let location = url::Url::parse(
        answer
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .expect("location"),
    )
    .expect("location url");
    let query = location.query().expect("query").to_owned();
    let completed = app
        .raw(
            axum::http::Request::builder()
                .uri(format!("/auth/oauth2/microsoft/callback?{query}"))
                .header("accept", "application/json")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert_eq!(completed.body, json!({"status": "connected"}));
    let status = app.get("/api/v1/integrations/entra", &world.reader).await;
    assert_eq!(status.body["connection"]["status"], json!("connected"));
    assert_eq!(status.body["connection"]["kind"], json!("direct"));

    // Validate probes Graph with the saved token; a revoked token marks the connection.
    let validated = app
        .post(
            "/api/v1/integrations/entra/validate",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(validated.status, StatusCode::OK, "{}", validated.body);
    assert_eq!(validated.body["ok"], json!(true), "{}", validated.body);
    simulator.revoke_access_tokens();
    let revoked = app
        .post(
            "/api/v1/integrations/entra/validate",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["ok"], json!(false), "{}", revoked.body);
    assert_ne!(
        revoked.body["connection"]["status"],
        json!("connected"),
        "{}",
        revoked.body
    );
    assert!(!revoked.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .is_empty());

    // Replaying the callback is refused and changes nothing.
    let replay = app
        .call(
            Method::GET,
            &format!("/auth/oauth2/microsoft/callback?{query}"),
            None,
            None,
        )
        .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER);
    let replay_json = app
        .raw(
            axum::http::Request::builder()
                .uri(format!("/auth/oauth2/microsoft/callback?{query}"))
                .header("accept", "application/json")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(replay_json.code(), "state_used");
    let audit = app.get("/api/v1/audit", &world.reader).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    assert!(actions.contains(&"entra.connect.direct"), "{actions:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn simultaneous_sync_requests_start_one_run(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let path = "/api/v1/integrations/entra/sync";
    let requests = (0..6).map(|_| app.post(path, &world.updater, json!({"scope": "all"})));
    let responses = futures::future::join_all(requests).await;
    let run_ids: std::collections::BTreeSet<String> = responses
        .iter()
        .map(|response| {
            assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.body);
            response.body["run_id"].as_str().expect("run id").to_owned()
        })
        .collect();
    assert_eq!(run_ids.len(), 1, "every request names the same run");
    let fresh = responses
        .iter()
        .filter(|response| response.body["deduplicated"] == json!(false))
        .count();
    assert_eq!(fresh, 1, "exactly one request started the run");
    assert_eq!(app.starter.syncs.lock().expect("lock").len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn dismissed_items_can_be_reopened_and_filter_overrides_are_validated(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let item = format!(
        "/api/v1/integrations/entra/reconciliation-queue/{}",
        world.review_item_a
    );
    let not_dismissed = app
        .post(&format!("{item}/reopen"), &world.updater, json!({}))
        .await;
    assert_eq!(
        not_dismissed.status,
        StatusCode::CONFLICT,
        "{}",
        not_dismissed.body
    );
    let dismissed = app
        .post(
            &format!("{item}/resolve"),
            &world.updater,
            json!({"action": "dismiss", "note": "shared mailbox"}),
        )
        .await;
    assert_eq!(dismissed.body["status"], json!("dismissed"));
    assert_eq!(dismissed.body["note"], json!("shared mailbox"));
    let reopened = app
        .post(&format!("{item}/reopen"), &world.updater, json!({}))
        .await;
    assert_eq!(reopened.status, StatusCode::OK, "{}", reopened.body);
    assert_eq!(reopened.body["status"], json!("open"));

    let filters = format!(
        "/api/v1/integrations/entra/managed-tenants/{}/filters",
        world.managed_tenant_a
    );
    let empty = app.get(&filters, &world.reader).await;
    assert_eq!(empty.body["licensed_only"], Value::Null);
    let bad = app
        .call(
            Method::PUT,
            &filters,
            Some(&world.updater),
            Some(json!({"exclusion_patterns": ["[a-"]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let bad_group = app
        .call(
            Method::PUT,
            &filters,
            Some(&world.updater),
            Some(json!({"exclude_groups": ["contractors"]})),
        )
        .await;
    assert_eq!(
        bad_group.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bad_group.body
    );
    let saved = app
        .call(
            Method::PUT,
            &filters,
            Some(&world.updater),
            Some(json!({"licensed_only": true,
                        "exclude_groups": ["5b0e6c5e-0000-4000-8000-000000000002"]})),
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let read = app.get(&filters, &world.reader).await;
    assert_eq!(read.body["licensed_only"], json!(true));
    assert_eq!(
        read.body["exclude_groups"],
        json!(["5b0e6c5e-0000-4000-8000-000000000002"])
    );
    assert_eq!(read.body["include_groups"], Value::Null);
    assert_eq!(
        read.body["exclude_guests"],
        Value::Null,
        "unset keys follow the tenant"
    );
    let unknown = app
        .get(
            &format!(
                "/api/v1/integrations/entra/managed-tenants/{}/filters",
                Uuid::new_v4()
            ),
            &world.reader,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../../migrations")]
async fn held_inactivations_are_listed_then_applied(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    let started = app
        .post(
            "/api/v1/integrations/entra/sync",
            &world.updater,
            json!({"scope": "all"}),
        )
        .await;
    let run_id: Uuid = started.body["run_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("run id");
    // The contact is linked to the user the guard held (applying re-checks that the link
    // still stands, SPEC §5: a relinked contact is dropped from the hold).
    sqlx::query(
        "INSERT INTO links (tenant_id, managed_tenant_id, object_id, contact_id)
         VALUES ($1, $2, 'object-ada', $3)",
    )
    .bind(world.tenant_a)
    .bind(world.managed_tenant_a)
    .bind(world.contact_a)
    .execute(app.store.pool())
    .await
    .expect("link");
    // What the guard leaves behind when a run would inactivate too many contacts.
    sqlx::query(
        "INSERT INTO run_tenant_results (tenant_id, run_id, managed_tenant_id, status, mode, finished_at)
         VALUES ($1, $2, $3, 'needs_confirmation', 'full', now())",
    )
    .bind(world.tenant_a)
    .bind(run_id)
    .bind(world.managed_tenant_a)
    .execute(app.store.pool())
    .await
    .expect("tenant result");
    sqlx::query(
        "INSERT INTO pending_inactivations (tenant_id, run_id, managed_tenant_id, contact_id, object_id, reason, state)
         VALUES ($1, $2, $3, $4, 'object-ada', 'deleted_upstream', 'held')",
    )
    .bind(world.tenant_a)
    .bind(run_id)
    .bind(world.managed_tenant_a)
    .bind(world.contact_a)
    .execute(app.store.pool())
    .await
    .expect("held inactivation");

    let path = format!(
        "/api/v1/integrations/entra/sync/runs/{run_id}/tenants/{}/held-inactivations",
        world.managed_tenant_a
    );
    let listed = app.get(&path, &world.reader).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["items"][0]["state"], json!("held"));
    assert_eq!(listed.body["items"][0]["reason"], json!("deleted_upstream"));
    let run = app
        .get(
            &format!("/api/v1/integrations/entra/sync/runs/{run_id}"),
            &world.reader,
        )
        .await;
    assert_eq!(
        run.body["tenants"][0]["status"],
        json!("needs_confirmation")
    );

    let applied = app
        .post(&path, &world.updater, json!({"action": "apply"}))
        .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    assert_eq!(applied.body["affected"], json!(1));
    assert_eq!(applied.body["tenant"]["status"], json!("completed"));
    let contact = app
        .get(
            "/api/v1/contacts?include_inactive=true&email=ada@contoso.com",
            &world.reader,
        )
        .await;
    assert_eq!(contact.body["items"][0]["is_active"], json!(false));
    assert_eq!(
        contact.body["items"][0]["inactive_reason"],
        json!("deleted_upstream")
    );
    let history = app
        .get(
            &format!("/api/v1/contacts/{}/history", world.contact_a),
            &world.reader,
        )
        .await;
    assert_eq!(history.body["items"][0]["action"], json!("inactivate"));
    // Nothing is held any more.
    let again = app
        .post(&path, &world.updater, json!({"action": "discard"}))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

/// `MICROSOFT_OAUTH_CALLBACK_URL` registered with a trailing slash (as Microsoft's portal
/// often shows it): the flow starts, Microsoft redirects to that exact URI, and the callback
/// there completes the connection.
#[sqlx::test(migrations = "../../migrations")]
async fn a_callback_url_with_a_trailing_slash_works_end_to_end(pool: PgPool) {
    let simulator = start_simulator().await;
    let callback = "http://localhost:8080/auth/oauth2/microsoft/callback/";
    let sim_config = simulator.config().clone();
    let app = TestApp::with_config(pool, |config| {
        config.microsoft.login_base_url =
            url::Url::parse(&simulator.login_base_url()).expect("login url");
        config.microsoft.graph_base_url =
            url::Url::parse(&simulator.graph_base_url()).expect("graph url");
        config.microsoft.client_id = Some(sim_config.app_client_id.clone());
        config.microsoft.client_secret = Some(secrecy::SecretString::from(
            sim_config.app_client_secret.clone(),
        ));
        config.microsoft.callback_url = Some(callback.to_owned());
    });
    let world = world(&app).await;
    let started = app
        .post(
            "/api/v1/integrations/entra/connect/direct",
            &world.updater,
            json!({}),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let authorize_url = started.body["authorize_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = browser.get(&authorize_url).send().await.expect("authorize");
    assert_eq!(answer.status().as_u16(), 302);
    let location = url::Url::parse(
        answer
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .expect("location"),
    )
    .expect("location url");
    assert_eq!(location.path(), "/auth/oauth2/microsoft/callback/");
    let completed = app
        .raw(
            axum::http::Request::builder()
                .uri(format!(
                    "{}?{}",
                    location.path(),
                    location.query().expect("query")
                ))
                .header("accept", "application/json")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert_eq!(completed.body, json!({"status": "connected"}));
    let status = app.get("/api/v1/integrations/entra", &world.reader).await;
    assert_eq!(status.body["connection"]["status"], json!("connected"));
}
