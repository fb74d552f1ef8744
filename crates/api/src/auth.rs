//! Access control: who is calling (the `x-api-key` header), what they may do (permissions,
//! user type), and whether the Entra integration is switched on for their PSA tenant.
//!
//! Handlers state their requirement in their signature (`Authorized<EntraUpdate>`,
//! `PlatformAdmin`), so authorization runs before the body is read: a caller without the right
//! gets 401/403/404, never a validation error about a body it may not send.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use entra_sync_store::flags::UI_FLAG;
use entra_sync_store::psa::{PsaUser, PsaUserType};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

pub const API_KEY_HEADER: &str = "x-api-key";

/// A permission a handler requires. `ENTRA` marks the Entra integration's endpoints: refused
/// to client-portal users, and hidden (404) while `entra-integration-ui` is off.
pub trait Permission: Send + Sync + 'static {
    const NAME: &'static str;
    const ENTRA: bool;
}

macro_rules! permission {
    ($type:ident, $name:literal, $entra:literal) => {
        #[doc = concat!("The `", $name, "` permission.")]
        pub struct $type;
        impl Permission for $type {
            const NAME: &'static str = $name;
            const ENTRA: bool = $entra;
        }
    };
}

permission!(EntraRead, "system_settings.read", true);
permission!(EntraUpdate, "system_settings.update", true);
permission!(AuditRead, "system_settings.read", false);
permission!(ClientRead, "client.read", false);
permission!(ClientCreate, "client.create", false);
permission!(ContactRead, "contact.read", false);
permission!(ContactCreate, "contact.create", false);
permission!(ContactUpdate, "contact.update", false);

/// A PSA user holding permission `P`.
pub struct Authorized<P> {
    pub user: PsaUser,
    _permission: PhantomData<P>,
}

impl<P> Authorized<P> {
    /// The audit actor string: `user:<id>`.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.user_id)
    }
}

/// The platform master key.
pub struct PlatformAdmin;

impl PlatformAdmin {
    pub const ACTOR: &'static str = "platform";
}

enum Caller {
    Master,
    User(PsaUser),
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

async fn identify(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let key = parts
        .headers
        .get(API_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    // Comparing digests keeps the comparison's timing independent of the master key's bytes.
    let master = state.config.master_key.expose_secret();
    if !master.is_empty() && digest(key) == digest(master) {
        return Ok(Caller::Master);
    }
    if key.len() > 256 {
        return Err(ApiError::unauthorized());
    }
    match state.store.authenticate_api_key(key).await? {
        Some(user) => Ok(Caller::User(user)),
        None => Err(ApiError::unauthorized()),
    }
}

impl<P: Permission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = match identify(parts, state).await? {
            Caller::Master => {
                return Err(ApiError::forbidden(
                    "the platform master key manages tenants, users and flags only",
                ))
            }
            Caller::User(user) => user,
        };
        authorize::<P>(state, user).await
    }
}

/// The same checks as the `x-api-key` extractor, for a user identified another way (the
/// console's session): the Entra flag, the user type, then the permission.
pub async fn authorize<P: Permission>(
    state: &AppState,
    user: PsaUser,
) -> Result<Authorized<P>, ApiError> {
    if P::ENTRA {
        if !state.store.flag_enabled(UI_FLAG, user.tenant_id).await? {
            return Err(ApiError::not_found("no such endpoint"));
        }
        if user.user_type == PsaUserType::Client {
            return Err(ApiError::forbidden(
                "client-portal users cannot use the Entra integration",
            ));
        }
    }
    if !user.has_permission(P::NAME) {
        return Err(ApiError::forbidden(format!(
            "the permission {} is required",
            P::NAME
        )));
    }
    // The request span's PSA tenant (its id only: never the user's name or address).
    tracing::Span::current().record("tenant_id", tracing::field::display(user.tenant_id));
    Ok(Authorized {
        user,
        _permission: PhantomData,
    })
}

impl FromRequestParts<AppState> for PlatformAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identify(parts, state).await? {
            Caller::Master => Ok(PlatformAdmin),
            Caller::User(_) => Err(ApiError::forbidden("the platform master key is required")),
        }
    }
}
