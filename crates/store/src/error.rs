//! The store's error type. Variants are named by what the caller decides: a missing row, a
//! conflict with existing state (HTTP 409), a request the data model refuses (422), or a
//! database failure (retry or 5xx).

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row named by the call does not exist (or belongs to another PSA tenant).
    #[error("not found")]
    NotFound,
    /// The change conflicts with existing state; the string is a stable snake_case code
    /// (a constraint name or a reason such as `contact_in_other_client`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is invalid for the data model; the string is a stable snake_case code or a
    /// short explanation.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Encryption at rest is not configured, or a stored secret could not be decrypted with
    /// the configured key.
    #[error("encryption: {0}")]
    Encryption(&'static str),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    /// Constraint violations become `Conflict` (unique) or `Invalid` (foreign key, check), named
    /// by the constraint, so callers and the API can branch on them in one place.
    fn from(error: sqlx::Error) -> StoreError {
        if let sqlx::Error::RowNotFound = error {
            return StoreError::NotFound;
        }
        if let sqlx::Error::Database(database_error) = &error {
            let constraint = database_error
                .constraint()
                .unwrap_or("constraint")
                .to_owned();
            match database_error.code().as_deref() {
                Some("23505") => return StoreError::Conflict(constraint),
                Some("23503") | Some("23514") | Some("23502") => {
                    return StoreError::Invalid(constraint)
                }
                // Raised by the `refuse_delete` trigger on contacts and managed tenants.
                Some("23001") => return StoreError::Conflict("never_deleted".to_owned()),
                Some("22P02") => return StoreError::Invalid("malformed_value".to_owned()),
                _ => {}
            }
        }
        StoreError::Database(error)
    }
}

impl StoreError {
    /// True for failures worth retrying as they are (connection loss, serialization failure,
    /// deadlock): activities use it to tell Temporal whether to retry.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(database_error)) => matches!(
                database_error.code().as_deref(),
                Some("40001") | Some("40P01") | Some("57P01") | Some("53300")
            ),
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            ) => true,
            _ => false,
        }
    }
}
