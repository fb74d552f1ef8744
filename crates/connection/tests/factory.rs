//! `DirectoryFactory` against a real Postgres (`#[sqlx::test]`, DATABASE_URL): a PSA tenant's
//! CIPP source is built once and reused while its URL and credentials stay the same, and
//! built anew when either changes.

use std::sync::Arc;

use entra_sync_connection::{DirectoryFactory, DirectorySettings};
use entra_sync_store::connection::CippCredentialsRecord;
use entra_sync_store::Store;
use sqlx::PgPool;
use url::Url;

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

#[sqlx::test(migrations = "../../migrations")]
async fn a_cipp_source_is_reused_until_its_url_or_credentials_change(pool: PgPool) {
    let store = Store::from_pool(pool).with_encryption_key(KEY);
    let tenant_id = store
        .create_psa_tenant("Acme MSP")
        .await
        .expect("tenant")
        .tenant_id;
    let factory = factory();
    store
        .save_cipp_connection(tenant_id, "https://cipp.example", &token("first-token"))
        .await
        .expect("save");
    let first = factory.for_tenant(&store, tenant_id).await.expect("source");
    let again = factory.for_tenant(&store, tenant_id).await.expect("source");
    assert!(
        Arc::ptr_eq(&first.source, &again.source),
        "unchanged: reused"
    );

    store
        .save_cipp_connection(tenant_id, "https://cipp.example", &token("second-token"))
        .await
        .expect("save");
    let rotated = factory.for_tenant(&store, tenant_id).await.expect("source");
    assert!(
        !Arc::ptr_eq(&first.source, &rotated.source),
        "a new token builds a new client"
    );

    store
        .save_cipp_connection(tenant_id, "https://cipp2.example", &token("second-token"))
        .await
        .expect("save");
    let moved = factory.for_tenant(&store, tenant_id).await.expect("source");
    assert!(
        !Arc::ptr_eq(&rotated.source, &moved.source),
        "a new URL builds a new client"
    );
    let moved_again = factory.for_tenant(&store, tenant_id).await.expect("source");
    assert!(Arc::ptr_eq(&moved.source, &moved_again.source));
}
