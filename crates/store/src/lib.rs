//! All of entra-sync's SQL: the `Store` handle over a Postgres pool, the schema migrations
//! (`migrations/` at the workspace root), and one module per part of the data model.
//!
//! Every query takes the PSA tenant id and filters by it: tenant_id leads every primary key,
//! so a caller can never read or write another tenant's rows by naming a foreign id.
//!
//! Invariants the schema itself enforces (see `migrations/`):
//! - `runs_one_running_per_scope`: at most one `running` run per (tenant, kind, scope, client);
//!   `start_run` relies on it to deduplicate "Sync now" presses race-free.
//! - `review_items_one_open_per_user`: at most one open review item per (tenant, managed
//!   tenant, object id); the page reconcile inserts with `ON CONFLICT … DO NOTHING` on it.
//! - `links` primary key (tenant, managed tenant, object id) and `links_one_per_contact`: a
//!   directory user has at most one contact and a contact at most one directory user.
//! - `mappings` primary key (tenant, managed tenant): a managed tenant maps to at most one
//!   client.
//! - `managed_tenants` unique (tenant, entra tenant id): discovery upserts on it.
//! - Triggers refuse any DELETE of `contacts` and `managed_tenants`.
//! - CHECKs: an active contact has no inactive reason; a running run has no finish time; a
//!   client-scoped run names its client; connection credentials and nonce come together.
//!
//! The page reconcile (`reconcile::reconcile_page`) runs a fixed number of statements per
//! page under a transaction-scoped advisory lock per managed tenant.
//!
//! # A tenant id the planner does not see
//! The page's reads by key and the API's lists compare the tenant as `tenant_id = (SELECT
//! $1::uuid)`, not `tenant_id = $1`. Statistics are taken from a sample of the whole table, so
//! a PSA tenant whose rows were not there at the last ANALYZE (one whose first sync follows
//! another tenant's, until the table has grown by a tenth) is not among the column's common
//! values, and a plan made for its id expects it to have a single row. Every index that
//! starts with `tenant_id` then costs the same, and the planner took one without the key:
//! the page's contact read filtered each address through all of the tenant's contacts
//! (60–280 ms a page instead of 2 ms in the scale bench), a contact lookup by address went
//! through the name index. The sub-select is planned without its value, so the tenant is
//! estimated from the column's distinct count, as in a generic plan: the whole table
//! (`20261207100000_key_columns_distinct.sql`), and the index with the key wins. The plan
//! tests in `reconcile.rs` and `tests/list_plans.rs` cover that case.

pub mod api_queries;
pub mod audit;
pub mod connection;
pub mod console;
pub mod crypto;
pub mod delta;
pub mod discovery;
pub mod error;
pub mod failures;
pub mod flags;
pub mod group;
pub mod inactivation;
pub mod mapping;
pub mod ops_metrics;
pub mod page;
pub mod preflight;
pub mod psa;
pub mod reconcile;
pub mod rekey;
pub mod review;
pub mod runs;
pub mod settings;
pub mod tokens;
pub mod workflow_queries;

use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::crypto::EncryptionKey;
use crate::error::StoreError;

/// The result type of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database. Cheap to clone: it shares the pool and the encryption key.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    encryption_key: Option<Arc<EncryptionKey>>,
    /// Test hook: page transactions that are about to create contacts wait here (after
    /// planning, before locking the new addresses), so a test can hold two of them at the
    /// same point and prove the race is decided by the locks, not by timing.
    create_barrier: Option<Arc<tokio::sync::Barrier>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself is never printed.
        formatter
            .debug_struct("Store")
            .field("encryption_key_configured", &self.encryption_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool of up to 16 connections on `database_url`.
    pub async fn connect(database_url: &str) -> Result<Store> {
        Store::connect_with(database_url, 16).await
    }

    /// Opens a pool of up to `max_connections` connections on `database_url`.
    pub async fn connect_with(database_url: &str, max_connections: u32) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(database_url)
            .await?;
        Ok(Store::from_pool(pool))
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Wraps an existing pool (tests get theirs from `#[sqlx::test]`).
    pub fn from_pool(pool: PgPool) -> Store {
        Store {
            pool,
            encryption_key: None,
            create_barrier: None,
        }
    }

    /// Test hook (see the `create_barrier` field): every page transaction waits on `barrier`
    /// after planning and before locking the addresses it creates.
    #[doc(hidden)]
    pub fn with_create_barrier(mut self, barrier: Arc<tokio::sync::Barrier>) -> Store {
        self.create_barrier = Some(barrier);
        self
    }

    /// Sets the 32-byte AES-256-GCM key that protects credentials, token sets and PKCE
    /// verifiers at rest. Calls that read or write such secrets fail with
    /// `StoreError::Encryption` until a key is set.
    pub fn with_encryption_key(mut self, key: [u8; 32]) -> Store {
        self.encryption_key = Some(Arc::new(EncryptionKey::new(key)));
        self
    }

    /// Like [`Store::with_encryption_key`], with the keys that were current before: values
    /// sealed under them still open, and every write seals under `current`
    /// (`ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS`; `Store::rekey` re-seals what is stored).
    pub fn with_encryption_keys(mut self, current: [u8; 32], previous: Vec<[u8; 32]>) -> Store {
        self.encryption_key = Some(Arc::new(EncryptionKey::with_previous(current, previous)));
        self
    }

    /// Applies the workspace's migrations (append-only files under `migrations/`).
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../../migrations").run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn encryption_key(&self) -> Result<&EncryptionKey> {
        self.encryption_key
            .as_deref()
            .ok_or(StoreError::Encryption("no encryption key configured"))
    }
}
