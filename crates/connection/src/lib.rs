//! The connection layer: the one place between the API/worker and the store, directory and
//! secrets crates that turns a PSA tenant's stored connection and app registration into a
//! `DirectorySource` (`DirectoryFactory`), refreshes and stores a direct connection's tokens
//! under its row lock (`StoredRefreshTokens`), caps `Retry-After` (`CappedSource`), walks a
//! managed tenant's users page by page (`PageLoop`), loads the group filters' membership
//! (`load_group_members`), and turns every failure into one record (`ErrorRecord`).
//!
//! The API and the activities use this crate rather than the directory and secrets crates'
//! internals, so a connection is read, validated and classified the same way everywhere.

pub mod capped;
pub mod direct;
pub mod error;
pub mod factory;
pub mod groups;
pub mod interactive;
pub mod pages;

pub use capped::{cap_retry_after, CappedSource};
pub use direct::StoredRefreshTokens;
pub use error::{ErrorClass, ErrorRecord};
pub use factory::{ConnectedSource, DirectoryFactory, DirectorySettings, DEFAULT_RETRY_AFTER_CAP};
pub use groups::{load_group_members, GroupMembers};
pub use pages::{FetchedPage, PageLoop};

/// The types callers handle without depending on the directory and secrets crates.
pub use entra_sync_directory::error::DirectoryError;
pub use entra_sync_directory::http::{HttpSettings, ThrottleStats};
pub use entra_sync_directory::oauth::{AppCredential, OAuthClient};
pub use entra_sync_directory::source::{DirectorySource, UsersPage};
pub use entra_sync_secrets::AppCredentialResolver;
pub use entra_sync_store::connection::ConnectionKind;

/// The code of CIPP's "Failed to retrieve tenants" error row (MICROSOFT.md §5a) when it carries
/// no Microsoft error code: CIPP's API client lacks the role or CIPP's own access to the
/// partner tenant needs a permission check. Classified `config`.
pub use entra_sync_directory::cipp::CIPP_PERMISSION_CHECK;

/// What to do about [`CIPP_PERMISSION_CHECK`].
pub const CIPP_PERMISSION_REMEDIATION: &str = "in CIPP, give this API client a role that may read tenants (CIPP.Core.Read, e.g. the readonly role, under Integrations > CIPP-API), then run CIPP's permission check (Settings > Permissions > Check permissions) so CIPP can list the partner's GDAP tenants; run discovery again afterwards";
