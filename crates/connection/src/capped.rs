//! A directory source whose `Retry-After` waits are capped: a provider asking for a day is
//! retried after the configured cap (default 10 minutes) instead, so no run sits `running` for
//! a day and blocks "Sync now" and the schedule. Every capped wait is counted in
//! `entra_sync_retry_after_capped_total`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::source::{DirectorySource, DiscoveredTenant, UsersCursor, UsersPage};

/// Wraps a source and caps the `retry_after` of its transient failures.
pub struct CappedSource {
    inner: Arc<dyn DirectorySource>,
    cap: Duration,
}

impl CappedSource {
    pub fn new(inner: Arc<dyn DirectorySource>, cap: Duration) -> Self {
        CappedSource { inner, cap }
    }
}

/// `error` with its `Retry-After` no longer than `cap`; counts the capping.
pub fn cap_retry_after(error: DirectoryError, cap: Duration) -> DirectoryError {
    match error {
        DirectoryError::Transient {
            code,
            message,
            retry_after: Some(wait),
        } if wait > cap => {
            metrics::counter!("entra_sync_retry_after_capped_total").increment(1);
            tracing::warn!(
                asked_seconds = wait.as_secs(),
                cap_seconds = cap.as_secs(),
                %code,
                "Retry-After above the cap; retrying after the cap instead"
            );
            DirectoryError::Transient {
                code,
                message,
                retry_after: Some(cap),
            }
        }
        other => other,
    }
}

#[async_trait]
impl DirectorySource for CappedSource {
    async fn list_tenants(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
        self.inner
            .list_tenants()
            .await
            .map_err(|error| cap_retry_after(error, self.cap))
    }

    async fn users_page(
        &self,
        tenant: &str,
        cursor: UsersCursor,
    ) -> Result<UsersPage, DirectoryError> {
        self.inner
            .users_page(tenant, cursor)
            .await
            .map_err(|error| cap_retry_after(error, self.cap))
    }

    async fn group_member_ids(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        self.inner
            .group_member_ids(tenant, group_id)
            .await
            .map_err(|error| cap_retry_after(error, self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled(seconds: u64) -> DirectoryError {
        DirectoryError::Transient {
            code: "http_429".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(seconds)),
        }
    }

    #[test]
    fn a_wait_above_the_cap_is_capped_and_others_are_kept() {
        let cap = Duration::from_secs(600);
        assert_eq!(cap_retry_after(throttled(86_400), cap), throttled(600));
        assert_eq!(cap_retry_after(throttled(30), cap), throttled(30));
        let config = DirectoryError::Config {
            code: "x".into(),
            message: "y".into(),
            setting: "z".into(),
        };
        assert_eq!(cap_retry_after(config.clone(), cap), config);
    }
}
