//! Retries and throttling over real HTTP (MICROSOFT.md §4), and a malformed user isolated on a
//! page served by a one-page stand-in for Graph.

use std::time::Duration;

use entra_sync_directory::http::HttpSettings;
use entra_sync_domain::model::DirectoryEntry;
use entra_sync_simulator::{FaultKind, FaultSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    assert_class, fast_settings, gap_after_status, graph_setup, graph_setup_at, requests_to,
    smallest_tenant, start_simulator, url,
};

fn users_fault(kind: FaultKind, tenant: &str, count: u32) -> FaultSpec {
    FaultSpec {
        kind,
        path_prefix: "/graph/v1.0/users".to_owned(),
        tenant: Some(tenant.to_owned()),
        count: Some(count),
    }
}

#[tokio::test]
async fn throttled_requests_wait_at_least_retry_after() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(users_fault(
            FaultKind::Throttle {
                retry_after_secs: 2,
            },
            &tenant.tenant_id,
            1,
        ))
        .expect("fault");
    setup
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users after the wait");
    let requests = requests_to(&simulator, "/graph/v1.0/users");
    assert_eq!(
        requests
            .iter()
            .map(|request| request.status)
            .collect::<Vec<_>>(),
        vec![429, 200]
    );
    let gap = gap_after_status(&requests, 429);
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, Retry-After was 2 s"
    );
    assert_eq!(setup.stats.throttled_responses(), 1);
    assert_eq!(setup.stats.retries(), 1);
    assert!(setup.stats.total_wait() >= Duration::from_secs(2));
}

#[tokio::test]
async fn unavailable_and_gateway_timeouts_are_retried_with_backoff() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(users_fault(
            FaultKind::Unavailable {
                retry_after_secs: None,
            },
            &tenant.tenant_id,
            1,
        ))
        .expect("fault");
    simulator
        .add_fault(users_fault(FaultKind::GatewayTimeout, &tenant.tenant_id, 1))
        .expect("fault");
    setup
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users after retries");
    let requests = requests_to(&simulator, "/graph/v1.0/users");
    assert_eq!(
        requests
            .iter()
            .map(|request| request.status)
            .collect::<Vec<_>>(),
        vec![503, 504, 200]
    );
    // Never immediately (§4): at least the minimum backoff between attempts.
    for pair in requests.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(50));
    }
    assert_eq!(setup.stats.throttled_responses(), 0);
    assert_eq!(setup.stats.retries(), 2);

    simulator
        .add_fault(users_fault(
            FaultKind::Unavailable {
                retry_after_secs: Some(1),
            },
            &tenant.tenant_id,
            1,
        ))
        .expect("fault");
    simulator.clear_request_log();
    setup
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users");
    let requests = requests_to(&simulator, "/graph/v1.0/users");
    assert!(gap_after_status(&requests, 503) >= Duration::from_secs(1));
}

#[tokio::test]
async fn attempts_are_bounded_and_the_error_is_transient() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(users_fault(
            FaultKind::GatewayTimeout,
            &tenant.tenant_id,
            10,
        ))
        .expect("fault");
    let error = assert_class(
        setup.graph.users_page(&tenant.tenant_id, None).await,
        "transient",
    );
    assert!(error.is_retryable());
    assert_eq!(
        requests_to(&simulator, "/graph/v1.0/users").len(),
        4,
        "max_attempts"
    );
}

#[tokio::test]
async fn a_long_retry_after_is_handed_to_the_caller() {
    let simulator = start_simulator().await;
    let settings = HttpSettings {
        max_retry_after: Duration::from_secs(5),
        ..fast_settings()
    };
    let setup = graph_setup(&simulator, settings).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(users_fault(
            FaultKind::Throttle {
                retry_after_secs: 600,
            },
            &tenant.tenant_id,
            1,
        ))
        .expect("fault");
    let error = assert_class(
        setup.graph.users_page(&tenant.tenant_id, None).await,
        "transient",
    );
    match error {
        entra_sync_directory::error::DirectoryError::Transient { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(600)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn requests_per_tenant_are_bounded() {
    let simulator = start_simulator().await;
    let settings = HttpSettings {
        per_tenant_concurrency: 1,
        ..fast_settings()
    };
    let setup = graph_setup(&simulator, settings).await;
    let tenant = smallest_tenant(&simulator);
    // Warm the token cache so only Graph requests are measured.
    setup
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users");
    simulator
        .add_fault(users_fault(
            FaultKind::Delay { ms: 300 },
            &tenant.tenant_id,
            3,
        ))
        .expect("fault");
    simulator.clear_request_log();
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let graph = setup.graph.clone();
            let tenant_id = tenant.tenant_id.clone();
            tokio::spawn(async move { graph.users_page(&tenant_id, None).await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("users");
    }
    // One at a time: three delayed answers take at least three delays.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let requests = requests_to(&simulator, "/graph/v1.0/users");
    for pair in requests.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(300));
    }
}

#[tokio::test]
async fn timeouts_are_retried() {
    let simulator = start_simulator().await;
    let settings = HttpSettings {
        request_timeout: Duration::from_millis(500),
        ..fast_settings()
    };
    let setup = graph_setup(&simulator, settings).await;
    let tenant = smallest_tenant(&simulator);
    simulator
        .add_fault(users_fault(
            FaultKind::Delay { ms: 2_000 },
            &tenant.tenant_id,
            1,
        ))
        .expect("fault");
    setup
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("users after a timeout");
    assert_eq!(setup.stats.retries(), 1);
}

/// Serves one fixed Graph users page on a loopback port, to every request: the simulator
/// only generates well-formed users, and this test needs one that is not.
async fn serve_one_page(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/graph")
}

#[tokio::test]
async fn a_malformed_user_is_isolated_from_its_page() {
    let simulator = start_simulator().await;
    let tenant = smallest_tenant(&simulator);
    let page = serde_json::json!({
        "value": [
            {"id": "u1", "displayName": "Good One", "mail": "one@contoso.com"},
            {"id": "u2", "displayName": "Bad", "mail": 42},
            {"displayName": "No id"},
            {"id": "u4", "@removed": {"reason": "deleted"}},
            {"id": "u5", "displayName": "Good Two", "businessPhones": ["+1 555"]}
        ]
    });
    let base = serve_one_page(page.to_string()).await;
    let setup = graph_setup_at(&simulator, fast_settings(), url(&base)).await;
    let page = setup
        .graph
        .users_page(&tenant.tenant_id, None)
        .await
        .expect("a page despite bad users");
    assert_eq!(page.entries.len(), 5);
    assert!(matches!(&page.entries[0], DirectoryEntry::Present(user) if user.object_id == "u1"));
    assert_eq!(
        page.entries[1],
        DirectoryEntry::Invalid {
            object_id: Some("u2".to_owned()),
            reason: "mail is not a string".to_owned()
        }
    );
    assert!(matches!(
        &page.entries[2],
        DirectoryEntry::Invalid {
            object_id: None,
            ..
        }
    ));
    assert_eq!(
        page.entries[3],
        DirectoryEntry::Removed {
            object_id: "u4".to_owned(),
            permanent: true
        }
    );
    assert!(
        matches!(&page.entries[4], DirectoryEntry::Present(user) if user.business_phones == vec!["+1 555".to_owned()])
    );
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_before_any_token_is_sent() {
    let simulator = start_simulator().await;
    let tenant = smallest_tenant(&simulator);
    let foreign = serve_one_page(serde_json::json!({"value": []}).to_string()).await;
    let page = serde_json::json!({"value": [], "@odata.nextLink": format!("{foreign}/v1.0/users?$skiptoken=x")});
    let base = serve_one_page(page.to_string()).await;
    let setup = graph_setup_at(&simulator, fast_settings(), url(&base)).await;
    assert_class(
        setup.graph.users_page(&tenant.tenant_id, None).await,
        "invalid",
    );
}
