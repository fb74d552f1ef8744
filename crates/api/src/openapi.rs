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
pub(crate) fn cached_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(crate::openapi_document)
}
