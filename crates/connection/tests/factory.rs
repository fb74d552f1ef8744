//! `DirectoryFactory` against a real Postgres (`#[sqlx::test]`, DATABASE_URL): a PSA tenant's
//! CIPP source is built once and reused while its URL and credentials stay the same, and
//! built anew when either changes.

use std::sync::Arc;

use entra_sync_connection::{DirectoryFactory, DirectorySettings, DirectorySource};
use entra_sync_store::connection::CippCredentialsRecord;
use entra_sync_store::Store;
use sqlx::PgPool;
use url::Url;
use uuid::Uuid;

const KEY: [u8; 32] = [7u8; 32];

fn factory() -> DirectoryFactory {
    DirectoryFactory::new(DirectorySettings::new(
        Url::parse("https://login.microsoftonline.com").expect("url"),
        Url::parse("https://graph.microsoft.com").expect("url"),
    ))
}

fn token(value: &str) -> CippCredentialsRecord {
    CippCredentialsRecord::ApiToken {
        api_token: value.to_owned(),
    }
}

/// Saves the tenant's CIPP connection with `url` and `api_token`, then asks the factory for
/// the tenant's source.
async fn source_after_saving(
    store: &Store,
    factory: &DirectoryFactory,
    tenant_id: Uuid,
    url: &str,
    api_token: &str,
) -> Arc<dyn DirectorySource> {
    store
        .save_cipp_connection(tenant_id, url, &token(api_token))
        .await
        .expect("save");
    source(store, factory, tenant_id).await
}

async fn source(
    store: &Store,
    factory: &DirectoryFactory,
    tenant_id: Uuid,
) -> Arc<dyn DirectorySource> {
    factory
        .for_tenant(store, tenant_id)
        .await
        .expect("source")
        .source
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_cipp_source_is_reused_until_its_url_or_credentials_change(pool: PgPool) {
    let store = Store::from_pool(pool).with_encryption_key(KEY);
    let tenant_id = store
        .create_psa_tenant("Acme MSP")
        .await
        .expect("tenant")
        .tenant_id;
    let factory = factory();
    let (store, factory) = (&store, &factory);
    let first = source_after_saving(
        store,
        factory,
        tenant_id,
        "https://cipp.example",
        "first-token",
    )
    .await;
    let again = source(store, factory, tenant_id).await;
    assert!(Arc::ptr_eq(&first, &again), "unchanged: reused");

    let rotated = source_after_saving(
        store,
        factory,
        tenant_id,
        "https://cipp.example",
        "second-token",
    )
    .await;
    assert!(
        !Arc::ptr_eq(&first, &rotated),
        "a new token builds a new client"
    );

    let moved = source_after_saving(
        store,
        factory,
        tenant_id,
        "https://cipp2.example",
        "second-token",
    )
    .await;
    assert!(
        !Arc::ptr_eq(&rotated, &moved),
        "a new URL builds a new client"
    );
    let moved_again = source(store, factory, tenant_id).await;
    assert!(Arc::ptr_eq(&moved, &moved_again));
}
