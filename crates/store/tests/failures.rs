//! Recorded failures against a real Postgres (`#[sqlx::test]`): the database refuses a failure
//! without a class or remediation on runs, tenant results and connections; a discovery run's
//! error and a tenant's retry state are recorded while the run goes on; expired OAuth states
//! are purged when a new flow starts.

// Only `start_discovery` of the shared setup is used here.
#[allow(dead_code)]
mod common;

use entra_sync_store::psa::PsaUserType;
use entra_sync_store::runs::RunStatus;
use entra_sync_store::Store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const KEY: [u8; 32] = [9u8; 32];

fn record(class: &str) -> serde_json::Value {
    json!({"class": class, "code": "c", "message": "m", "remediation": "do this"})
}

async fn running_run(store: &Store) -> (Uuid, Uuid) {
    let tenant = store.create_psa_tenant("failures").await.expect("tenant");
    let run_id = common::start_discovery(store, tenant.tenant_id).await;
    (tenant.tenant_id, run_id)
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_row_can_hold_a_failure_without_class_or_remediation(pool: PgPool) {
    let store = Store::from_pool(pool.clone()).with_encryption_key(KEY);
    let (tenant_id, run_id) = running_run(&store).await;
    let incomplete = [
        json!({"message": "only a message"}),
        json!({"class": "failed", "code": "x", "message": "m", "remediation": "r"}),
        json!({"class": "transient", "code": "x", "message": "m", "remediation": null}),
        json!({"class": "config", "code": "x", "message": "m", "remediation": "  "}),
        json!({"class": "config", "code": null, "message": "m", "remediation": "r"}),
    ];
    for error in &incomplete {
        assert!(
            store
                .record_run_error(tenant_id, run_id, error)
                .await
                .is_err(),
            "runs accepted {error}"
        );
        assert!(
            store
                .record_tenant_retry(
                    tenant_id,
                    run_id,
                    Uuid::new_v4(),
                    1,
                    error,
                    chrono::Utc::now()
                )
                .await
                .is_err(),
            "tenant results accepted {error}"
        );
        let connection = sqlx::query(
            "INSERT INTO connections (tenant_id, last_error) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET last_error = excluded.last_error",
        )
        .bind(tenant_id)
        .bind(error)
        .execute(&pool)
        .await;
        assert!(connection.is_err(), "connections accepted {error}");
    }
    for class in [
        "reauth_required",
        "tenant_access",
        "config",
        "transient",
        "invalid",
    ] {
        store
            .record_run_error(tenant_id, run_id, &record(class))
            .await
            .expect("a complete record is accepted");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_run_error_is_kept_and_a_retry_state_is_listed_until_the_tenant_ends(pool: PgPool) {
    let store = Store::from_pool(pool).with_encryption_key(KEY);
    let (tenant_id, run_id) = running_run(&store).await;
    store
        .record_run_error(tenant_id, run_id, &record("config"))
        .await
        .expect("recorded");
    let run = store.get_run(tenant_id, run_id).await.expect("run");
    assert_eq!(run.error, Some(record("config")));

    let managed_tenant_id = Uuid::new_v4();
    let next = chrono::Utc::now() + chrono::Duration::seconds(30);
    // The tenant result row needs a managed tenant only by id (no foreign key on it).
    store
        .record_tenant_retry(
            tenant_id,
            run_id,
            managed_tenant_id,
            3,
            &record("transient"),
            next,
        )
        .await
        .expect("retry recorded");
    let states = store
        .tenant_retry_states(tenant_id, run_id)
        .await
        .expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].managed_tenant_id, managed_tenant_id);
    assert_eq!(states[0].attempt, 3);
    assert_eq!(states[0].error, Some(record("transient")));
    assert_eq!(
        states[0].next_attempt_at.timestamp_micros() / 1000,
        next.timestamp_micros() / 1000
    );
    let run = store.get_run(tenant_id, run_id).await.expect("run");
    assert_eq!(run.tenants[0].error, Some(record("transient")));

    store
        .finish_run(
            tenant_id,
            run_id,
            RunStatus::Failed,
            Some(&record("config")),
        )
        .await
        .expect("finish");
    assert!(store
        .tenant_retry_states(tenant_id, run_id)
        .await
        .expect("states")
        .is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn starting_a_flow_purges_states_expired_more_than_a_day_ago(pool: PgPool) {
    let store = Store::from_pool(pool.clone()).with_encryption_key(KEY);
    let tenant = store.create_psa_tenant("oauth").await.expect("tenant");
    let (user, _) = store
        .create_psa_user(
            tenant.tenant_id,
            "admin@example.com",
            PsaUserType::Internal,
            &[],
        )
        .await
        .expect("user");
    let now = chrono::Utc::now();
    for (state, expires_at) in [
        ("long-gone", now - chrono::Duration::days(2)),
        ("just-expired", now - chrono::Duration::minutes(5)),
    ] {
        store
            .create_oauth_state(
                tenant.tenant_id,
                user.user_id,
                state,
                "verifier",
                expires_at,
            )
            .await
            .expect("state");
    }
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM oauth_states")
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    // The first state was already purged when the second flow started.
    assert_eq!(count().await, 1);
    assert_eq!(store.purge_expired_oauth_states().await.expect("purge"), 0);
    store
        .create_oauth_state(
            tenant.tenant_id,
            user.user_id,
            "fresh",
            "verifier",
            now + chrono::Duration::minutes(10),
        )
        .await
        .expect("state");
    assert_eq!(
        count().await,
        2,
        "recently expired states stay for a clear message"
    );
}
