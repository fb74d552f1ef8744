//! Encryption key rotation against a real Postgres: values stored under the old key still
//! open after a restart with the new key current and the old one listed as previous; `rekey`
//! re-seals them; afterwards the old key can be removed and everything still opens.

use entra_sync_store::connection::{
    CippCredentialsRecord, ConnectionCredentials, DirectTokenSetRecord,
};
use entra_sync_store::error::StoreError;
use entra_sync_store::Store;
use sqlx::PgPool;
use uuid::Uuid;

const OLD: [u8; 32] = [11u8; 32];
const NEW: [u8; 32] = [22u8; 32];

fn token_set() -> DirectTokenSetRecord {
    DirectTokenSetRecord {
        access_token: "access-token".to_owned(),
        refresh_token: "refresh-token".to_owned(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(60),
        scope: "offline_access Directory.Read.All".to_owned(),
    }
}

async fn credentials(store: &Store, tenant_id: Uuid) -> Result<ConnectionCredentials, StoreError> {
    store
        .get_connection(tenant_id)
        .await?
        .and_then(|connection| connection.credentials)
        .ok_or(StoreError::NotFound)
}

#[sqlx::test(migrations = "../../migrations")]
async fn rotate_restart_rekey_then_drop_the_old_key(pool: PgPool) {
    let before = Store::from_pool(pool.clone()).with_encryption_key(OLD);
    let direct = before.create_psa_tenant("direct").await.expect("tenant");
    before
        .save_direct_connection(direct.tenant_id, &token_set())
        .await
        .expect("direct connection");
    let cipp = before.create_psa_tenant("cipp").await.expect("tenant");
    before
        .save_cipp_connection(
            cipp.tenant_id,
            "https://cipp.example.com",
            &CippCredentialsRecord::ApiToken {
                api_token: "cipp-api-token".to_owned(),
            },
        )
        .await
        .expect("cipp connection");

    // A restart with only the new key cannot read what the old key sealed…
    let new_only = Store::from_pool(pool.clone()).with_encryption_key(NEW);
    assert!(matches!(
        credentials(&new_only, cipp.tenant_id).await,
        Err(StoreError::Encryption(_))
    ));

    // …but with the old key listed as previous, the connections read as before, and what is
    // read is re-sealed under the new key on the way (the direct connection here).
    let rotated = Store::from_pool(pool.clone()).with_encryption_keys(NEW, vec![OLD]);
    direct_tokens_read_back(&rotated, direct.tenant_id).await;
    direct_tokens_read_back(&new_only, direct.tenant_id).await;
    assert!(matches!(
        credentials(&new_only, cipp.tenant_id).await,
        Err(StoreError::Encryption(_))
    ));

    // `rekey` re-seals what was not read since (the CIPP connection).
    let report = rotated.rekey().await.expect("rekey");
    assert_eq!(report.connections_resealed, 1);
    assert_eq!(report.connections_current, 1);
    let again = rotated.rekey().await.expect("second rekey");
    assert_eq!(again.connections_resealed, 0);
    assert_eq!(again.connections_current, 2);

    // After rekey the old key can go.
    let after = Store::from_pool(pool).with_encryption_key(NEW);
    direct_tokens_read_back(&after, direct.tenant_id).await;
    assert!(matches!(
        credentials(&after, cipp.tenant_id).await.expect("cipp after rekey"),
        ConnectionCredentials::Cipp(CippCredentialsRecord::ApiToken { ref api_token }) if api_token == "cipp-api-token"
    ));
}

async fn direct_tokens_read_back(store: &Store, tenant_id: Uuid) {
    match credentials(store, tenant_id).await.expect("credentials") {
        ConnectionCredentials::Direct(tokens) => {
            assert_eq!(tokens.refresh_token, "refresh-token");
            assert_eq!(tokens.access_token, "access-token");
        }
        other => panic!("unexpected credentials {other:?}"),
    }
}
