//! The admin API under `/_admin/` (JSON, no auth): directory changes, faults, clock and settings for tests and demos.
//! The endpoints and example bodies are listed in the crate documentation (`lib.rs`, "Admin API").

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::data::SimUser;
use crate::server::{json_response, Shared};
use crate::state::{
    AdminError, ConsentFault, FaultSpec, NewUser, Settings, State as SimState, UserPatch,
};

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_admin/state", get(state_summary))
        .route("/_admin/reset", post(reset))
        .route(
            "/_admin/tenants/{tenant}/users",
            get(list_users).post(add_user),
        )
        .route(
            "/_admin/tenants/{tenant}/users/{user}",
            axum::routing::patch(update_user),
        )
        .route(
            "/_admin/tenants/{tenant}/users/{user}/{action}",
            post(user_action),
        )
        .route("/_admin/tenants/{tenant}/consent", post(consent))
        .route("/_admin/tenants/{tenant}/delta/expire", post(expire_delta))
        .route(
            "/_admin/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_admin/faults/{id}", delete(remove_fault))
        .route("/_admin/clock", post(clock))
        .route("/_admin/settings", get(get_settings).post(update_settings))
        .route("/_admin/tokens/revoke", post(revoke_tokens))
}

fn error_response(error: &AdminError) -> Response {
    let status = match error {
        AdminError::UnknownTenant(_) | AdminError::UnknownUser(_) => StatusCode::NOT_FOUND,
        AdminError::WrongState(_) => StatusCode::CONFLICT,
        AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({"error": error.to_string()}))
}

fn parse_body<T: DeserializeOwned + Default>(body: &str) -> Result<T, Response> {
    if body.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(body).map_err(|error| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("invalid JSON body: {error}")}),
        )
    })
}

fn respond<T>(result: Result<T, AdminError>, render: impl FnOnce(T) -> Value) -> Response {
    match result {
        Ok(value) => json_response(StatusCode::OK, &render(value)),
        Err(error) => error_response(&error),
    }
}

/// The admin view of a user: every field, snake_case, plus `deleted`.
pub(crate) fn user_view(user: &SimUser) -> Value {
    json!({
        "id": user.id,
        "display_name": user.display_name,
        "given_name": user.given_name,
        "surname": user.surname,
        "mail": user.mail,
        "user_principal_name": user.user_principal_name,
        "other_mails": user.other_mails,
        "proxy_addresses": user.proxy_addresses,
        "account_enabled": user.account_enabled,
        "user_type": user.user_type,
        "creation_type": user.creation_type,
        "job_title": user.job_title,
        "mobile_phone": user.mobile_phone,
        "business_phones": user.business_phones,
        "assigned_licenses": user.assigned_licenses,
        "deleted": user.deleted,
    })
}

pub(crate) fn summary(shared: &Shared) -> Value {
    let state = shared.lock();
    let tenants: Vec<Value> = state
        .tenants
        .iter()
        .map(|tenant| {
            let live = tenant.records.iter().filter(|record| !record.hard_deleted);
            let (mut listed, mut disabled, mut soft_deleted, mut guests) = (0, 0, 0, 0);
            for record in live {
                if record.user.deleted {
                    soft_deleted += 1;
                    continue;
                }
                listed += 1;
                if !record.user.account_enabled {
                    disabled += 1;
                }
                if record.user.user_type == "Guest" {
                    guests += 1;
                }
            }
            json!({
                "tenant_id": tenant.tenant_id,
                "display_name": tenant.display_name,
                "default_domain": tenant.domains.iter().find(|d| d.is_default).map(|d| d.id.clone()),
                "initial_domain": tenant.domains.iter().find(|d| d.is_initial).map(|d| d.id.clone()),
                "users": listed,
                "disabled": disabled,
                "guests": guests,
                "soft_deleted": soft_deleted,
                "version": tenant.version,
                "delta_epoch": tenant.delta_epoch,
                "consent_fault": tenant.consent_fault,
            })
        })
        .collect();
    json!({
        "partner_tenant_id": shared.config.partner_tenant_id,
        "base_url": shared.base_url,
        "clock_offset_secs": state.clock_offset.num_seconds(),
        "settings": state.settings,
        "tenants": tenants,
        "relationships": state.relationships.len(),
        "faults": state.faults.iter().map(|fault| json!({"id": fault.id, "fault": fault.spec})).collect::<Vec<_>>(),
        "access_tokens": state.access_tokens.len(),
        "refresh_tokens": state.refresh_tokens.len(),
        "requests_logged": shared.lock_log().len(),
    })
}

async fn state_summary(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &summary(&shared))
}

pub(crate) fn reset_shared(shared: &Shared) {
    *shared.lock() = SimState::new(&shared.config);
    shared.lock_log().clear();
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    reset_shared(&shared);
    json_response(StatusCode::OK, &json!({"reset": true}))
}

async fn list_users(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    let state = shared.lock();
    match state.tenant_position(&tenant) {
        Some(position) => json_response(
            StatusCode::OK,
            &Value::Array(
                state.tenants[position]
                    .to_customer_tenant()
                    .users
                    .iter()
                    .map(user_view)
                    .collect(),
            ),
        ),
        None => error_response(&AdminError::UnknownTenant(tenant)),
    }
}

async fn add_user(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    let new_user: NewUser = match parse_body(&body) {
        Ok(new_user) => new_user,
        Err(response) => return response,
    };
    respond(shared.lock().add_user(&tenant, new_user), |user| {
        user_view(&user)
    })
}

async fn update_user(
    State(shared): State<Arc<Shared>>,
    Path((tenant, user)): Path<(String, String)>,
    body: String,
) -> Response {
    let patch: UserPatch = match parse_body(&body) {
        Ok(patch) => patch,
        Err(response) => return response,
    };
    respond(shared.lock().update_user(&tenant, &user, patch), |user| {
        user_view(&user)
    })
}

async fn user_action(
    State(shared): State<Arc<Shared>>,
    Path((tenant, user, action)): Path<(String, String, String)>,
) -> Response {
    let mut state = shared.lock();
    let result = match action.as_str() {
        "disable" => state.set_enabled(&tenant, &user, false).map(|_| ()),
        "enable" => state.set_enabled(&tenant, &user, true).map(|_| ()),
        "soft-delete" => state.soft_delete(&tenant, &user),
        "hard-delete" => state.hard_delete(&tenant, &user),
        "restore" => state.restore(&tenant, &user).map(|_| ()),
        other => Err(AdminError::Invalid(format!(
            "unknown action {other}; use disable, enable, soft-delete, hard-delete or restore"
        ))),
    };
    drop(state);
    respond(result, |()| json!({"ok": true, "action": action}))
}

#[derive(Debug, Default, Deserialize)]
struct ConsentBody {
    #[serde(default)]
    fault: Option<ConsentFault>,
}

async fn consent(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    let body: ConsentBody = match parse_body(&body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    respond(
        shared.lock().set_consent_fault(&tenant, body.fault),
        |()| json!({"ok": true, "fault": body.fault}),
    )
}

async fn expire_delta(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    respond(
        shared.lock().expire_delta_tokens(&tenant),
        |()| json!({"ok": true}),
    )
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    let faults: Vec<Value> = state
        .faults
        .iter()
        .map(|fault| json!({"id": fault.id, "fault": fault.spec}))
        .collect();
    json_response(StatusCode::OK, &Value::Array(faults))
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let spec: FaultSpec = match serde_json::from_str(&body) {
        Ok(spec) => spec,
        Err(error) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("invalid fault: {error}")}),
            )
        }
    };
    respond(shared.lock().add_fault(spec), |id| json!({"id": id}))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().faults.clear();
    json_response(StatusCode::OK, &json!({"ok": true}))
}

async fn remove_fault(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    let mut state = shared.lock();
    let before = state.faults.len();
    state.faults.retain(|fault| fault.id != id);
    let removed = before != state.faults.len();
    drop(state);
    json_response(
        if removed {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        &json!({"removed": removed}),
    )
}

#[derive(Debug, Default, Deserialize)]
struct ClockBody {
    /// Moves the simulator clock forward (or back, if negative) by this many seconds.
    #[serde(default)]
    advance_secs: Option<i64>,
    /// Sets the offset from wall time outright.
    #[serde(default)]
    offset_secs: Option<i64>,
}

async fn clock(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let body: ClockBody = match parse_body(&body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut state = shared.lock();
    if let Some(offset) = body.offset_secs {
        state.clock_offset = crate::state::clamp_seconds(offset);
    }
    if let Some(advance) = body.advance_secs {
        state.advance_clock(advance);
    }
    let offset = state.clock_offset.num_seconds();
    drop(state);
    json_response(StatusCode::OK, &json!({"clock_offset_secs": offset}))
}

async fn get_settings(State(shared): State<Arc<Shared>>) -> Response {
    let settings = shared.lock().settings.clone();
    json_response(StatusCode::OK, &json!(settings))
}

/// Merges a partial settings object into the current settings.
pub(crate) fn merge_settings(current: &Settings, patch: &Value) -> Result<Settings, String> {
    let mut merged = serde_json::to_value(current).map_err(|error| error.to_string())?;
    let (Some(target), Some(source)) = (merged.as_object_mut(), patch.as_object()) else {
        return Err("settings must be a JSON object".to_string());
    };
    for (key, value) in source {
        if !target.contains_key(key) {
            return Err(format!("unknown setting {key}"));
        }
        target.insert(key.clone(), value.clone());
    }
    serde_json::from_value(merged).map_err(|error| error.to_string())
}

async fn update_settings(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let patch: Value = match serde_json::from_str(&body) {
        Ok(patch) => patch,
        Err(error) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": error.to_string()}),
            )
        }
    };
    let mut state = shared.lock();
    match merge_settings(&state.settings, &patch) {
        Ok(settings) => {
            state.settings = settings.clone();
            json_response(StatusCode::OK, &json!(settings))
        }
        Err(error) => json_response(StatusCode::BAD_REQUEST, &json!({"error": error})),
    }
}

async fn revoke_tokens(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().revoke_access_tokens();
    json_response(StatusCode::OK, &json!({"ok": true}))
}
