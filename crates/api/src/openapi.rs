//! The OpenAPI document's frame (title, security scheme, shared schemas). Paths are added by
//! `utoipa_axum::routes!` as the router is built, so every route is described exactly once.

use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "entra-sync",
        description = "Keeps an MSP's PSA contacts in step with its customers' Microsoft Entra ID directories."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&ApiKeySecurity),
    security(("api_key" = []))
)]
pub struct ApiDoc;

struct ApiKeySecurity;

impl Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::auth::API_KEY_HEADER,
                "A PSA user's API key, or the platform master key for /api/v1/platform*",
            ))),
        );
    }
}

/// The document, built once per process.
pub(crate) fn cached_document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(crate::openapi_json)
}

/// The most items a list returns, and what it returns without `limit`.
use entra_sync_store::page::{DEFAULT_LIMIT, MAX_LIMIT};

/// Longest `cursor` accepted (`PageQuery::page_request` enforces it): room for a text cursor
/// (33 characters and two per byte) of a 2,000-byte name.
pub const MAX_CURSOR_CHARS: u64 = 4096;

/// Each list's cursor format (`entra_sync_store::page`): every string matching its pattern is
/// a position the list accepts, so the pattern is exactly what the server takes.
const CURSOR_PATTERNS: [(&str, &str); 8] = [
    ("list_runs", entra_sync_store::page::TIME_CURSOR_PATTERN),
    ("list_audit", entra_sync_store::page::TIME_CURSOR_PATTERN),
    (
        "list_review_items",
        entra_sync_store::page::TIME_CURSOR_PATTERN,
    ),
    ("list_clients", entra_sync_store::page::TEXT_CURSOR_PATTERN),
    ("list_contacts", entra_sync_store::page::TEXT_CURSOR_PATTERN),
    (
        "list_managed_tenants",
        entra_sync_store::page::OFFSET_CURSOR_PATTERN,
    ),
    (
        "list_mappings",
        entra_sync_store::page::OFFSET_CURSOR_PATTERN,
    ),
    (
        "mapping_preview",
        entra_sync_store::page::OFFSET_CURSOR_PATTERN,
    ),
];

/// Completes the document generated from the route declarations with what the router's shared
/// layers do to every route, so a generic client can trust it: the statuses of body, path and
/// query extraction (`extract`), authentication, the overload and timeout layer and internal
/// errors; the `limit` and `cursor` ranges `PageQuery` enforces; `additionalProperties: false`
/// on tagged bodies that refuse unknown fields (utoipa marks only structs); and the OpenAPI
/// links that lead from a list or a creation to the routes taking the id it returned.
/// (JSON rather than utoipa's types: utoipa 5 writes a link's `operationId` as
/// `operation_id`.)
pub(crate) fn complete(document: &utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(document).unwrap_or_default();
    complete_value(&mut value);
    value
}

fn error_response(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn add_response(operation: &mut serde_json::Value, status: &str, description: &str) {
    if let Some(responses) = operation
        .get_mut("responses")
        .and_then(serde_json::Value::as_object_mut)
    {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
}

/// (operation id, status, link name, target operation id, parameter, runtime expression).
const LINKS: [(&str, &str, &str, &str, &str, &str); 15] = [
    (
        "list_runs",
        "200",
        "GetRun",
        "get_run",
        "run_id",
        "$response.body#/items/0/run_id",
    ),
    (
        "list_runs",
        "200",
        "CancelRun",
        "cancel_run",
        "run_id",
        "$response.body#/items/0/run_id",
    ),
    (
        "start_sync",
        "202",
        "GetRun",
        "get_run",
        "run_id",
        "$response.body#/run_id",
    ),
    (
        "start_sync",
        "202",
        "CancelRun",
        "cancel_run",
        "run_id",
        "$response.body#/run_id",
    ),
    (
        "start_discovery",
        "202",
        "GetRun",
        "get_run",
        "run_id",
        "$response.body#/run_id",
    ),
    (
        "list_review_items",
        "200",
        "ResolveItem",
        "resolve_review_item",
        "item_id",
        "$response.body#/items/0/item_id",
    ),
    (
        "list_review_items",
        "200",
        "ReopenItem",
        "reopen_review_item",
        "item_id",
        "$response.body#/items/0/item_id",
    ),
    (
        "list_contacts",
        "200",
        "UpdateContact",
        "update_contact",
        "contact_id",
        "$response.body#/items/0/contact_id",
    ),
    (
        "list_contacts",
        "200",
        "ContactHistory",
        "contact_history",
        "contact_id",
        "$response.body#/items/0/contact_id",
    ),
    (
        "create_contact",
        "201",
        "UpdateContact",
        "update_contact",
        "contact_id",
        "$response.body#/contact_id",
    ),
    (
        "create_contact",
        "201",
        "ContactHistory",
        "contact_history",
        "contact_id",
        "$response.body#/contact_id",
    ),
    (
        "list_managed_tenants",
        "200",
        "GetFilters",
        "get_filter_override",
        "managed_tenant_id",
        "$response.body#/items/0/managed_tenant_id",
    ),
    (
        "list_managed_tenants",
        "200",
        "PutFilters",
        "put_filter_override",
        "managed_tenant_id",
        "$response.body#/items/0/managed_tenant_id",
    ),
    (
        "list_mappings",
        "200",
        "Unmap",
        "unmap",
        "managed_tenant_id",
        "$response.body#/items/0/managed_tenant_id",
    ),
    (
        "create_tenant",
        "201",
        "CreateUser",
        "create_user",
        "tenant_id",
        "$response.body#/tenant_id",
    ),
];

/// Text the handlers' `check_text` accepts: no control characters (`char::is_control`).
const NO_CONTROL: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
/// The same, with at least one character that is not whitespace (the handlers trim first).
const NO_CONTROL_NOT_BLANK: &str =
    "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$";

/// String limits the handlers enforce, by (schema, property): (min length, max length, pattern).
/// utoipa has no place for them on the shared body types without repeating each handler's
/// constants, so they are stated here, next to the document they describe.
const TEXT_LIMITS: [(&str, &str, u64, u64, &str); 6] = [
    ("CreateTenantBody", "name", 1, 200, NO_CONTROL_NOT_BLANK),
    ("CreateClientBody", "name", 1, 256, NO_CONTROL_NOT_BLANK),
    (
        "CreateContactBody",
        "full_name",
        1,
        256,
        NO_CONTROL_NOT_BLANK,
    ),
    (
        "UpdateContactBody",
        "full_name",
        1,
        256,
        NO_CONTROL_NOT_BLANK,
    ),
    ("CreateUserBody", "email", 3, 254, NO_CONTROL_NOT_BLANK),
    ("CippConnectBody", "base_url", 1, 2048, NO_CONTROL_NOT_BLANK),
];

/// Optional free-text contact fields (`check_optional`: 128 characters, no control character).
const CONTACT_FIELDS: [(&str, &str); 6] = [
    ("CreateContactBody", "phone"),
    ("CreateContactBody", "mobile"),
    ("CreateContactBody", "job_title"),
    ("UpdateContactBody", "phone"),
    ("UpdateContactBody", "mobile"),
    ("UpdateContactBody", "job_title"),
];

/// E-mail addresses the handlers check with `normalize_email` (at most 254 characters). The
/// server also takes Unicode (IDN) addresses, which the `email` format leaves to `idn-email`;
/// every address of the `email` format is accepted.
const EMAIL_FIELDS: [(&str, &str); 3] = [
    ("CreateContactBody", "email"),
    ("UpdateContactBody", "email"),
    ("CreateUserBody", "email"),
];

/// Lists of domain names (`check_domains`: at most 200, each a DNS name of two labels or more;
/// Unicode labels are accepted too, as for e-mail addresses).
const DOMAIN_LISTS: [(&str, &str); 2] = [
    ("CreateClientBody", "domains"),
    ("CreateClientBody", "secondary_domains"),
];

/// Operations whose body names rows by id (a client, a managed tenant, a contact): an id that
/// names nothing in the caller's tenant answers 404 (`REFERENCES_TO_MISSING_ROWS`).
const BODY_REFERENCES: [&str; 5] = [
    "create_contact",
    "start_sync",
    "preflight",
    "confirm_mappings",
    "resolve_review_item",
];

/// Tagged request bodies declared with `deny_unknown_fields`.
const CLOSED_TAGGED_BODIES: [&str; 2] = ["ResolveBody", "DecisionBody"];

/// Routes answered without touching the database or the shared layers' errors.
const PLAIN_ROUTES: [&str; 2] = ["/healthz", crate::openapi::OPENAPI_PATH];

fn complete_value(document: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let global_security = document.get("security").is_some();
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let secured = match operation.get("security") {
                    None => global_security,
                    Some(Value::Array(requirements)) => requirements
                        .iter()
                        .any(|requirement| requirement.as_object().is_some_and(|r| !r.is_empty())),
                    Some(_) => false,
                };
                let has_body = operation.get("requestBody").is_some();
                let cursor_pattern = operation
                    .get("operationId")
                    .and_then(Value::as_str)
                    .and_then(|id| CURSOR_PATTERNS.iter().find(|(list, _)| *list == id))
                    .map(|(_, pattern)| *pattern);
                let mut has_path = false;
                let mut has_query = false;
                let mut has_cursor = false;
                if let Some(parameters) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                {
                    for parameter in parameters {
                        match parameter.get("in").and_then(Value::as_str) {
                            Some("path") => has_path = true,
                            Some("query") => has_query = true,
                            _ => {}
                        }
                        match parameter.get("name").and_then(Value::as_str) {
                            Some("limit") => {
                                parameter["schema"] = json!({
                                    "type": "integer", "format": "int32",
                                    "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT
                                });
                            }
                            Some("cursor") => {
                                has_cursor = true;
                                parameter["schema"] =
                                    json!({"type": "string", "maxLength": MAX_CURSOR_CHARS});
                                if let Some(pattern) = cursor_pattern {
                                    parameter["schema"]["pattern"] = json!(pattern);
                                }
                            }
                            // `GET /contacts?email=` goes through `check_text` (320 characters).
                            Some("email") if parameter["in"] == "query" => {
                                parameter["schema"] = json!({
                                    "type": "string", "maxLength": 320, "pattern": NO_CONTROL
                                });
                            }
                            _ => {}
                        }
                    }
                }
                if has_body {
                    add_response(operation, "400", "the body is not valid JSON");
                    add_response(operation, "413", "the body is too large");
                    add_response(operation, "415", "the body is not sent as JSON");
                    add_response(
                        operation,
                        "422",
                        "the body does not have the expected shape",
                    );
                }
                if operation
                    .get("operationId")
                    .and_then(Value::as_str)
                    .is_some_and(|id| BODY_REFERENCES.contains(&id))
                {
                    add_response(
                        operation,
                        "404",
                        "an id in the body names nothing in this tenant",
                    );
                }
                if has_path {
                    add_response(operation, "400", "a path parameter does not parse");
                }
                if has_query {
                    add_response(
                        operation,
                        "400",
                        "a query parameter does not parse or is out of range",
                    );
                }
                if has_cursor {
                    add_response(
                        operation,
                        "422",
                        "the cursor does not have this list's cursor format",
                    );
                }
                if secured {
                    add_response(operation, "401", "no API key, or an unknown one");
                    add_response(
                        operation,
                        "403",
                        "the key lacks a permission or the feature is off",
                    );
                }
                if !PLAIN_ROUTES.contains(&path.as_str()) {
                    add_response(
                        operation,
                        "500",
                        "an internal error (details are logged, not returned)",
                    );
                }
                add_response(
                    operation,
                    "503",
                    "the server is at its concurrency limit or the request timed out",
                );
            }
        }
    }
    add_links(document);
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        // The flag name in `/platform-feature-flags/{flag}/tenants` goes through `check_text`.
        if let Some(parameters) = paths
            .get_mut("/api/v1/platform-feature-flags/{flag}/tenants")
            .and_then(|item| item.pointer_mut("/post/parameters"))
            .and_then(Value::as_array_mut)
        {
            for parameter in parameters {
                if parameter["name"] == "flag" {
                    parameter["schema"] = json!({"type": "string", "minLength": 1, "maxLength": 100, "pattern": NO_CONTROL});
                }
            }
        }
    }
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (schema, property, min, max, pattern) in TEXT_LIMITS {
            if let Some(slot) = schemas
                .get_mut(schema)
                .and_then(|schema| schema.pointer_mut(&format!("/properties/{property}")))
            {
                let description = slot.get("description").cloned();
                *slot = json!({"type": "string", "minLength": min, "maxLength": max, "pattern": pattern});
                if let Some(description) = description {
                    slot["description"] = description;
                }
            }
        }
        let nullable = |slot: &Value| {
            slot["type"]
                .as_array()
                .is_some_and(|types| types.contains(&json!("null")))
        };
        let string_type = |nullable: bool| {
            if nullable {
                json!(["string", "null"])
            } else {
                json!("string")
            }
        };
        for (schema, property) in CONTACT_FIELDS {
            if let Some(slot) = schemas
                .get_mut(schema)
                .and_then(|schema| schema.pointer_mut(&format!("/properties/{property}")))
            {
                slot["type"] = string_type(nullable(slot));
                slot["maxLength"] = json!(128);
                slot["pattern"] = json!(NO_CONTROL);
            }
        }
        for (schema, property) in EMAIL_FIELDS {
            if let Some(slot) = schemas
                .get_mut(schema)
                .and_then(|schema| schema.pointer_mut(&format!("/properties/{property}")))
            {
                let described = slot
                    .get("description")
                    .and_then(Value::as_str)
                    .map(|text| format!("{text} "))
                    .unwrap_or_default();
                *slot = json!({"type": string_type(nullable(slot)), "format": "email",
                               "maxLength": entra_sync_domain::email::MAX_EMAIL_LEN,
                               "description": format!(
                                   "{described}An e-mail address; one with Unicode (IDN) \
                                    labels is accepted too. Anything else is refused with 422 \
                                    `invalid_email`.")});
            }
        }
        for (schema, property) in DOMAIN_LISTS {
            if let Some(slot) = schemas
                .get_mut(schema)
                .and_then(|schema| schema.pointer_mut(&format!("/properties/{property}")))
            {
                slot["maxItems"] = json!(crate::routes::psa::MAX_DOMAINS);
                slot["items"] = json!({"type": "string", "format": "hostname", "maxLength": 253,
                                       "description": "A domain name of two labels or more; \
                                                       Unicode labels, any case and a trailing \
                                                       dot are accepted too."});
            }
        }
        // A PSA user's permissions are the known ones.
        if let Some(slot) = schemas
            .get_mut("CreateUserBody")
            .and_then(|schema| schema.pointer_mut("/properties/permissions/items"))
        {
            slot["enum"] = json!(crate::routes::platform::KNOWN_PERMISSIONS);
        }
        // `field_policy` keys are the contact fields (`TenantSettings::validate`).
        if let Some(slot) = schemas
            .get_mut("SettingsBody")
            .and_then(|schema| schema.pointer_mut("/properties/field_policy"))
        {
            let fields: Vec<&str> = entra_sync_domain::model::ContactField::ALL
                .iter()
                .map(|field| field.as_str())
                .collect();
            slot["propertyNames"] = json!({"enum": fields});
        }
        // The schedule's interval range (`TenantSettings::validate`).
        if let Some(slot) = schemas
            .get_mut("ScheduleDocument")
            .and_then(|schema| schema.pointer_mut("/properties/interval_seconds"))
        {
            slot["minimum"] = json!(entra_sync_store::settings::MIN_SCHEDULE_INTERVAL_SECONDS);
            slot["maximum"] = json!(entra_sync_store::settings::MAX_SCHEDULE_INTERVAL_SECONDS);
        }
        // A filter document (settings and per-tenant overrides; `validate_filters`): domains
        // (a leading `@` or `*.`, any case and a trailing dot are accepted too), regular
        // expressions, group object ids, each as long as `check_text` allows.
        if let Some(properties) = schemas
            .get_mut("FiltersDocument")
            .and_then(|schema| schema.get_mut("properties"))
        {
            use entra_sync_domain::filter::{MAX_EXCLUSION_PATTERNS, MAX_FILTER_GROUPS};
            let filter_domain = json!({
                "format": "hostname", "maxLength": 253,
                "description": "A domain name; `@contoso.com` and `*.contoso.com` mean \
                                `contoso.com`, and any case, a trailing dot and Unicode labels \
                                are accepted too."
            });
            let lists = [
                ("domain_allow", filter_domain.clone(), None),
                ("domain_deny", filter_domain, None),
                (
                    "exclusion_patterns",
                    // Rust `regex` syntax, which JSON Schema's `regex` format (ECMA 262)
                    // does not describe: a pattern that does not compile is refused (422).
                    json!({"maxLength": 1024, "pattern": NO_CONTROL,
                           "description": "A regular expression (Rust `regex` syntax, \
                                           case-insensitive); one that does not compile is \
                                           refused with 422."}),
                    Some(MAX_EXCLUSION_PATTERNS),
                ),
                (
                    "include_groups",
                    json!({"format": "uuid"}),
                    Some(MAX_FILTER_GROUPS),
                ),
                (
                    "exclude_groups",
                    json!({"format": "uuid"}),
                    Some(MAX_FILTER_GROUPS),
                ),
            ];
            for (name, format, max_items) in lists {
                if let Some(slot) = properties.get_mut(name) {
                    let mut items = json!({"type": "string"});
                    for (key, value) in format.as_object().into_iter().flatten() {
                        items[key] = value.clone();
                    }
                    slot["items"] = items;
                    if let Some(max_items) = max_items {
                        slot["maxItems"] = json!(max_items);
                    }
                }
            }
        }
        // A confirmation carries 1 to 1000 decisions, each managed tenant at most once: two
        // decisions for one tenant are refused (422 `duplicate_managed_tenant`), once every id
        // they name is known to exist.
        if let Some(slot) = schemas
            .get_mut("ConfirmBody")
            .and_then(|schema| schema.pointer_mut("/properties/decisions"))
        {
            slot["minItems"] = json!(1);
            slot["maxItems"] = json!(1000);
            slot["uniqueItems"] = json!(true);
            slot["description"] = json!(
                "Each managed tenant at most once; a second decision for the same tenant is \
                 refused with 422 `duplicate_managed_tenant` once every id named exists."
            );
        }
        // `scope` decides whether `client_id` belongs (`requested_scope`).
        if let Some(slot) = schemas.get_mut("SyncBody") {
            *slot = json!({
                "description": "`{\"scope\":\"all\"}` or `{\"scope\":\"client\",\"client_id\":…}`.",
                "oneOf": [
                    {"type": "object", "additionalProperties": false, "required": ["scope"],
                     "properties": {
                        "scope": {"type": "string", "enum": ["all"],
                                  "description": "Every mapped managed tenant."},
                        "client_id": {"type": "null"}}},
                    {"type": "object", "additionalProperties": false,
                     "required": ["scope", "client_id"],
                     "properties": {
                        "scope": {"type": "string", "enum": ["client"],
                                  "description": "The managed tenants mapped to one client."},
                        "client_id": {"type": "string", "format": "uuid"}}}
                ]
            });
        }
    }
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        // A resolution's `note`: at most 2,000 characters, none a control character
        // (`check_text`).
        if let Some(variants) = schemas
            .get_mut("ResolveBody")
            .and_then(|schema| schema.get_mut("oneOf"))
            .and_then(Value::as_array_mut)
        {
            for variant in variants {
                if let Some(note) = variant.pointer_mut("/properties/note") {
                    note["maxLength"] = json!(2000);
                    note["pattern"] = json!(NO_CONTROL);
                }
            }
        }
        for name in CLOSED_TAGGED_BODIES {
            if let Some(variants) = schemas
                .get_mut(name)
                .and_then(|schema| schema.get_mut("oneOf"))
                .and_then(Value::as_array_mut)
            {
                for variant in variants {
                    if let Some(variant) = variant.as_object_mut() {
                        variant.insert("additionalProperties".to_owned(), Value::Bool(false));
                    }
                }
            }
        }
    }
}

fn add_links(document: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(id) = operation
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            for (source, status, name, target, parameter, expression) in LINKS {
                if source != id {
                    continue;
                }
                if let Some(response) = operation
                    .pointer_mut(&format!("/responses/{status}"))
                    .and_then(Value::as_object_mut)
                {
                    let links = response
                        .entry("links".to_owned())
                        .or_insert_with(|| json!({}));
                    if let Some(links) = links.as_object_mut() {
                        links.insert(
                            name.to_owned(),
                            json!({"operationId": target, "parameters": {parameter: expression}}),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        crate::openapi_json()
    }

    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("$ref", Value::String(target)) => found.push(target.clone()),
                        _ => refs(inner, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let document = document();
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.trim_start_matches('#');
            assert!(
                document.pointer(pointer).is_some(),
                "{target} is referenced but not defined"
            );
        }
    }

    #[test]
    fn limit_and_cursor_ranges_are_the_enforced_ones() {
        let document = document();
        let mut lists = 0;
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                let Some(parameters) = operation["parameters"].as_array() else {
                    continue;
                };
                for parameter in parameters {
                    if parameter["name"] == "limit" {
                        lists += 1;
                        assert_eq!(parameter["schema"]["minimum"], 1, "{method} {path}");
                        assert_eq!(
                            parameter["schema"]["maximum"],
                            super::MAX_LIMIT,
                            "{method} {path}"
                        );
                        assert!(operation["responses"]["400"].is_object(), "{method} {path}");
                    }
                    if parameter["name"] == "cursor" {
                        assert_eq!(
                            parameter["schema"]["maxLength"],
                            super::MAX_CURSOR_CHARS,
                            "{method} {path}"
                        );
                        // Every list states its cursor format.
                        assert!(
                            parameter["schema"]["pattern"].is_string(),
                            "{method} {path} has no cursor pattern"
                        );
                    }
                }
            }
        }
        assert!(lists >= 8, "only {lists} lists documented");
    }

    #[test]
    fn shared_layer_statuses_and_links_are_documented() {
        let document = document();
        let create_client = &document["paths"]["/api/v1/clients"]["post"]["responses"];
        for status in ["400", "401", "403", "413", "415", "422", "500", "503"] {
            assert!(create_client[status].is_object(), "POST /clients {status}");
        }
        let health = &document["paths"]["/healthz"]["get"]["responses"];
        assert!(health["401"].is_null() && health["500"].is_null());
        let runs = &document["paths"]["/api/v1/integrations/entra/sync/runs"]["get"];
        assert_eq!(
            runs["responses"]["200"]["links"]["GetRun"]["operationId"],
            "get_run"
        );
        let queue = &document["paths"]["/api/v1/integrations/entra/reconciliation-queue"]["get"];
        assert_eq!(
            queue["responses"]["200"]["links"]["ResolveItem"]["parameters"]["item_id"],
            "$response.body#/items/0/item_id"
        );
    }

    #[test]
    fn body_rules_are_documented() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        for (schema, property) in super::EMAIL_FIELDS {
            let slot = &schemas[schema]["properties"][property];
            assert_eq!(slot["format"], "email", "{schema}.{property}");
            assert_eq!(slot["maxLength"], 254, "{schema}.{property}");
        }
        assert_eq!(
            schemas["CreateClientBody"]["properties"]["domains"]["items"]["format"],
            "hostname"
        );
        let filters = &schemas["FiltersDocument"]["properties"];
        assert_eq!(filters["include_groups"]["items"]["format"], "uuid");
        assert_eq!(filters["include_groups"]["maxItems"], 50);
        assert_eq!(
            schemas["ScheduleDocument"]["properties"]["interval_seconds"]["minimum"],
            900
        );
        assert_eq!(
            schemas["CreateUserBody"]["properties"]["permissions"]["items"]["enum"]
                .as_array()
                .map(Vec::len),
            Some(crate::routes::platform::KNOWN_PERMISSIONS.len())
        );
        assert_eq!(
            schemas["SyncBody"]["oneOf"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            schemas["ConfirmBody"]["properties"]["decisions"]["uniqueItems"],
            true
        );
        for (path, method) in [
            ("/api/v1/contacts", "post"),
            ("/api/v1/integrations/entra/sync", "post"),
            ("/api/v1/integrations/entra/sync/preflight", "post"),
            ("/api/v1/integrations/entra/mappings/confirm", "post"),
        ] {
            assert!(
                document["paths"][path][method]["responses"]["404"].is_object(),
                "{method} {path} does not document 404"
            );
        }
    }
}
