//! Platform administration with the master key: PSA tenants, their users, feature flags.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use entra_sync_store::flags::ENTRA_PHASE1_FLAGS;
use entra_sync_store::psa::PsaUserType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{audit, check_text};
use crate::auth::PlatformAdmin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

/// The permissions a PSA user can be granted.
pub const KNOWN_PERMISSIONS: [&str; 7] = [
    "system_settings.read",
    "system_settings.update",
    "client.read",
    "client.create",
    "contact.read",
    "contact.create",
    "contact.update",
];

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant))
        .routes(routes!(create_user))
        .routes(routes!(ensure_flags))
        .routes(routes!(target_flag))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenantBody {
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantView {
    tenant_id: Uuid,
    name: String,
}

/// Creates a PSA tenant.
#[utoipa::path(post, path = "/api/v1/platform/tenants", tag = "platform",
    request_body = CreateTenantBody,
    responses((status = 201, body = TenantView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_tenant(
    _admin: PlatformAdmin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTenantBody>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    // Checked as sent (the document's limits count what is sent), then stored trimmed.
    check_text("name", &body.name, 200)?;
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "name must not be empty",
        ));
    }
    let tenant = state.store.create_psa_tenant(name).await?;
    audit(
        &state,
        tenant.tenant_id,
        PlatformAdmin::ACTOR,
        "platform.tenant.create",
        Some(format!("tenant:{}", tenant.tenant_id)),
        serde_json::json!({"name": tenant.name}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            tenant_id: tenant.tenant_id,
            name: tenant.name,
        }),
    ))
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UserType {
    Internal,
    Client,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUserBody {
    email: String,
    user_type: UserType,
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedUserView {
    user_id: Uuid,
    tenant_id: Uuid,
    email: String,
    user_type: UserType,
    permissions: Vec<String>,
    /// Shown once; only its hash is stored.
    api_key: String,
}

/// Creates a PSA user and returns its API key (once).
#[utoipa::path(post, path = "/api/v1/platform/tenants/{tenant_id}/users", tag = "platform",
    params(("tenant_id" = Uuid, Path, description = "PSA tenant")),
    request_body = CreateUserBody,
    responses((status = 201, body = CreatedUserView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    _admin: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> Result<(StatusCode, Json<CreatedUserView>), ApiError> {
    check_text("email", &body.email, 254)?;
    let email = body.email.trim();
    if entra_sync_domain::email::normalize_email(email).is_none() {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "email is not a valid address",
        ));
    }
    let mut permissions: Vec<String> = Vec::with_capacity(body.permissions.len());
    for permission in &body.permissions {
        if !KNOWN_PERMISSIONS.contains(&permission.as_str()) {
            return Err(ApiError::unprocessable(
                "unknown_permission",
                format!(
                    "unknown permission; known permissions are {}",
                    KNOWN_PERMISSIONS.join(", ")
                ),
            ));
        }
        if !permissions.contains(permission) {
            permissions.push(permission.clone());
        }
    }
    state.store.get_psa_tenant(tenant_id).await?;
    let user_type = match body.user_type {
        UserType::Internal => PsaUserType::Internal,
        UserType::Client => PsaUserType::Client,
    };
    let (user, key) = state
        .store
        .create_psa_user(tenant_id, email, user_type, &permissions)
        .await?;
    audit(
        &state,
        tenant_id,
        PlatformAdmin::ACTOR,
        "platform.user.create",
        Some(format!("user:{}", user.user_id)),
        serde_json::json!({"email": user.email, "user_type": user_type.as_str(), "permissions": user.permissions}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUserView {
            user_id: user.user_id,
            tenant_id: user.tenant_id,
            email: user.email,
            user_type: body.user_type,
            permissions: user.permissions,
            api_key: key.0,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EnsureFlagsAction {
    EnsureEntraPhase1Flags,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnsureFlagsBody {
    #[serde(rename = "__action")]
    action: EnsureFlagsAction,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FlagsView {
    flags: Vec<String>,
}

/// Creates the five Entra phase-1 feature flags (idempotent).
#[utoipa::path(post, path = "/api/v1/platform-feature-flags", tag = "platform",
    request_body = EnsureFlagsBody,
    responses((status = 200, body = FlagsView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn ensure_flags(
    _admin: PlatformAdmin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnsureFlagsBody>,
) -> Result<Json<FlagsView>, ApiError> {
    let EnsureFlagsAction::EnsureEntraPhase1Flags = body.action;
    let flags = state.store.ensure_flags(&ENTRA_PHASE1_FLAGS).await?;
    audit(
        &state,
        Uuid::nil(),
        PlatformAdmin::ACTOR,
        "platform.flags.ensure",
        None,
        serde_json::json!({"flags": ENTRA_PHASE1_FLAGS}),
    )
    .await?;
    Ok(Json(FlagsView { flags }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TargetAction {
    Add,
    Remove,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetFlagBody {
    #[serde(rename = "__action")]
    action: TargetAction,
    #[serde(rename = "tenantId")]
    tenant_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FlagTargetView {
    flag: String,
    tenant_id: Uuid,
    enabled: bool,
}

/// Turns a flag on (`add`) or off (`remove`) for a PSA tenant.
#[utoipa::path(post, path = "/api/v1/platform-feature-flags/{flag}/tenants", tag = "platform",
    params(("flag" = String, Path, description = "flag name")),
    request_body = TargetFlagBody,
    responses((status = 200, body = FlagTargetView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn target_flag(
    _admin: PlatformAdmin,
    State(state): State<AppState>,
    ApiPath(flag): ApiPath<String>,
    ApiJson(body): ApiJson<TargetFlagBody>,
) -> Result<Json<FlagTargetView>, ApiError> {
    check_text("flag", &flag, 100)?;
    state.store.get_psa_tenant(body.tenant_id).await?;
    let enabled = matches!(body.action, TargetAction::Add);
    state
        .store
        .set_flag_tenant(&flag, body.tenant_id, enabled)
        .await
        .map_err(|error| match ApiError::from(error) {
            not_found if not_found.status == StatusCode::NOT_FOUND => {
                ApiError::not_found("the flag does not exist; ensure it first")
            }
            other => other,
        })?;
    audit(
        &state,
        body.tenant_id,
        PlatformAdmin::ACTOR,
        if enabled {
            "platform.flag.add"
        } else {
            "platform.flag.remove"
        },
        Some(format!("flag:{flag}")),
        serde_json::json!({"flag": flag, "enabled": enabled}),
    )
    .await?;
    Ok(Json(FlagTargetView {
        flag,
        tenant_id: body.tenant_id,
        enabled,
    }))
}
