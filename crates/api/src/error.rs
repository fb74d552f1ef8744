//! The API's one error type. Every failure a handler can produce becomes
//! `{"error":{"code":"snake_case","message":"…"}}` with a fitting status; store errors are
//! mapped to statuses here and nowhere else, and internal details are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use entra_sync_store::error::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code callers can branch on.
    pub code: String,
    /// A sentence for people; never contains secrets or internal details.
    pub message: String,
    /// When the error carries a Microsoft or CIPP failure: its class (`reauth_required`,
    /// `tenant_access`, `config`, `transient`, `invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// When the error carries a Microsoft or CIPP failure: what to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

/// An error a handler returns; rendered as [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// The provider failure behind the error, as recorded (`{class, code, message,
    /// remediation}`), when there is one.
    /// Boxed: most errors have none, and the error type stays small.
    pub failure: Option<Box<entra_sync_connection::ErrorRecord>>,
}

impl ApiError {
    /// True when a person can act on the message in a form: their input was refused (4xx) or
    /// the provider refused or failed the check (502); anything else is the server's.
    pub fn is_for_the_form(&self) -> bool {
        self.status.is_client_error() || self.status == StatusCode::BAD_GATEWAY
    }

    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            failure: None,
        }
    }

    /// A provider failure met while a person waits: the provider's own fault (unreachable,
    /// throttling, an unusable answer) is a 502, credentials, consent and configuration are the
    /// caller's (422). The body carries the failure's class and remediation.
    pub fn provider(provider: &str, error: &entra_sync_connection::DirectoryError) -> Self {
        let record = entra_sync_connection::ErrorRecord::from_directory(error);
        let message = format!(
            "{provider} check failed ({}): {}",
            record.class, record.message
        );
        let mut api_error = if entra_sync_connection::interactive::is_provider_fault(error) {
            ApiError::bad_gateway("provider_unavailable", message)
        } else {
            ApiError::unprocessable("provider_validation_failed", message)
        };
        api_error.failure = Some(Box::new(record));
        api_error
    }

    /// The body's detail of this error.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.clone(),
            message: self.message.clone(),
            class: self
                .failure
                .as_ref()
                .map(|failure| failure.class.as_str().to_owned()),
            remediation: self
                .failure
                .as_ref()
                .map(|failure| failure.remediation.clone()),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid x-api-key header is required",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn bad_gateway(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// A bug or an infrastructure failure: the cause is logged, the caller learns nothing of it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error while handling a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Store codes for an id in a request body that names no row of the caller's tenant. They
/// answer 404, like an unknown id in a path: the request is well-formed, the thing it names is
/// not there.
pub(crate) const REFERENCES_TO_MISSING_ROWS: [&str; 3] = [
    "unknown_client",
    "unknown_managed_tenant",
    "unknown_contact",
];

/// Human text for the stable codes the store uses in `Conflict` and `Invalid`.
fn describe_store_code(code: &str) -> String {
    match code {
        "unknown_client" => "the client does not exist".to_owned(),
        "unknown_managed_tenant" => "a managed tenant in the request does not exist".to_owned(),
        "duplicate_managed_tenant" => "a managed tenant appears more than once".to_owned(),
        "full_name_required" => "full_name must not be empty".to_owned(),
        "invalid_email" => "the email address is not valid".to_owned(),
        "invalid_cursor" => "the cursor is not valid; start again without one".to_owned(),
        "invalid_base_url" => "base_url must be an http(s) URL".to_owned(),
        "malformed_value" => "a value in the request is malformed".to_owned(),
        "psa_users_email_unique" => "a user with this email already exists".to_owned(),
        "contact_in_other_client" => {
            "the contact belongs to another client; send allow_other_client: true to link it anyway"
                .to_owned()
        }
        "unknown_contact" => "the contact does not exist".to_owned(),
        "contact_already_linked" => {
            "the contact is already linked to another directory user".to_owned()
        }
        "user_already_linked" => "the directory user is already linked to a contact".to_owned(),
        "review_item_not_open" => "the review item was already resolved or dismissed".to_owned(),
        "run_start_contention" => {
            "another run of the same scope was starting at the same moment; try again".to_owned()
        }
        other => format!("the request was refused ({other})"),
    }
}

/// Database constraint names are not an API contract: map the ones callers can cause to
/// stable codes, everything else to a generic one.
fn public_code(code: &str, fallback: &str) -> String {
    let looks_stable = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match code {
        "psa_users_email_unique" => "email_taken".to_owned(),
        "clients_tenant_id_fkey" | "contacts_tenant_id_client_id_fkey" => {
            "unknown_client".to_owned()
        }
        _ if looks_stable && !code.ends_with("_fkey") && !code.ends_with("_check") => {
            code.to_owned()
        }
        _ => fallback.to_owned(),
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::not_found("the resource does not exist"),
            StoreError::Conflict(code) => {
                let public = public_code(&code, "conflict");
                let message = if public == "conflict" {
                    tracing::info!(store_code = %code, "store conflict");
                    "the request conflicts with existing data".to_owned()
                } else {
                    describe_store_code(&code)
                };
                ApiError::conflict(&public, message)
            }
            StoreError::Invalid(code) => {
                let public = public_code(&code, "invalid");
                let message = if public == "invalid" {
                    // Constraint names and free-text store reasons describe the schema, not
                    // the request: log them, answer generically.
                    tracing::info!(store_code = %code, "store refused a request");
                    "the request is not valid for the data it refers to".to_owned()
                } else {
                    describe_store_code(&code)
                };
                if REFERENCES_TO_MISSING_ROWS.contains(&public.as_str()) {
                    ApiError::new(StatusCode::NOT_FOUND, &public, message)
                } else {
                    ApiError::unprocessable(&public, message)
                }
            }
            other => ApiError::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let check = |error: StoreError, status: StatusCode, code: &str| {
            let api = ApiError::from(error);
            assert_eq!((api.status, api.code.as_str()), (status, code));
        };
        check(StoreError::NotFound, StatusCode::NOT_FOUND, "not_found");
        check(
            StoreError::Conflict("contact_in_other_client".to_owned()),
            StatusCode::CONFLICT,
            "contact_in_other_client",
        );
        check(
            StoreError::Conflict("psa_users_email_unique".to_owned()),
            StatusCode::CONFLICT,
            "email_taken",
        );
        check(
            StoreError::Invalid("runs_tenant_id_client_id_fkey".to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        );
        let leaky = ApiError::from(StoreError::Invalid(
            "stored settings: invalid type at line 1".to_owned(),
        ));
        assert_eq!(leaky.code, "invalid");
        assert!(
            !leaky.message.contains("stored settings"),
            "{}",
            leaky.message
        );
        let constraint = ApiError::from(StoreError::Invalid(
            "runs_tenant_id_client_id_fkey".to_owned(),
        ));
        assert!(
            !constraint.message.contains("runs_"),
            "{}",
            constraint.message
        );
        check(
            StoreError::Encryption("no encryption key configured"),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
        );
    }
}
