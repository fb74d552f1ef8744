//! Microsoft Graph v1.0: users (list and delta), group transitive members, GDAP relationships and customers,
//! domains and organization.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::data::SimUser;
use crate::server::{
    apply_fault, bearer, decode_cursor, encode_cursor, graph_error, json_response, object, param,
    parse_query, FaultOutcome, Shared, Surface,
};
use crate::state::{AccessToken, ConsentFault, DeltaExpiry, State as SimState, TokenKind};

/// Every user property the simulator knows, in Graph spelling (MICROSOFT.md §3 `$select` list plus the
/// default set).
pub(crate) const USER_PROPERTIES: [&str; 17] = [
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
    "otherMails",
    "proxyAddresses",
    "accountEnabled",
    "userType",
    "jobTitle",
    "mobilePhone",
    "businessPhones",
    "assignedLicenses",
    "creationType",
    "officeLocation",
    "preferredLanguage",
];

/// MICROSOFT.md §3: only these come back without `$select`.
pub(crate) const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

/// MICROSOFT.md §3: page size default 100, maximum 999.
const DEFAULT_USERS_PAGE: usize = 100;
const MAX_USERS_PAGE: usize = 999;
/// MICROSOFT.md §2: `$top` ≤ 300 for GDAP relationships and customers.
const MAX_GDAP_PAGE: usize = 300;

/// Parses `$select` into canonical property names; `None` gives the default set.
pub(crate) fn parse_select(raw: Option<&str>) -> Result<Vec<&'static str>, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PROPERTIES.to_vec());
    };
    let mut selected = Vec::new();
    for name in raw
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let known = USER_PROPERTIES
            .iter()
            .find(|property| property.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("Could not find a property named '{name}' on type 'microsoft.graph.user'.")
            })?;
        if !selected.contains(known) {
            selected.push(*known);
        }
    }
    if selected.is_empty() {
        return Ok(DEFAULT_PROPERTIES.to_vec());
    }
    Ok(selected)
}

fn opt(value: &Option<String>) -> Value {
    value.as_ref().map_or(Value::Null, |text| json!(text))
}

/// The user in Graph JSON, restricted to `select` (`id` always comes back).
pub(crate) fn user_json(user: &SimUser, select: &[&str]) -> Value {
    let mut object = Map::new();
    object.insert("id".to_string(), json!(user.id));
    for property in select {
        let value = match *property {
            "id" => continue,
            "displayName" => json!(user.display_name),
            "givenName" => opt(&user.given_name),
            "surname" => opt(&user.surname),
            "mail" => opt(&user.mail),
            "userPrincipalName" => json!(user.user_principal_name),
            "otherMails" => json!(user.other_mails),
            "proxyAddresses" => json!(user.proxy_addresses),
            "accountEnabled" => json!(user.account_enabled),
            "userType" => json!(user.user_type),
            "jobTitle" => opt(&user.job_title),
            "mobilePhone" => opt(&user.mobile_phone),
            "businessPhones" => json!(user.business_phones),
            "assignedLicenses" => Value::Array(
                user.assigned_licenses
                    .iter()
                    .map(|sku| json!({"disabledPlans": [], "skuId": sku}))
                    .collect(),
            ),
            "creationType" => opt(&user.creation_type),
            "officeLocation" => opt(&user.office_location),
            "preferredLanguage" => opt(&user.preferred_language),
            _ => continue,
        };
        object.insert((*property).to_string(), value);
    }
    Value::Object(object)
}

/// A Graph collection answer: its `@odata.context` and its `value` array, the values moved in.
fn collection(context: String, values: Vec<Value>) -> Value {
    object([
        ("@odata.context", Value::String(context)),
        ("value", Value::Array(values)),
    ])
}

fn bad_request(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
}

fn unsupported(option: &str) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        &format!("Unsupported query option '{option}' on this request."),
    )
}

/// MICROSOFT.md §4 body for a token this tenant's Graph does not accept.
fn invalid_token(message: &str) -> Response {
    let mut response = graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
    );
    response
}

/// Validates the bearer token, applies the tenant's consent fault and any matching path fault.
/// MICROSOFT.md §4: `GET users` costs 2 resource units, 1 with `$select` (delta state tokens carry their
/// `$select`); other reads are charged 1.
fn users_cost(raw: Option<&str>) -> u32 {
    let raw = raw.unwrap_or_default();
    if ["$select", "%24select", "$skiptoken", "$deltatoken"]
        .iter()
        .any(|option| raw.contains(option))
    {
        1
    } else {
        2
    }
}

async fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    cost: u32,
) -> Result<AccessToken, Response> {
    let Some(token_text) = bearer(headers) else {
        return Err(invalid_token("Access token is empty."));
    };
    let token = {
        let mut state = shared.lock();
        let Some(token) = state.access_tokens.get(&token_text).cloned() else {
            return Err(invalid_token("IDX14100: JWT is not well formed."));
        };
        if token.expires_at <= state.now() {
            return Err(invalid_token(
                "Lifetime validation failed, the token is expired.",
            ));
        }
        if token.kind == TokenKind::Cipp {
            return Err(invalid_token(
                "Access token validation failure. Invalid audience.",
            ));
        }
        // MICROSOFT.md §1 and §5: a customer tenant without consent or role answers
        // `Authorization_IdentityNotFound` or 403 `Authorization_RequestDenied`.
        let consent = state
            .tenant_position(&token.tenant_id)
            .and_then(|position| state.tenants[position].consent_fault);
        match consent {
            Some(ConsentFault::GraphRequestDenied) => {
                return Err(graph_error(
                    StatusCode::FORBIDDEN,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                ))
            }
            Some(ConsentFault::GraphIdentityNotFound) => {
                return Err(graph_error(
                    StatusCode::UNAUTHORIZED,
                    "Authorization_IdentityNotFound",
                    "The identity of the calling application could not be established.",
                ))
            }
            _ => {}
        }
        if let Err(retry_after) = state.charge_resource_units(&token.tenant_id, cost) {
            let mut response = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return Err(response);
        }
        token
    };
    match apply_fault(shared, path, Some(&token.tenant_id), Surface::Graph).await {
        FaultOutcome::Respond(response) => Err(response),
        FaultOutcome::Proceed | FaultOutcome::Special(_) => Ok(token),
    }
}

/// Rejects `$` options the handler does not implement, so a client never gets silently wrong data.
fn reject_options(params: &[(String, String)], allowed: &[&str]) -> Result<(), Response> {
    for (key, _) in params {
        if key.starts_with('$') && !allowed.iter().any(|name| name.eq_ignore_ascii_case(key)) {
            return Err(unsupported(key));
        }
    }
    Ok(())
}

/// The position of a cursor inside a tenant's users: the next record index to scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ListCursor {
    /// Tenant id the cursor belongs to.
    pub t: String,
    /// Next record index.
    pub o: usize,
    /// Serve an empty page at this position first (MICROSOFT.md §3 empty pages with a nextLink).
    #[serde(default)]
    pub e: bool,
}

/// One page of the plain users list. Returns the page and the cursor of the next page, if any.
pub(crate) fn users_page(
    state: &SimState,
    tenant_position: usize,
    cursor: &ListCursor,
    top: usize,
    select: &[&str],
) -> (Vec<Value>, Option<ListCursor>) {
    let tenant = &state.tenants[tenant_position];
    if cursor.e {
        // MICROSOFT.md §3: a page can be empty and still carry a nextLink.
        let next = ListCursor {
            t: cursor.t.clone(),
            o: cursor.o,
            e: false,
        };
        return (Vec::new(), Some(next));
    }
    let mut value = Vec::new();
    let mut next_index = cursor.o;
    for (index, record) in tenant.records.iter().enumerate().skip(cursor.o) {
        if value.len() == top {
            break;
        }
        next_index = index + 1;
        if record.is_listed() {
            value.push(user_json(&record.user, select));
        }
    }
    let more = tenant
        .records
        .iter()
        .skip(next_index)
        .any(|record| record.is_listed());
    let next = more.then(|| ListCursor {
        t: cursor.t.clone(),
        o: next_index,
        // The quirk: every fourth tenant answers one empty page right after its first page.
        e: state.settings.empty_pages && cursor.o == 0 && tenant.position % 4 == 1,
    });
    (value, next)
}

pub(crate) fn users_next_link(
    graph_base: &str,
    select: &[&str],
    top: usize,
    cursor: &ListCursor,
) -> String {
    format!(
        "{graph_base}/v1.0/users?$select={}&$top={top}&$skiptoken={}",
        select.join(","),
        encode_cursor(cursor)
    )
}

fn context_url(graph_base: &str, entity: &str) -> String {
    format!("{graph_base}/v1.0/$metadata#{entity}")
}

/// `GET /v1.0/users` (MICROSOFT.md §3).
pub(crate) async fn users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let token = match authenticate(
        &shared,
        &headers,
        "/graph/v1.0/users",
        users_cost(raw.as_deref()),
    )
    .await
    {
        Ok(token) => token,
        Err(response) => return response,
    };
    let params = parse_query(raw.as_deref());
    if let Err(response) = reject_options(&params, &["$select", "$top", "$skiptoken"]) {
        return response;
    }
    let select = match parse_select(param(&params, "$select")) {
        Ok(select) => select,
        Err(message) => return bad_request(&message),
    };
    let top = match param(&params, "$top") {
        None => DEFAULT_USERS_PAGE,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(top) if (1..=MAX_USERS_PAGE).contains(&top) => top,
            _ => {
                // MICROSOFT.md §3: maximum 999.
                return bad_request(&format!(
                    "Invalid page size specified: '{text}'. Must be between 1 and 999 inclusive."
                ));
            }
        },
    };
    let cursor = match param(&params, "$skiptoken") {
        None => ListCursor {
            t: token.tenant_id.clone(),
            o: 0,
            e: false,
        },
        Some(text) => match decode_cursor::<ListCursor>(text) {
            Some(cursor) => cursor,
            None => return bad_request("Invalid skip token."),
        },
    };
    if !cursor.t.eq_ignore_ascii_case(&token.tenant_id) {
        return invalid_token("The skip token was issued for a different tenant.");
    }
    let graph_base = shared.graph_base();
    let state = shared.lock();
    let (value, next) = match state.tenant_position(&token.tenant_id) {
        Some(position) => users_page(&state, position, &cursor, top, &select),
        // The partner tenant has no simulated users.
        None => (Vec::new(), None),
    };
    drop(state);
    let mut body = collection(
        context_url(&graph_base, &format!("users({})", select.join(","))),
        value,
    );
    if let Some(next) = next {
        // MICROSOFT.md §3: follow `@odata.nextLink` (the whole URL) until absent.
        body["@odata.nextLink"] = json!(users_next_link(&graph_base, &select, top, &next));
    }
    json_response(StatusCode::OK, &body)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k")]
enum DeltaCursor {
    /// The initial full enumeration of a delta round.
    Full {
        t: String,
        o: usize,
        /// Directory version when the round started; the deltaLink resumes from it.
        v: u64,
        ep: u64,
        s: Vec<String>,
        #[serde(default)]
        e: bool,
    },
    /// Changes since `since`, in a round that started at version `v`.
    Changes {
        t: String,
        o: usize,
        since: u64,
        v: u64,
        ep: u64,
        s: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeltaToken {
    t: String,
    v: u64,
    ep: u64,
    s: Vec<String>,
    /// Issue time on the simulator clock (seconds since the epoch).
    iat: i64,
}

fn delta_expired(shared: &Shared, delta_expiry: DeltaExpiry, select: &[&str]) -> Response {
    // MICROSOFT.md §3: an expired or invalid token answers 410 with a `Location` header, or an error code
    // `syncStateNotFound` / `resyncRequired` (also seen as `SyncStateNotFound`). MICROSOFT.md gives no status
    // for the code-only answers; the simulator sends them as 400 so a client must branch on the code.
    let (status, code, message) = match delta_expiry {
        DeltaExpiry::Gone => (
            StatusCode::GONE,
            "resyncRequired",
            "Resync required. Replace any local cached data with a full synchronization.",
        ),
        DeltaExpiry::ResyncRequired => (
            StatusCode::BAD_REQUEST,
            "resyncRequired",
            "Resync required. Replace any local cached data with a full synchronization.",
        ),
        DeltaExpiry::SyncStateNotFound => (
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state is not found.",
        ),
        DeltaExpiry::SyncStateNotFoundPascal => (
            StatusCode::BAD_REQUEST,
            "SyncStateNotFound",
            "The sync state root folder is not found.",
        ),
    };
    let mut response = graph_error(status, code, message);
    if delta_expiry == DeltaExpiry::Gone {
        let location = format!(
            "{}/v1.0/users/delta?$select={}",
            shared.graph_base(),
            select.join(",")
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

fn removed(id: &str, reason: &str) -> Value {
    // MICROSOFT.md §3: removed users are `{"id":…,"@removed":{"reason":"changed"|"deleted"}}`.
    json!({"id": id, "@removed": {"reason": reason}})
}

fn select_from_strings(names: &[String]) -> Vec<&'static str> {
    parse_select(Some(&names.join(","))).unwrap_or_else(|_| DEFAULT_PROPERTIES.to_vec())
}

/// `GET /v1.0/users/delta` (MICROSOFT.md §3).
pub(crate) async fn users_delta(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let token = match authenticate(
        &shared,
        &headers,
        "/graph/v1.0/users/delta",
        users_cost(raw.as_deref()),
    )
    .await
    {
        Ok(token) => token,
        Err(response) => return response,
    };
    let params = parse_query(raw.as_deref());
    // MICROSOFT.md §3: no `$top`, `$orderby`, `$expand` on delta (and `$filter` only by ids, which the
    // simulator does not implement).
    if let Err(response) = reject_options(&params, &["$select", "$skiptoken", "$deltatoken"]) {
        return response;
    }
    let graph_base = shared.graph_base();
    let state = shared.lock();
    let now = state.now().timestamp();
    let settings = state.settings.clone();
    let Some(position) = state.tenant_position(&token.tenant_id) else {
        // The partner tenant has no simulated users: an empty round.
        let link = DeltaToken {
            t: token.tenant_id.clone(),
            v: 0,
            ep: 0,
            s: Vec::new(),
            iat: now,
        };
        return json_response(
            StatusCode::OK,
            &json!({
                "@odata.context": context_url(&graph_base, "users"),
                "value": [],
                "@odata.deltaLink": format!("{graph_base}/v1.0/users/delta?$deltatoken={}", encode_cursor(&link)),
            }),
        );
    };
    let tenant = &state.tenants[position];
    let cursor = if let Some(text) = param(&params, "$deltatoken") {
        if text == "latest" {
            // Graph docs (delta query overview): `$deltatoken=latest` answers only a deltaLink, no data.
            let select = match parse_select(param(&params, "$select")) {
                Ok(select) => select,
                Err(message) => return bad_request(&message),
            };
            let link = DeltaToken {
                t: tenant.tenant_id.clone(),
                v: tenant.version,
                ep: tenant.delta_epoch,
                s: select.iter().map(|name| name.to_string()).collect(),
                iat: now,
            };
            return json_response(
                StatusCode::OK,
                &json!({
                    "@odata.context": context_url(&graph_base, "users"),
                    "value": [],
                    "@odata.deltaLink": format!("{graph_base}/v1.0/users/delta?$deltatoken={}", encode_cursor(&link)),
                }),
            );
        }
        let Some(delta_token) = decode_cursor::<DeltaToken>(text) else {
            return delta_expired(&shared, settings.delta_expiry, &DEFAULT_PROPERTIES);
        };
        if !delta_token.t.eq_ignore_ascii_case(&token.tenant_id) {
            return invalid_token("The delta token was issued for a different tenant.");
        }
        let select = select_from_strings(&delta_token.s);
        // MICROSOFT.md §3: directory delta tokens last 7 days.
        if delta_token.ep != tenant.delta_epoch
            || now.saturating_sub(delta_token.iat) > settings.delta_token_max_age_secs
        {
            return delta_expired(&shared, settings.delta_expiry, &select);
        }
        DeltaCursor::Changes {
            t: tenant.tenant_id.clone(),
            o: 0,
            since: delta_token.v,
            v: tenant.version,
            ep: tenant.delta_epoch,
            s: delta_token.s,
        }
    } else if let Some(text) = param(&params, "$skiptoken") {
        let Some(cursor) = decode_cursor::<DeltaCursor>(text) else {
            return delta_expired(&shared, settings.delta_expiry, &DEFAULT_PROPERTIES);
        };
        let (cursor_tenant, epoch, names) = match &cursor {
            DeltaCursor::Full { t, ep, s, .. } | DeltaCursor::Changes { t, ep, s, .. } => {
                (t, *ep, s)
            }
        };
        if !cursor_tenant.eq_ignore_ascii_case(&token.tenant_id) {
            return invalid_token("The skip token was issued for a different tenant.");
        }
        if epoch != tenant.delta_epoch {
            return delta_expired(&shared, settings.delta_expiry, &select_from_strings(names));
        }
        cursor
    } else {
        let select = match parse_select(param(&params, "$select")) {
            Ok(select) => select,
            Err(message) => return bad_request(&message),
        };
        DeltaCursor::Full {
            t: tenant.tenant_id.clone(),
            o: 0,
            v: tenant.version,
            ep: tenant.delta_epoch,
            s: select.iter().map(|name| name.to_string()).collect(),
            e: false,
        }
    };

    let page_size = settings.delta_page_size.max(1);
    let (names, offset, round_version) = match &cursor {
        DeltaCursor::Full { s, o, v, .. } | DeltaCursor::Changes { s, o, v, .. } => {
            (s.clone(), *o, *v)
        }
    };
    let select = select_from_strings(&names);
    let mut value = Vec::new();
    let mut next_offset = offset;
    let serve_empty = matches!(cursor, DeltaCursor::Full { e: true, .. });
    let since = match &cursor {
        DeltaCursor::Changes { since, .. } => Some(*since),
        DeltaCursor::Full { .. } => None,
    };
    let included = |record: &crate::state::UserRecord| match since {
        None => record.is_listed(),
        Some(since) => record.relevant_version(&select) > since,
    };
    if !serve_empty {
        for (index, record) in tenant.records.iter().enumerate().skip(offset) {
            if value.len() == page_size {
                break;
            }
            next_offset = index + 1;
            if !included(record) {
                continue;
            }
            let entry = if record.hard_deleted {
                removed(&record.user.id, "deleted")
            } else if record.user.deleted {
                removed(&record.user.id, "changed")
            } else {
                // A restored user reappears with no annotation (MICROSOFT.md §3).
                user_json(&record.user, &select)
            };
            value.push(entry);
        }
    }
    // MICROSOFT.md §3: entries can come in any order.
    if settings.delta_reorder {
        value.reverse();
    }
    // MICROSOFT.md §3: entries can repeat.
    if settings.delta_duplicates {
        if let Some(first) = value.first().cloned() {
            value.push(first);
        }
    }
    let more = serve_empty || tenant.records.iter().skip(next_offset).any(included);
    let mut body = collection(
        context_url(&graph_base, &format!("users({})", select.join(","))),
        value,
    );
    if more {
        let next = match cursor {
            DeltaCursor::Full { t, ep, s, v, .. } => DeltaCursor::Full {
                t,
                o: next_offset,
                v,
                ep,
                s,
                e: !serve_empty && settings.empty_pages && offset == 0 && tenant.position % 4 == 1,
            },
            DeltaCursor::Changes {
                t, since, v, ep, s, ..
            } => DeltaCursor::Changes {
                t,
                o: next_offset,
                since,
                v,
                ep,
                s,
            },
        };
        body["@odata.nextLink"] = json!(format!(
            "{graph_base}/v1.0/users/delta?$skiptoken={}",
            encode_cursor(&next)
        ));
    } else {
        // MICROSOFT.md §3: the last page carries `@odata.deltaLink`; the round's starting version is kept so
        // changes made while paging are reported next time.
        let link = DeltaToken {
            t: tenant.tenant_id.clone(),
            v: round_version,
            ep: tenant.delta_epoch,
            s: names,
            iat: now,
        };
        body["@odata.deltaLink"] = json!(format!(
            "{graph_base}/v1.0/users/delta?$deltatoken={}",
            encode_cursor(&link)
        ));
    }
    drop(state);
    json_response(StatusCode::OK, &body)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GdapCursor {
    o: usize,
    top: usize,
    active: bool,
}

fn partner_only(shared: &Shared, token: &AccessToken) -> Result<(), Response> {
    if token
        .tenant_id
        .eq_ignore_ascii_case(&shared.config.partner_tenant_id)
    {
        Ok(())
    } else {
        Err(graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ))
    }
}

fn gdap_cursor(params: &[(String, String)], allow_filter: bool) -> Result<GdapCursor, Response> {
    if let Some(text) = param(params, "$skiptoken") {
        return decode_cursor::<GdapCursor>(text)
            .filter(|cursor| (1..=MAX_GDAP_PAGE).contains(&cursor.top))
            .ok_or_else(|| bad_request("Invalid skip token."));
    }
    let top = match param(params, "$top") {
        None => MAX_GDAP_PAGE,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(top) if (1..=MAX_GDAP_PAGE).contains(&top) => top,
            _ => {
                return Err(bad_request(&format!(
                    "Invalid page size specified: '{text}'. Must be between 1 and 300 inclusive."
                )))
            }
        },
    };
    let active = match param(params, "$filter") {
        None => false,
        Some(filter) if allow_filter => {
            let normalized = filter.split_whitespace().collect::<Vec<_>>().join(" ");
            if normalized.eq_ignore_ascii_case("status eq 'active'") {
                true
            } else {
                return Err(unsupported("$filter"));
            }
        }
        Some(_) => return Err(unsupported("$filter")),
    };
    Ok(GdapCursor { o: 0, top, active })
}

fn paged(
    graph_base: &str,
    path: &str,
    entity: &str,
    items: Vec<Value>,
    cursor: &GdapCursor,
) -> Response {
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(cursor.o).take(cursor.top).collect();
    let next_offset = cursor.o + page.len();
    let mut body = collection(context_url(graph_base, entity), page);
    if next_offset < total {
        let next = GdapCursor {
            o: next_offset,
            ..cursor.clone()
        };
        body["@odata.nextLink"] = json!(format!(
            "{graph_base}/v1.0/{path}?$skiptoken={}",
            encode_cursor(&next)
        ));
    }
    json_response(StatusCode::OK, &body)
}

/// `GET /v1.0/tenantRelationships/delegatedAdminRelationships` (MICROSOFT.md §2).
pub(crate) async fn relationships(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let path = "/graph/v1.0/tenantRelationships/delegatedAdminRelationships";
    let token = match authenticate(&shared, &headers, path, 1).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    if let Err(response) = partner_only(&shared, &token) {
        return response;
    }
    let params = parse_query(raw.as_deref());
    if let Err(response) = reject_options(&params, &["$filter", "$top", "$skiptoken"]) {
        return response;
    }
    let cursor = match gdap_cursor(&params, true) {
        Ok(cursor) => cursor,
        Err(response) => return response,
    };
    let items: Vec<Value> = shared
        .lock()
        .relationships
        .iter()
        .filter(|relationship| !cursor.active || relationship.status == "active")
        .map(|relationship| {
            json!({
                "id": relationship.id,
                "displayName": relationship.display_name,
                "customer": {
                    "tenantId": relationship.customer_tenant_id,
                    "displayName": relationship.customer_display_name,
                },
                "status": relationship.status,
                "endDateTime": relationship.end_date_time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "autoExtendDuration": relationship.auto_extend_duration,
                "accessDetails": {
                    "unifiedRoles": relationship
                        .role_definition_ids
                        .iter()
                        .map(|id| json!({"roleDefinitionId": id}))
                        .collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    paged(
        &shared.graph_base(),
        "tenantRelationships/delegatedAdminRelationships",
        "tenantRelationships/delegatedAdminRelationships",
        items,
        &cursor,
    )
}

/// `GET /v1.0/tenantRelationships/delegatedAdminCustomers` (MICROSOFT.md §2).
pub(crate) async fn customers(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let path = "/graph/v1.0/tenantRelationships/delegatedAdminCustomers";
    let token = match authenticate(&shared, &headers, path, 1).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    if let Err(response) = partner_only(&shared, &token) {
        return response;
    }
    let params = parse_query(raw.as_deref());
    if let Err(response) = reject_options(&params, &["$top", "$skiptoken"]) {
        return response;
    }
    let cursor = match gdap_cursor(&params, false) {
        Ok(cursor) => cursor,
        Err(response) => return response,
    };
    let items: Vec<Value> = shared
        .lock()
        .tenants
        .iter()
        .map(|tenant| {
            json!({
                "id": tenant.tenant_id,
                "tenantId": tenant.tenant_id,
                "displayName": tenant.display_name,
            })
        })
        .collect();
    paged(
        &shared.graph_base(),
        "tenantRelationships/delegatedAdminCustomers",
        "tenantRelationships/delegatedAdminCustomers",
        items,
        &cursor,
    )
}

/// The partner tenant's own domain, for `domains` and `organization` with a partner token.
pub(crate) const PARTNER_DOMAIN: &str = "simulatedmsp.onmicrosoft.com";
pub(crate) const PARTNER_DISPLAY_NAME: &str = "Simulated MSP Partner";

/// (name, isDefault, isInitial, isVerified) of the token's tenant.
fn tenant_domains(shared: &Shared, tenant_id: &str) -> (String, Vec<(String, bool, bool, bool)>) {
    let state = shared.lock();
    match state.tenant_position(tenant_id) {
        Some(position) => {
            let tenant = &state.tenants[position];
            (
                tenant.display_name.clone(),
                tenant
                    .domains
                    .iter()
                    .map(|domain| {
                        (
                            domain.id.clone(),
                            domain.is_default,
                            domain.is_initial,
                            domain.is_verified,
                        )
                    })
                    .collect(),
            )
        }
        None => (
            PARTNER_DISPLAY_NAME.to_string(),
            vec![(PARTNER_DOMAIN.to_string(), true, true, true)],
        ),
    }
}

/// `GET /v1.0/domains` (MICROSOFT.md §2).
pub(crate) async fn domains(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = match authenticate(&shared, &headers, "/graph/v1.0/domains", 1).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    let (_, domains) = tenant_domains(&shared, &token.tenant_id);
    let value: Vec<Value> = domains
        .into_iter()
        .map(|(id, is_default, is_initial, is_verified)| {
            json!({"id": id, "isDefault": is_default, "isInitial": is_initial, "isVerified": is_verified})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"@odata.context": context_url(&shared.graph_base(), "domains"), "value": value}),
    )
}

/// `GET /v1.0/organization` (MICROSOFT.md §2: `verifiedDomains[]` of `{name, isDefault, isInitial}`).
pub(crate) async fn organization(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let token = match authenticate(&shared, &headers, "/graph/v1.0/organization", 1).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    let (display_name, domains) = tenant_domains(&shared, &token.tenant_id);
    let verified: Vec<Value> = domains
        .into_iter()
        .filter(|domain| domain.3)
        .map(|(name, is_default, is_initial, _)| {
            json!({"name": name, "isDefault": is_default, "isInitial": is_initial})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "@odata.context": context_url(&shared.graph_base(), "organization"),
            "value": [{"id": token.tenant_id, "displayName": display_name, "verifiedDomains": verified}],
        }),
    )
}

/// A stable contract id derived from the customer's tenant id.
fn contract_id(tenant_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("contract:{tenant_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// `GET /v1.0/contracts` (MICROSOFT.md §2, the older DAP view): `{id, contractType, customerId,
/// defaultDomainName, displayName}`. The name and domain are copies made at partnership time: the simulator
/// takes them from the generated data, never from later renames.
pub(crate) async fn contracts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let token = match authenticate(&shared, &headers, "/graph/v1.0/contracts", 1).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    if let Err(response) = partner_only(&shared, &token) {
        return response;
    }
    let params = parse_query(raw.as_deref());
    if let Err(response) = reject_options(&params, &["$top", "$skiptoken"]) {
        return response;
    }
    let cursor = match gdap_cursor(&params, false) {
        Ok(cursor) => cursor,
        Err(response) => return response,
    };
    let items: Vec<Value> = shared
        .lock()
        .tenants
        .iter()
        .map(|tenant| {
            let default_domain = tenant
                .domains
                .iter()
                .find(|domain| domain.is_default)
                .map(|domain| domain.id.clone());
            json!({
                "id": contract_id(&tenant.tenant_id),
                "contractType": "ResellerPartner",
                "customerId": tenant.tenant_id,
                "defaultDomainName": default_domain,
                "displayName": tenant.display_name,
            })
        })
        .collect();
    paged(
        &shared.graph_base(),
        "contracts",
        "contracts",
        items,
        &cursor,
    )
}

/// The position of a cursor inside a group's member list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupCursor {
    /// Tenant id the cursor belongs to.
    pub t: String,
    /// Group id.
    pub g: String,
    /// Next member index.
    pub o: usize,
}

/// One page of a group's listed (not deleted) member users, shaped as Graph answers
/// `transitiveMembers/microsoft.graph.user?$select=id`: `{"@odata.type":"#microsoft.graph.user","id":…}`.
/// `None` when the tenant has no such group.
pub(crate) fn group_members_page(
    state: &SimState,
    tenant_position: usize,
    cursor: &GroupCursor,
    top: usize,
) -> Option<(Vec<Value>, Option<GroupCursor>)> {
    let tenant = &state.tenants[tenant_position];
    let group = tenant
        .groups
        .iter()
        .find(|group| group.id.eq_ignore_ascii_case(&cursor.g))?;
    let listed = |id: &String| {
        tenant
            .index
            .get(id)
            .is_some_and(|position| tenant.records[*position].is_listed())
    };
    let mut value = Vec::new();
    let mut next_index = cursor.o;
    for (index, id) in group.member_ids.iter().enumerate().skip(cursor.o) {
        if value.len() == top {
            break;
        }
        next_index = index + 1;
        if listed(id) {
            value.push(json!({"@odata.type": "#microsoft.graph.user", "id": id}));
        }
    }
    let more = group.member_ids.iter().skip(next_index).any(listed);
    let next = more.then(|| GroupCursor {
        t: cursor.t.clone(),
        g: group.id.clone(),
        o: next_index,
    });
    Some((value, next))
}

pub(crate) fn group_members_next_link(
    graph_base: &str,
    top: usize,
    cursor: &GroupCursor,
) -> String {
    format!(
        "{graph_base}/v1.0/groups/{}/transitiveMembers/microsoft.graph.user?$select=id&$top={top}&$skiptoken={}",
        cursor.g,
        encode_cursor(cursor)
    )
}

/// Graph's 404 for a group id the tenant does not have.
pub(crate) fn group_not_found_message(group_id: &str) -> String {
    format!(
        "Resource '{group_id}' does not exist or one of its queried reference-property objects are not present."
    )
}

/// `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user` ("List group transitive members",
/// https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers, with the OData cast to users):
/// `$select` and `$top` (default 100, maximum 999 like MICROSOFT.md §3's users), paged by `@odata.nextLink`.
pub(crate) async fn group_transitive_member_users(
    State(shared): State<Arc<Shared>>,
    Path(group_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let token = match authenticate(&shared, &headers, "/graph/v1.0/groups", 1).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    let params = parse_query(raw.as_deref());
    if let Err(response) = reject_options(&params, &["$select", "$top", "$skiptoken"]) {
        return response;
    }
    let top = match param(&params, "$top") {
        None => DEFAULT_USERS_PAGE,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(top) if (1..=MAX_USERS_PAGE).contains(&top) => top,
            _ => {
                return bad_request(&format!(
                    "Invalid page size specified: '{text}'. Must be between 1 and 999 inclusive."
                ))
            }
        },
    };
    let cursor = match param(&params, "$skiptoken") {
        None => GroupCursor {
            t: token.tenant_id.clone(),
            g: group_id.clone(),
            o: 0,
        },
        Some(text) => match decode_cursor::<GroupCursor>(text) {
            Some(cursor) if cursor.g.eq_ignore_ascii_case(&group_id) => cursor,
            _ => return bad_request("Invalid skip token."),
        },
    };
    if !cursor.t.eq_ignore_ascii_case(&token.tenant_id) {
        return invalid_token("The skip token was issued for a different tenant.");
    }
    let graph_base = shared.graph_base();
    let state = shared.lock();
    let page = state
        .tenant_position(&token.tenant_id)
        .and_then(|position| group_members_page(&state, position, &cursor, top));
    drop(state);
    let Some((value, next)) = page else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &group_not_found_message(&group_id),
        );
    };
    let mut body = collection(context_url(&graph_base, "users(id)"), value);
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(group_members_next_link(&graph_base, top, &next));
    }
    json_response(StatusCode::OK, &body)
}
