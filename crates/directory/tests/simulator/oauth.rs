//! The identity platform client against the simulated login endpoints (MICROSOFT.md §1, §5).

use std::sync::Arc;

use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::graph::probe;
use entra_sync_directory::http::ThrottleStats;
use entra_sync_directory::oauth::{AppCredential, OAuthClient, GRAPH_DEFAULT_SCOPE};
use entra_sync_simulator::{FaultKind, FaultSpec, Simulator};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    app_oauth_config, assert_class, connect, connect_token_set, fast_settings, graph_setup,
    oauth_client, smallest_tenant, start_simulator,
};

fn client_with(simulator: &Simulator, credential: AppCredential) -> OAuthClient {
    OAuthClient::new(
        app_oauth_config(simulator, credential),
        fast_settings(),
        Arc::new(ThrottleStats::default()),
    )
    .expect("client")
}

#[tokio::test]
async fn the_code_flow_yields_a_refresh_token_that_rotates() {
    let simulator = start_simulator().await;
    let oauth = oauth_client(&simulator, Arc::default());
    let first = connect(&simulator, &oauth).await;
    let partner = simulator.config().partner_tenant_id.clone();
    let refreshed = oauth
        .refresh(&partner, &first, GRAPH_DEFAULT_SCOPE)
        .await
        .expect("refresh");
    let second = refreshed
        .refresh_token
        .clone()
        .expect("a new refresh token");
    assert_ne!(first.expose_secret(), second.expose_secret());
    assert!(
        !format!("{refreshed:?}").contains(second.expose_secret()),
        "Debug redacts"
    );
    oauth
        .refresh(&partner, &second, GRAPH_DEFAULT_SCOPE)
        .await
        .expect("the new one works");
}

#[tokio::test]
async fn graph_is_probed_with_the_exchanged_token() {
    let simulator = start_simulator().await;
    let oauth = oauth_client(&simulator, Arc::default());
    let token_set = connect_token_set(&simulator, &oauth).await;
    let graph_base = crate::url(&simulator.graph_base_url());
    let context = oauth.error_context(None);
    probe(
        &graph_base,
        &token_set.access_token,
        &context,
        fast_settings(),
        Arc::default(),
    )
    .await
    .expect("the new token works on Graph");
    let bogus = SecretString::from("not-a-token".to_owned());
    let result = probe(
        &graph_base,
        &bogus,
        &context,
        fast_settings(),
        Arc::default(),
    )
    .await;
    assert_class(result, "reauth_required");
}

#[tokio::test]
async fn token_endpoint_errors_are_classified_by_code() {
    let simulator = start_simulator().await;
    let setup = graph_setup(&simulator, fast_settings()).await;
    let tenant = smallest_tenant(&simulator);
    let cases = [
        (70008, "reauth_required", None),
        (700082, "reauth_required", None),
        (50173, "reauth_required", None),
        (7000215, "config", Some("MICROSOFT_CLIENT_SECRET")),
        (7000222, "config", Some("MICROSOFT_CLIENT_SECRET")),
        (700016, "config", Some("MICROSOFT_CLIENT_ID")),
        (90002, "config", Some("MICROSOFT_TENANT_ID")),
        (90099, "tenant_access", None),
    ];
    for (code, class, setting) in cases {
        simulator
            .add_fault(FaultSpec {
                kind: FaultKind::TokenError { aadsts: code },
                path_prefix: format!("/login/{}/oauth2/v2.0/token", tenant.tenant_id),
                tenant: None,
                count: Some(1),
            })
            .expect("fault");
        let error = assert_class(setup.graph.users_page(&tenant.tenant_id, None).await, class);
        assert_eq!(error.code(), Some(format!("AADSTS{code}").as_str()));
        if let (Some(expected), DirectoryError::Config { setting, .. }) = (setting, &error) {
            assert_eq!(setting, expected);
        }
        let text = error.to_string();
        assert!(!text.contains(&setup.refresh_tokens.current()), "{text}");
        assert!(
            !text.contains(&simulator.config().app_client_secret),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_config_error() {
    let simulator = start_simulator().await;
    let oauth = client_with(
        &simulator,
        AppCredential::ClientSecret(SecretString::from("wrong".to_owned())),
    );
    let partner = simulator.config().partner_tenant_id.clone();
    let error = assert_class(
        oauth
            .client_credentials(&partner, "https://graph.microsoft.com")
            .await,
        "config",
    );
    assert!(
        matches!(&error, DirectoryError::Config { setting, .. } if setting == "MICROSOFT_CLIENT_SECRET")
    );
    assert!(!error.to_string().contains("wrong"));
}

#[tokio::test]
async fn certificate_and_federated_credentials_are_accepted() {
    let simulator = start_simulator().await;
    let partner = simulator.config().partner_tenant_id.clone();
    let certificate = client_with(
        &simulator,
        AppCredential::Certificate {
            certificate_pem: include_str!("../fixtures/test-app-cert.pem").to_owned(),
            private_key_pem: SecretString::from(
                include_str!("../fixtures/test-app-key.pem").to_owned(),
            ),
        },
    );
    let token_set = certificate
        .client_credentials(&partner, "https://graph.microsoft.com")
        .await
        .expect("token");
    assert!(
        token_set.refresh_token.is_none(),
        "client credentials yield no refresh token"
    );

    let directory =
        std::env::temp_dir().join(format!("entra-sync-federated-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("dir");
    let token_file = directory.join("token");
    std::fs::write(&token_file, "first.federated.token\n").expect("write");
    let federated = client_with(
        &simulator,
        AppCredential::FederatedTokenFile(token_file.clone()),
    );
    federated
        .client_credentials(&partner, "https://graph.microsoft.com")
        .await
        .expect("token");
    // Rotated by the platform: the next request reads the file again.
    std::fs::remove_file(&token_file).expect("remove");
    let error = assert_class(
        federated
            .client_credentials(&partner, "https://graph.microsoft.com")
            .await,
        "config",
    );
    assert!(
        error.to_string().contains("federated token file"),
        "{error}"
    );
    std::fs::write(&token_file, "second.federated.token").expect("write");
    federated
        .client_credentials(&partner, "https://graph.microsoft.com")
        .await
        .expect("token");
    let _ = std::fs::remove_dir_all(&directory);
}
