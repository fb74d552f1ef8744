//! Turning store and directory errors into Temporal activity errors: the error class becomes the
//! failure's type name, and only classes a retry can fix are retryable. Messages come from the
//! classified errors, which never carry secrets.

use entra_sync_connection::{DirectoryError, ErrorRecord};
use entra_sync_store::error::StoreError;
use temporalio_sdk::activities::ActivityError;
use temporalio_sdk::ApplicationFailure;

/// A message-only error so the failure carries our text and nothing else.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub String);

/// A classified provider failure. The connection layer already capped its `Retry-After`.
pub fn from_directory(error: &DirectoryError) -> ActivityError {
    let retry_after = match error {
        DirectoryError::Transient { retry_after, .. } => *retry_after,
        _ => None,
    };
    let record = ErrorRecord::from_directory(error);
    ActivityError::application(
        ApplicationFailure::builder(Message(error.to_string()))
            .type_name(record.class.as_str().to_owned())
            .non_retryable(!record.class.is_retryable())
            .maybe_next_retry_delay(retry_after)
            .build(),
    )
}

pub fn from_store(error: StoreError) -> ActivityError {
    let retryable = error.is_transient() || matches!(error, StoreError::Database(_));
    let class = if retryable { "transient" } else { "invalid" };
    ActivityError::application(
        ApplicationFailure::builder(Message(format!("store: {error}")))
            .type_name(class.to_owned())
            .non_retryable(!retryable)
            .build(),
    )
}

pub fn invalid(message: impl Into<String>) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(Message(message.into()))
            .type_name("invalid".to_owned())
            .non_retryable(true)
            .build(),
    )
}
