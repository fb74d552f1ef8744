//! The CIPP API (MICROSOFT.md §5a): ListTenants, ListUsers and ListGraphRequest for users and for group
//! transitive members.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::graph::{
    group_members_next_link, group_members_page, group_not_found_message, parse_select, user_json,
    users_next_link, users_page, GroupCursor, ListCursor, USER_PROPERTIES,
};
use crate::server::{
    apply_fault, bearer, decode_cursor, json_response, object, param, parse_query, text_response,
    FaultOutcome, Shared, Surface,
};
use crate::state::{ConsentFault, FaultKind, TokenKind};

/// MICROSOFT.md §5a: above 8,000 users a `$count` request is queued.
const QUEUE_THRESHOLD: usize = 8_000;
const MAX_TOP: usize = 999;

/// MICROSOFT.md §5a: a platform 401 for a bad token; either the pre-issued token or one minted by client
/// credentials with `api://{client id}/.default` is accepted.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = || text_response(StatusCode::UNAUTHORIZED, "Unauthorized");
    let token = bearer(headers).ok_or_else(unauthorized)?;
    if token == shared.config.cipp_api_token {
        return Ok(());
    }
    let state = shared.lock();
    match state.access_tokens.get(&token) {
        Some(access) if access.kind == TokenKind::Cipp && access.expires_at > state.now() => Ok(()),
        _ => Err(unauthorized()),
    }
}

/// MICROSOFT.md §5a: 400 with `"Graph Error: … - Endpoint: …"` (a JSON string body).
fn graph_error_400(message: &str, endpoint: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!(format!("Graph Error: {message} - Endpoint: {endpoint}")),
    )
}

/// Turns a CIPP-specific fault into its MICROSOFT.md §5a answer.
fn special(kind: &FaultKind, endpoint: &str) -> Option<Response> {
    match kind {
        FaultKind::CippForbidden => Some(text_response(
            StatusCode::FORBIDDEN,
            "Access to this CIPP API endpoint is not allowed, you do not have the required permission or your IP address is not in an allowed range.",
        )),
        FaultKind::CippDisabled => Some(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "This feature has been disabled",
        )),
        FaultKind::CippGraphError => Some(graph_error_400(
            "Insufficient privileges to complete the operation.",
            endpoint,
        )),
        _ => None,
    }
}

async fn guard(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    tenant: Option<&str>,
    endpoint: &str,
) -> Result<Option<FaultKind>, Response> {
    authenticate(shared, headers)?;
    match apply_fault(shared, path, tenant, Surface::Plain).await {
        FaultOutcome::Respond(response) => Err(response),
        FaultOutcome::Special(kind) => match special(&kind, endpoint) {
            Some(response) => Err(response),
            None => Ok(Some(kind)),
        },
        FaultOutcome::Proceed => Ok(None),
    }
}

/// `GET /api/ListTenants` (MICROSOFT.md §5a): a bare JSON array.
pub(crate) async fn list_tenants(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let special_fault =
        match guard(&shared, &headers, "/cipp/api/ListTenants", None, "tenants").await {
            Ok(kind) => kind,
            Err(response) => return response,
        };
    if special_fault == Some(FaultKind::CippTenantsErrorRow) {
        // MICROSOFT.md §5a: on failure it still answers 200 with one row whose `customerId` is empty.
        return json_response(
            StatusCode::OK,
            &json!([{
                "customerId": "",
                "defaultDomainName": "",
                "initialDomainName": "",
                "displayName": "Failed to retrieve tenants. Error: AADSTS700082: The refresh token has expired due to inactivity.",
                "delegatedPrivilegeStatus": "",
                "relationshipEnd": null,
                "GraphErrorCount": 0,
                "LastGraphError": "",
            }]),
        );
    }
    if special_fault == Some(FaultKind::CippTenantsPermissionRow) {
        // MICROSOFT.md §5a: the error row, here with CIPP's permission-check text and no AADSTS code.
        return json_response(
            StatusCode::OK,
            &json!([{
                "customerId": "",
                "defaultDomainName": "Invalid",
                "initialDomainName": "",
                "displayName": "Failed to retrieve tenants. Perform a permission check.",
                "delegatedPrivilegeStatus": "",
                "relationshipEnd": null,
                "GraphErrorCount": 0,
                "LastGraphError": "",
            }]),
        );
    }
    let params = parse_query(raw.as_deref());
    let mut rows = Vec::new();
    if param(&params, "AllTenantSelector").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        // MICROSOFT.md §5a: `AllTenantSelector=true` adds a `customerId: "AllTenants"` pseudo-row.
        rows.push(json!({
            "customerId": "AllTenants",
            "defaultDomainName": "AllTenants",
            "initialDomainName": "AllTenants",
            "displayName": "*All Tenants",
            "delegatedPrivilegeStatus": "directTenant",
            "relationshipEnd": null,
            "GraphErrorCount": 0,
            "LastGraphError": "",
        }));
    }
    let state = shared.lock();
    for tenant in &state.tenants {
        let relationship_end = state
            .relationships
            .iter()
            .filter(|relationship| {
                relationship.status == "active"
                    && relationship.customer_tenant_id == tenant.tenant_id
            })
            .map(|relationship| relationship.end_date_time)
            .max()
            .map(|end| end.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let initial = tenant
            .domains
            .iter()
            .find(|domain| domain.is_initial)
            .map(|domain| domain.id.clone());
        let default = tenant
            .domains
            .iter()
            .find(|domain| domain.is_default)
            .map(|domain| domain.id.clone());
        // CIPP counts the Graph errors it meets per tenant; a tenant with a consent or role problem shows one.
        let last_graph_error = match tenant.consent_fault {
            Some(ConsentFault::Aadsts65001) => {
                "AADSTS65001: The user or administrator has not consented to use the application."
            }
            Some(ConsentFault::Aadsts90099) => {
                "AADSTS90099: The application has not been authorized in the tenant."
            }
            Some(ConsentFault::GraphRequestDenied) => {
                "Insufficient privileges to complete the operation."
            }
            Some(ConsentFault::GraphIdentityNotFound) => {
                "The identity of the calling application could not be established."
            }
            None => "",
        };
        rows.push(json!({
            "customerId": tenant.tenant_id,
            "defaultDomainName": default,
            "initialDomainName": initial,
            "displayName": tenant.display_name,
            "delegatedPrivilegeStatus": "granularDelegatedAdminPrivileges",
            "relationshipEnd": relationship_end,
            "GraphErrorCount": u32::from(!last_graph_error.is_empty()),
            "LastGraphError": last_graph_error,
        }));
    }
    drop(state);
    json_response(StatusCode::OK, &Value::Array(rows))
}

/// Resolves `tenantFilter` to a tenant position, or answers the CIPP Graph error a missing tenant or a
/// consent problem in that tenant gives.
fn resolve_tenant(
    shared: &Shared,
    tenant_filter: Option<&str>,
    endpoint: &str,
) -> Result<usize, Response> {
    let Some(filter) = tenant_filter.filter(|filter| !filter.trim().is_empty()) else {
        return Err(graph_error_400("tenantFilter is required.", endpoint));
    };
    let state = shared.lock();
    let Some(position) = state.tenant_position(filter) else {
        return Err(graph_error_400(
            &format!("AADSTS90002: Tenant '{filter}' not found."),
            endpoint,
        ));
    };
    // CIPP reads the tenant through Graph, so a consent or role problem there comes back as its Graph error.
    match state.tenants[position].consent_fault {
        Some(ConsentFault::Aadsts65001) => Err(graph_error_400(
            "AADSTS65001: The user or administrator has not consented to use the application.",
            endpoint,
        )),
        Some(ConsentFault::Aadsts90099) => Err(graph_error_400(
            "AADSTS90099: The application has not been authorized in the tenant.",
            endpoint,
        )),
        Some(ConsentFault::GraphRequestDenied) => Err(graph_error_400(
            "Insufficient privileges to complete the operation.",
            endpoint,
        )),
        Some(ConsentFault::GraphIdentityNotFound) => Err(graph_error_400(
            "The identity of the calling application could not be established.",
            endpoint,
        )),
        None => Ok(position),
    }
}

/// `GET /api/ListUsers?tenantFilter=` (MICROSOFT.md §5a): every user in one array, Graph field names plus
/// `username`, `Aliases` and `primDomain`.
pub(crate) async fn list_users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = parse_query(raw.as_deref());
    let tenant_filter = param(&params, "tenantFilter");
    if let Err(response) = guard(
        &shared,
        &headers,
        "/cipp/api/ListUsers",
        tenant_filter,
        "users",
    )
    .await
    {
        return response;
    }
    let position = match resolve_tenant(&shared, tenant_filter, "users") {
        Ok(position) => position,
        Err(response) => return response,
    };
    let state = shared.lock();
    let rows: Vec<Value> = state.tenants[position]
        .records
        .iter()
        .filter(|record| record.is_listed())
        .map(|record| {
            let user = &record.user;
            let mut row = user_json(user, &USER_PROPERTIES);
            let (username, domain) = user
                .user_principal_name
                .rsplit_once('@')
                .unwrap_or((user.user_principal_name.as_str(), ""));
            row["username"] = json!(username);
            row["Aliases"] = json!(user.proxy_addresses.join(", "));
            row["primDomain"] = json!(domain);
            row
        })
        .collect();
    drop(state);
    json_response(StatusCode::OK, &Value::Array(rows))
}

/// `GET /api/ListGraphRequest?Endpoint=users&…` (MICROSOFT.md §5a): `{"Results":[…],"Metadata":{…}}`.
pub(crate) async fn list_graph_request(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = parse_query(raw.as_deref());
    let tenant_filter = param(&params, "tenantFilter");
    let endpoint = param(&params, "Endpoint").unwrap_or_default().to_string();
    if let Err(response) = guard(
        &shared,
        &headers,
        "/cipp/api/ListGraphRequest",
        tenant_filter,
        &endpoint,
    )
    .await
    {
        return response;
    }
    if let Some(group_id) = group_members_endpoint(&endpoint) {
        return list_group_members(&shared, &params, tenant_filter, &endpoint, group_id);
    }
    if endpoint
        .trim_start_matches('/')
        .eq_ignore_ascii_case("domains")
    {
        // CIPP-API `Get-GraphRequestList` relays `GET {Version}/domains` in the tenantFilter's
        // tenant (Modules/CIPPCore/Public/GraphRequests/Get-GraphRequestList.ps1); Graph answers
        // `{id, isDefault, isInitial, isVerified}` per domain (MICROSOFT.md §1).
        let position = match resolve_tenant(&shared, tenant_filter, &endpoint) {
            Ok(position) => position,
            Err(response) => return response,
        };
        let state = shared.lock();
        let results: Vec<Value> = state.tenants[position]
            .domains
            .iter()
            .map(|domain| {
                json!({
                    "id": domain.id,
                    "isDefault": domain.is_default,
                    "isInitial": domain.is_initial,
                    "isVerified": domain.is_verified,
                })
            })
            .collect();
        return json_response(StatusCode::OK, &json!({"Results": results, "Metadata": {}}));
    }
    if !endpoint
        .trim_start_matches('/')
        .eq_ignore_ascii_case("users")
    {
        return graph_error_400(
            &format!("Resource not found for the segment '{endpoint}'."),
            &endpoint,
        );
    }
    let position = match resolve_tenant(&shared, tenant_filter, &endpoint) {
        Ok(position) => position,
        Err(response) => return response,
    };
    // A `nextLink` from a previous answer carries its own `$select`, `$top` and `$skiptoken`.
    let next_link_params = param(&params, "nextLink")
        .and_then(|link| url::Url::parse(link).ok())
        .map(|url| parse_query(url.query()));
    let source = next_link_params.as_deref().unwrap_or(&params);
    let select = match parse_select(param(source, "$select")) {
        Ok(select) => select,
        Err(message) => return graph_error_400(&message, &endpoint),
    };
    let top = match param(source, "$top") {
        None => 100,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(top) if (1..=MAX_TOP).contains(&top) => top,
            _ => {
                return graph_error_400(
                    &format!(
                    "Invalid page size specified: '{text}'. Must be between 1 and 999 inclusive."
                ),
                    &endpoint,
                )
            }
        },
    };
    let state = shared.lock();
    let tenant = &state.tenants[position];
    let mut cursor = ListCursor {
        t: tenant.tenant_id.clone(),
        o: 0,
        e: false,
    };
    if let Some(skiptoken) = param(source, "$skiptoken") {
        match decode_cursor::<ListCursor>(skiptoken) {
            Some(decoded) if decoded.t.eq_ignore_ascii_case(&tenant.tenant_id) => cursor = decoded,
            _ => return graph_error_400("Invalid skip token.", &endpoint),
        }
    }
    // MICROSOFT.md §5a: with `$count` above 8,000 users CIPP queues the request and answers no results.
    if param(&params, "$count").is_some() && tenant.listed_user_count() > QUEUE_THRESHOLD {
        return json_response(
            StatusCode::OK,
            &json!({"Results": [], "Metadata": {"Queued": true}}),
        );
    }
    let manual =
        param(&params, "manualPagination").is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let graph_base = shared.graph_base();
    let mut results = Vec::new();
    let mut next = Some(cursor);
    while let Some(current) = next.take() {
        let (page, following) = users_page(&state, position, &current, top, &select);
        results.extend(page);
        next = following;
        if manual {
            break;
        }
    }
    drop(state);
    let metadata = match next {
        Some(cursor) => json!({"nextLink": users_next_link(&graph_base, &select, top, &cursor)}),
        None => json!({}),
    };
    json_response(
        StatusCode::OK,
        &object([("Results", Value::Array(results)), ("Metadata", metadata)]),
    )
}

/// The group id of an `Endpoint=groups/{id}/transitiveMembers/microsoft.graph.user`.
fn group_members_endpoint(endpoint: &str) -> Option<&str> {
    let path = endpoint.trim_start_matches('/');
    let (collection, rest) = path.split_once('/')?;
    let (group_id, cast) = rest.split_once('/')?;
    (collection.eq_ignore_ascii_case("groups")
        && cast.eq_ignore_ascii_case("transitiveMembers/microsoft.graph.user"))
    .then_some(group_id)
}

/// `ListGraphRequest` on a group's transitive member users: CIPP relays Graph's answer
/// (https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers) as `Results`, and with
/// `manualPagination=true` hands Graph's nextLink back as `Metadata.nextLink` (MICROSOFT.md §5a).
fn list_group_members(
    shared: &Shared,
    params: &[(String, String)],
    tenant_filter: Option<&str>,
    endpoint: &str,
    group_id: &str,
) -> Response {
    let position = match resolve_tenant(shared, tenant_filter, endpoint) {
        Ok(position) => position,
        Err(response) => return response,
    };
    let next_link_params = param(params, "nextLink")
        .and_then(|link| url::Url::parse(link).ok())
        .map(|url| parse_query(url.query()));
    let source = next_link_params.as_deref().unwrap_or(params);
    let top = match param(source, "$top") {
        None => 100,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(top) if (1..=MAX_TOP).contains(&top) => top,
            _ => {
                return graph_error_400(
                    &format!(
                    "Invalid page size specified: '{text}'. Must be between 1 and 999 inclusive."
                ),
                    endpoint,
                )
            }
        },
    };
    let state = shared.lock();
    let tenant = &state.tenants[position];
    let mut cursor = GroupCursor {
        t: tenant.tenant_id.clone(),
        g: group_id.to_string(),
        o: 0,
    };
    if let Some(skiptoken) = param(source, "$skiptoken") {
        match decode_cursor::<GroupCursor>(skiptoken) {
            Some(decoded)
                if decoded.t.eq_ignore_ascii_case(&tenant.tenant_id)
                    && decoded.g.eq_ignore_ascii_case(group_id) =>
            {
                cursor = decoded
            }
            _ => return graph_error_400("Invalid skip token.", endpoint),
        }
    }
    let manual =
        param(params, "manualPagination").is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let graph_base = shared.graph_base();
    let mut results = Vec::new();
    let mut next = Some(cursor);
    while let Some(current) = next.take() {
        let Some((page, following)) = group_members_page(&state, position, &current, top) else {
            return graph_error_400(&group_not_found_message(group_id), endpoint);
        };
        results.extend(page);
        next = following;
        if manual {
            break;
        }
    }
    drop(state);
    let metadata = match next {
        Some(cursor) => json!({"nextLink": group_members_next_link(&graph_base, top, &cursor)}),
        None => json!({}),
    };
    json_response(
        StatusCode::OK,
        &object([("Results", Value::Array(results)), ("Metadata", metadata)]),
    )
}
