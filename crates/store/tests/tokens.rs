//! The direct token-set lease against a real Postgres (`#[sqlx::test]`): a second lease waits
//! for the first, then reads what the first stored; releasing changes nothing; only direct
//! connections can be leased; what a lease stores reads back through `get_connection`.

use std::time::Duration;

use entra_sync_store::connection::{
    CippCredentialsRecord, ConnectionCredentials, DirectTokenSetRecord,
};
use entra_sync_store::error::StoreError;
use entra_sync_store::Store;
use sqlx::PgPool;
use uuid::Uuid;

const KEY: [u8; 32] = [7u8; 32];

fn token_set(refresh_token: &str) -> DirectTokenSetRecord {
    DirectTokenSetRecord {
        access_token: format!("access-for-{refresh_token}"),
        refresh_token: refresh_token.to_owned(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(60),
        scope: "offline_access Directory.Read.All".to_owned(),
    }
}

async fn direct_tenant(store: &Store) -> Uuid {
    let tenant = store.create_psa_tenant("lease").await.expect("tenant");
    store
        .save_direct_connection(tenant.tenant_id, &token_set("first"))
        .await
        .expect("connection");
    tenant.tenant_id
}

/// Waits (with a deadline) until some session waits on a lock.
async fn someone_waits_for_a_lock(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second lease never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_second_lease_waits_and_reads_the_rotated_token(pool: PgPool) {
    let store = Store::from_pool(pool.clone()).with_encryption_key(KEY);
    let tenant_id = direct_tenant(&store).await;
    let first = store
        .lease_direct_token_set(tenant_id)
        .await
        .expect("lease");
    assert_eq!(first.token_set().refresh_token, "first");
    let version = first.credentials_version();

    let other_store = store.clone();
    let second = tokio::spawn(async move {
        let lease = other_store
            .lease_direct_token_set(tenant_id)
            .await
            .expect("second lease");
        let seen = lease.token_set().clone();
        lease.release().await.expect("release");
        seen
    });
    someone_waits_for_a_lock(&pool).await;
    assert!(!second.is_finished(), "the second lease did not wait");
    let new_version = first
        .replace(&store, &token_set("second"))
        .await
        .expect("replace");
    assert_eq!(new_version, version + 1);
    let seen = second.await.expect("task");
    assert_eq!(
        seen.refresh_token, "second",
        "the waiter reads the rotated token"
    );

    // What the lease sealed reads back through the connection API.
    let connection = store
        .get_connection(tenant_id)
        .await
        .expect("read")
        .expect("row");
    let Some(ConnectionCredentials::Direct(stored)) = &connection.credentials else {
        panic!("not a direct token set: {:?}", connection.credentials);
    };
    assert_eq!(
        (stored.refresh_token.as_str(), stored.access_token.as_str()),
        ("second", "access-for-second")
    );
    assert_eq!(connection.credentials_version, version + 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn releasing_a_lease_changes_nothing(pool: PgPool) {
    let store = Store::from_pool(pool).with_encryption_key(KEY);
    let tenant_id = direct_tenant(&store).await;
    let before = store.get_connection(tenant_id).await.expect("read");
    let lease = store
        .lease_direct_token_set(tenant_id)
        .await
        .expect("lease");
    lease.release().await.expect("release");
    // Dropping a lease without releasing rolls back too.
    drop(
        store
            .lease_direct_token_set(tenant_id)
            .await
            .expect("lease"),
    );
    assert_eq!(store.get_connection(tenant_id).await.expect("read"), before);
}

#[sqlx::test(migrations = "../../migrations")]
async fn only_direct_connections_are_leased(pool: PgPool) {
    let store = Store::from_pool(pool).with_encryption_key(KEY);
    let tenant = store.create_psa_tenant("cipp").await.expect("tenant");
    assert!(matches!(
        store.lease_direct_token_set(tenant.tenant_id).await,
        Err(StoreError::NotFound)
    ));
    store
        .save_cipp_connection(
            tenant.tenant_id,
            "https://cipp.example.com",
            &CippCredentialsRecord::ApiToken {
                api_token: "t".to_owned(),
            },
        )
        .await
        .expect("cipp");
    assert!(matches!(
        store.lease_direct_token_set(tenant.tenant_id).await,
        Err(StoreError::Conflict(code)) if code == "not_direct"
    ));
    store
        .disconnect(tenant.tenant_id)
        .await
        .expect("disconnect");
    assert!(matches!(
        store.lease_direct_token_set(tenant.tenant_id).await,
        Err(StoreError::Conflict(_))
    ));
}
