//! The one error record every recorded failure uses (SPEC §5.7): tenant results, discovery
//! runs, the connection's `last_error` and the API's error bodies that carry a provider
//! failure. Each record has a class, a stable code, a message and a remediation sentence that
//! tells an MSP admin what to do; none of them is ever empty (a CHECK constraint on every
//! column that holds a record refuses one without class or remediation).

use std::fmt;

use entra_sync_directory::error::DirectoryError;
use entra_sync_secrets::SecretsError;
use entra_sync_store::error::StoreError;
use serde::{Deserialize, Serialize};

/// What kind of failure it was, which decides what happens next (SPEC §2.3, MICROSOFT.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The connection's grant (or CIPP's token) is no longer accepted: the connection becomes
    /// `needs_reconnect` and every sync stops until a person reconnects.
    ReauthRequired,
    /// One managed tenant lacks consent or a GDAP role: that tenant fails, the others go on.
    TenantAccess,
    /// The service's or the app registration's configuration is wrong (a setting, a secret,
    /// a CIPP role): nothing changes until someone fixes it, so it is not retried.
    Config,
    /// Throttling, an outage or a timeout: retried with backoff, honouring `Retry-After`.
    Transient,
    /// The provider sent data this service cannot use (bad JSON, an unknown shape): retrying
    /// the same request gives the same answer, so it is not retried.
    Invalid,
}

impl ErrorClass {
    /// Every class, for exhaustive tests and documentation.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::ReauthRequired,
        ErrorClass::TenantAccess,
        ErrorClass::Config,
        ErrorClass::Transient,
        ErrorClass::Invalid,
    ];

    /// The wire name (also the Temporal failure's type name).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::ReauthRequired => "reauth_required",
            ErrorClass::TenantAccess => "tenant_access",
            ErrorClass::Config => "config",
            ErrorClass::Transient => "transient",
            ErrorClass::Invalid => "invalid",
        }
    }

    pub fn parse(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL
            .into_iter()
            .find(|class| class.as_str() == name)
    }

    /// Only transient failures are worth another identical attempt.
    pub fn is_retryable(self) -> bool {
        self == ErrorClass::Transient
    }

    /// What to do about a failure of this class when nothing more specific is known.
    pub fn default_remediation(self) -> &'static str {
        match self {
            ErrorClass::ReauthRequired => {
                "reconnect: an administrator signs in to Microsoft again (Connect Microsoft) or saves new CIPP credentials; syncs stay stopped until then"
            }
            ErrorClass::TenantAccess => {
                "an administrator of this customer tenant grants the app admin consent, or the GDAP relationship gets a role that can read the directory (Directory Readers); the other tenants are not affected"
            }
            ErrorClass::Config => {
                "fix the configuration named in the message, then run again"
            }
            ErrorClass::Transient => {
                "nothing to do now: it is retried automatically; if it keeps failing, check that Microsoft or CIPP is reachable and run again later"
            }
            ErrorClass::Invalid => {
                "the provider sent data this service cannot use; run again, and report the code to support if it repeats"
            }
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// `{class, code, message, remediation}`: one recorded failure. Never carries a secret: the
/// message comes from a classified error, which never holds a token or a credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub class: ErrorClass,
    /// A stable code: the provider's (`AADSTS70008`, `Authorization_RequestDenied`,
    /// `http_429`) or ours (`cipp_permission_check`, `retries_exhausted`, …).
    pub code: String,
    pub message: String,
    /// What an MSP admin does about it; never empty.
    pub remediation: String,
}

impl ErrorRecord {
    /// A record with the class's default remediation.
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorRecord {
            class,
            code: code.into(),
            message: message.into(),
            remediation: class.default_remediation().to_owned(),
        }
    }

    pub fn with_remediation(mut self, remediation: impl Into<String>) -> Self {
        let remediation = remediation.into();
        if !remediation.trim().is_empty() {
            self.remediation = remediation;
        }
        self
    }

    /// The record of a tenant that ran out of time: the run's (or the tenant's) maximum
    /// duration was reached while it was syncing, retrying or still waiting to start. Keeps
    /// the last attempt's failure in the message, since that is usually why time ran out.
    pub fn time_limit(seconds: u64, last: Option<&ErrorRecord>, message: &str) -> Self {
        let cause = match last {
            Some(last) => format!(
                "; the last attempt failed with {}: {}",
                last.code, last.message
            ),
            None if message.is_empty() => String::new(),
            None => format!("; {message}"),
        };
        ErrorRecord::new(
            ErrorClass::Transient,
            "run_time_limit",
            format!("the run reached its maximum duration of {seconds} s before this tenant finished{cause}"),
        )
        .with_remediation(
            "The next run continues with this tenant. If it keeps running out of time, check the provider's throttling or outage for this tenant, or raise ENTRA_SYNC__WORKER__MAX_RUN_SECONDS.",
        )
    }

    /// The record of a classified provider failure.
    pub fn from_directory(error: &DirectoryError) -> Self {
        match error {
            DirectoryError::ReauthRequired { code, message } => {
                ErrorRecord::new(ErrorClass::ReauthRequired, code.as_str(), message.as_str())
            }
            DirectoryError::TenantAccess {
                code,
                message,
                remediation,
            } => ErrorRecord::new(ErrorClass::TenantAccess, code.as_str(), message.as_str())
                .with_remediation(remediation.as_str()),
            DirectoryError::Config {
                code,
                message,
                setting,
            } => ErrorRecord::new(ErrorClass::Config, code.as_str(), message.as_str())
                .with_remediation(config_remediation(code, setting)),
            DirectoryError::Transient {
                code,
                message,
                retry_after,
            } => {
                let record =
                    ErrorRecord::new(ErrorClass::Transient, code.as_str(), message.as_str());
                match retry_after {
                    Some(wait) => record.with_remediation(format!(
                        "nothing to do now: the provider asked to wait {} s and it is retried automatically; if it keeps failing, run again later",
                        wait.as_secs()
                    )),
                    None => record,
                }
            }
            DirectoryError::DeltaExpired { code } => ErrorRecord::new(
                ErrorClass::Transient,
                code.as_str(),
                "the stored delta link is no longer accepted",
            )
            .with_remediation(
                "nothing to do: the next attempt reads every user (a full enumeration)",
            ),
            DirectoryError::Invalid { message } => {
                ErrorRecord::new(ErrorClass::Invalid, "invalid_response", message.as_str())
            }
        }
    }

    /// The record of a secret-provider failure (where the app registration comes from).
    pub fn from_secrets(error: &SecretsError) -> Self {
        ErrorRecord::from_directory(&secrets_failure(error))
    }

    /// The record of a store failure met while handling a connection.
    pub fn from_store(error: &StoreError) -> Self {
        ErrorRecord::from_directory(&store_failure(error))
    }

    /// The JSON stored in `run_tenant_results.error`, `runs.error` and
    /// `connections.last_error`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "class": self.class.as_str(),
            "code": self.code,
            "message": self.message,
            "remediation": self.remediation,
        })
    }

    /// A stored record read back; `None` when the value is not a complete record.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let text = |field: &str| value.get(field).and_then(serde_json::Value::as_str);
        let class = ErrorClass::parse(text("class")?)?;
        let remediation = text("remediation").filter(|text| !text.trim().is_empty())?;
        Some(ErrorRecord {
            class,
            code: text("code").unwrap_or("unknown").to_owned(),
            message: text("message").unwrap_or_default().to_owned(),
            remediation: remediation.to_owned(),
        })
    }
}

impl fmt::Display for ErrorRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} ({}): {}. Remediation: {}",
            self.class, self.code, self.message, self.remediation
        )
    }
}

fn config_remediation(code: &str, setting: &str) -> String {
    if code == crate::CIPP_PERMISSION_CHECK {
        return crate::CIPP_PERMISSION_REMEDIATION.to_owned();
    }
    format!("fix the setting {setting}, then run again")
}

/// A secret-provider failure in the directory crate's classes: an unreachable provider is
/// transient (Temporal retries), anything else is configuration.
pub fn secrets_failure(error: &SecretsError) -> DirectoryError {
    match error {
        SecretsError::Unavailable { provider, message } => DirectoryError::Transient {
            code: format!("secrets_{provider}"),
            message: message.clone(),
            retry_after: None,
        },
        SecretsError::Config {
            provider,
            message,
            setting,
        } => DirectoryError::Config {
            code: format!("secrets_{provider}"),
            message: message.clone(),
            setting: setting.clone(),
        },
    }
}

/// A store failure seen while handling a connection, in the directory crate's terms.
pub fn store_failure(error: &StoreError) -> DirectoryError {
    match error {
        StoreError::NotFound | StoreError::Conflict(_) => DirectoryError::ReauthRequired {
            code: "connection_changed".to_owned(),
            message: "the connection was removed or replaced; reconnect".to_owned(),
        },
        StoreError::Encryption(reason) => DirectoryError::Config {
            code: "encryption_key".to_owned(),
            message: format!("the stored credentials cannot be read: {reason}"),
            setting: "ENTRA_SYNC_ENCRYPTION_KEY".to_owned(),
        },
        other => DirectoryError::Transient {
            code: "store".to_owned(),
            message: format!("the database is unavailable: {other}"),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One of every directory error variant, so adding a variant without a record fails here.
    fn every_directory_error() -> Vec<DirectoryError> {
        let all = vec![
            DirectoryError::ReauthRequired {
                code: "AADSTS70008".into(),
                message: "expired".into(),
            },
            DirectoryError::TenantAccess {
                code: "AADSTS65001".into(),
                message: "no consent".into(),
                remediation: "grant consent at https://login/adminconsent".into(),
            },
            DirectoryError::TenantAccess {
                code: "http_403".into(),
                message: "denied".into(),
                remediation: String::new(),
            },
            DirectoryError::Config {
                code: "AADSTS7000215".into(),
                message: "bad secret".into(),
                setting: "MICROSOFT_CLIENT_SECRET".into(),
            },
            DirectoryError::Config {
                code: crate::CIPP_PERMISSION_CHECK.into(),
                message: "Failed to retrieve tenants. Perform a permission check.".into(),
                setting: "CIPP API client role".into(),
            },
            DirectoryError::Transient {
                code: "http_429".into(),
                message: "throttled".into(),
                retry_after: Some(Duration::from_secs(7)),
            },
            DirectoryError::Transient {
                code: "timeout".into(),
                message: String::new(),
                retry_after: None,
            },
            DirectoryError::DeltaExpired {
                code: "syncStateNotFound".into(),
            },
            DirectoryError::Invalid {
                message: "not JSON".into(),
            },
        ];
        // Exhaustiveness: a new variant must be added above.
        for error in &all {
            match error {
                DirectoryError::ReauthRequired { .. }
                | DirectoryError::TenantAccess { .. }
                | DirectoryError::Config { .. }
                | DirectoryError::Transient { .. }
                | DirectoryError::DeltaExpired { .. }
                | DirectoryError::Invalid { .. } => {}
            }
        }
        all
    }

    fn assert_complete(record: &ErrorRecord) {
        assert!(!record.code.trim().is_empty(), "{record:?}");
        assert!(!record.remediation.trim().is_empty(), "{record:?}");
        assert!(ErrorClass::ALL.contains(&record.class), "{record:?}");
        let json = record.to_json();
        assert_eq!(ErrorRecord::from_json(&json).as_ref(), Some(record));
    }

    #[test]
    fn every_directory_failure_has_a_class_and_a_remediation() {
        for error in every_directory_error() {
            let record = ErrorRecord::from_directory(&error);
            assert_complete(&record);
            if error.class() != "delta_expired" {
                assert_eq!(record.class.as_str(), error.class(), "{error:?}");
            }
            assert_eq!(
                record.class.is_retryable(),
                error.is_retryable() || error.class() == "delta_expired"
            );
        }
    }

    #[test]
    fn a_time_limit_keeps_the_last_attempts_failure() {
        let last = ErrorRecord::new(ErrorClass::Transient, "http_429", "throttled");
        let record = ErrorRecord::time_limit(60, Some(&last), "activity timed out");
        assert_complete(&record);
        assert_eq!(record.code, "run_time_limit");
        assert!(record.message.contains("60 s"), "{record:?}");
        assert!(record.message.contains("http_429: throttled"), "{record:?}");
        let bare = ErrorRecord::time_limit(60, None, "never started");
        assert!(bare.message.ends_with("; never started"), "{bare:?}");
        assert!(bare
            .remediation
            .contains("ENTRA_SYNC__WORKER__MAX_RUN_SECONDS"));
    }

    #[test]
    fn every_class_has_a_default_remediation_and_round_trips() {
        for class in ErrorClass::ALL {
            assert!(!class.default_remediation().is_empty());
            assert_eq!(ErrorClass::parse(class.as_str()), Some(class));
            assert_complete(&ErrorRecord::new(class, "code", "message"));
        }
        assert_eq!(ErrorClass::parse("failed"), None);
    }

    #[test]
    fn secrets_and_store_failures_are_classified() {
        let unavailable = SecretsError::Unavailable {
            provider: "vault",
            message: "down".into(),
        };
        let config = SecretsError::Config {
            provider: "vault",
            message: "denied".into(),
            setting: "ENTRA_SYNC_VAULT_TOKEN".into(),
        };
        assert_eq!(
            ErrorRecord::from_secrets(&unavailable).class,
            ErrorClass::Transient
        );
        let record = ErrorRecord::from_secrets(&config);
        assert_eq!(record.class, ErrorClass::Config);
        assert!(record.remediation.contains("ENTRA_SYNC_VAULT_TOKEN"));
        for error in [
            StoreError::NotFound,
            StoreError::Conflict("x".into()),
            StoreError::Encryption("bad key"),
        ] {
            assert_complete(&ErrorRecord::from_store(&error));
        }
    }

    #[test]
    fn an_incomplete_stored_record_is_not_a_record() {
        let json = serde_json::json!({"class": "failed", "code": null, "message": "x", "remediation": null});
        assert_eq!(ErrorRecord::from_json(&json), None);
        let json = serde_json::json!({"class": "transient", "code": "x", "message": "x", "remediation": " "});
        assert_eq!(ErrorRecord::from_json(&json), None);
    }
}
