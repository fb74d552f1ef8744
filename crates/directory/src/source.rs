//! The one trait the activities use to read a directory, whichever way the connection goes
//! (Graph directly, or CIPP), and the plain types it returns.

use async_trait::async_trait;
use entra_sync_domain::model::DirectoryEntry;

use crate::error::DirectoryError;

/// A customer tenant found by discovery (SPEC §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredTenant {
    /// The Entra tenant id (GUID).
    pub entra_tenant_id: String,
    pub display_name: String,
    pub domains: Vec<TenantDomain>,
    /// Why the domains could not be read (`None` when `domains` is what the provider said).
    /// Discovery then keeps the domains it stored before instead of erasing them.
    pub domains_error: Option<String>,
}

/// One domain of a discovered tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantDomain {
    /// Lowercase domain name, e.g. `contoso.com`.
    pub name: String,
    pub is_default: bool,
    pub is_initial: bool,
}

/// One page of users.
///
/// `next_cursor` is set while the enumeration goes on: pass it back as
/// [`UsersCursor::Next`]. On the last page it is `None`; for a delta round the last page also
/// carries `delta_link`, which the caller stores for the next run (MICROSOFT.md §3). A page
/// may be empty and still have a `next_cursor`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsersPage {
    pub entries: Vec<DirectoryEntry>,
    pub next_cursor: Option<String>,
    pub delta_link: Option<String>,
}

impl UsersPage {
    /// True when this is the last page of the enumeration.
    pub fn is_last(&self) -> bool {
        self.next_cursor.is_none()
    }
}

/// Where a users enumeration starts or continues. Cursors are opaque: store them as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsersCursor {
    /// Begin an enumeration. With `prefer_delta` the Graph source reads `users/delta`, from
    /// `delta_link` when one is stored (only changes) or from scratch (every user, then a new
    /// delta link). CIPP has no delta (MICROSOFT.md §5a) and always enumerates fully.
    Start {
        prefer_delta: bool,
        delta_link: Option<String>,
    },
    /// Continue with the `next_cursor` of the previous page (for example after a retry).
    Next(String),
}

/// A directory as the activities see it.
///
/// Errors are classified ([`DirectoryError::class`]). Two need handling by the caller beyond
/// "retry or fail": [`DirectoryError::DeltaExpired`] (restart with
/// `UsersCursor::Start { prefer_delta: true, delta_link: None }`, treating the round as a full
/// enumeration) and [`DirectoryError::TenantAccess`] (fail this tenant with the remediation,
/// continue with the others).
#[async_trait]
pub trait DirectorySource: Send + Sync {
    /// Every managed tenant reachable through the connection. A listing that failed is an
    /// error, never an empty list (SPEC §3).
    async fn list_tenants(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError>;

    /// One page of the users of `tenant` (an Entra tenant id).
    async fn users_page(
        &self,
        tenant: &str,
        cursor: UsersCursor,
    ) -> Result<UsersPage, DirectoryError>;

    /// The object ids of every user that is a direct or nested member of the group `group_id`
    /// (a GUID) in `tenant`, for the group filters (SPEC §5.2). Sources that cannot read
    /// group membership refuse, which the caller classifies like any directory error.
    async fn group_member_ids(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let _ = (tenant, group_id);
        Err(DirectoryError::invalid(
            "this directory source cannot read group membership",
        ))
    }
}

/// A group's members are read page by page; past this many pages (999 ids each) the group is
/// refused rather than read without end.
pub const MAX_GROUP_MEMBER_PAGES: usize = 1_000;

/// Checks a group id before it goes into a URL path, so no caller can smuggle path segments
/// or query text into a provider call.
pub(crate) fn checked_group_id(group_id: &str) -> Result<String, DirectoryError> {
    let group_id = group_id.trim().to_ascii_lowercase();
    if entra_sync_domain::filter::is_group_id(&group_id) {
        Ok(group_id)
    } else {
        Err(DirectoryError::invalid("a filter group id is not a GUID"))
    }
}

/// The object ids of a page of `transitiveMembers/microsoft.graph.user` answered with
/// `$select=id`: `[{"@odata.type":"#microsoft.graph.user","id":"…"}]`.
pub(crate) fn member_ids(values: &[serde_json::Value]) -> Vec<String> {
    values
        .iter()
        .filter_map(|value| value.get("id").and_then(serde_json::Value::as_str))
        .map(str::to_ascii_lowercase)
        .collect()
}
