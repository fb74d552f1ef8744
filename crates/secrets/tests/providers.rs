//! The secret providers against real backends: a directory on disk whose secret is rotated
//! while the resolver is in use, and a real OpenBao dev server (KV v2) started by the test
//! from `ENTRA_SYNC_BAO_BIN` (default `.tools/venv/bin/bao`, installed by `make test`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use entra_sync_directory::oauth::AppCredential;
use entra_sync_secrets::{
    AppCredentialResolver, EnvironmentProvider, FolderProvider, SecretProvider, SecretScope,
    SecretsError, VaultConfig, VaultProvider,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

fn secret_of(credential: &AppCredential) -> String {
    match credential {
        AppCredential::ClientSecret(secret) => secret.expose_secret().to_owned(),
        other => panic!("not a client secret: {other:?}"),
    }
}

fn scratch_directory() -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("entra-sync-secrets-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&path).expect("scratch directory");
    path
}

/// Writes `value` the way Kubernetes updates a mounted secret: a new file renamed over the old.
fn write_atomically(path: &Path, value: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, value).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

#[tokio::test]
async fn a_rotated_secret_file_takes_effect_without_a_restart() {
    let root = scratch_directory();
    let tenant = Uuid::new_v4();
    let tenant_directory = root.join("tenants").join(tenant.to_string());
    std::fs::create_dir_all(&tenant_directory).expect("tenant directory");
    std::fs::write(root.join("MICROSOFT_CLIENT_ID"), "app-id\n").expect("write");
    std::fs::write(root.join("MICROSOFT_CLIENT_SECRET"), "first-secret\n").expect("write");
    let resolver = AppCredentialResolver::new(
        vec![Arc::new(FolderProvider::new(&root))],
        EnvironmentProvider::default(),
    );
    let first = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(first.client_id, "app-id");
    assert_eq!(secret_of(&first.credential), "first-secret");
    assert_eq!(first.source, "folder (application)");

    // Rotation by rename (a new inode) and by an in-place rewrite of the same length.
    write_atomically(&root.join("MICROSOFT_CLIENT_SECRET"), "second-secret\n");
    let second = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(secret_of(&second.credential), "second-secret");
    assert_ne!(first.fingerprint, second.fingerprint);
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(root.join("MICROSOFT_CLIENT_SECRET"), "third--secret\n").expect("write");
    let third = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(secret_of(&third.credential), "third--secret");

    // The tenant's own files win over the application's once they appear.
    std::fs::write(tenant_directory.join("MICROSOFT_CLIENT_ID"), "tenant-app").expect("write");
    std::fs::write(
        tenant_directory.join("MICROSOFT_CLIENT_SECRET"),
        "tenant-secret",
    )
    .expect("write");
    let own = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(
        (own.client_id.as_str(), own.source.as_str()),
        ("tenant-app", "folder (tenant)")
    );
    std::fs::remove_dir_all(&root).expect("cleanup");
}

/// A `bao server -dev` on a free port, killed when dropped.
struct OpenBao {
    child: tokio::process::Child,
    address: String,
    token: String,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn bao_binary() -> PathBuf {
    std::env::var_os("ENTRA_SYNC_BAO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/bao"))
}

async fn start_openbao() -> OpenBao {
    let binary = bao_binary();
    assert!(
        binary.exists(),
        "OpenBao is not installed at {}; run `make test` (it installs it) or set ENTRA_SYNC_BAO_BIN",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let token = format!("root-{:016x}", rand::random::<u64>());
    let child = tokio::process::Command::new(&binary)
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start bao");
    let bao = OpenBao {
        child,
        address: format!("http://127.0.0.1:{port}"),
        token,
    };
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{}/v1/sys/health", bao.address))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return bao;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "OpenBao did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_secret(bao: &OpenBao, path: &str, data: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/secret/data/{path}", bao.address))
        .header("X-Vault-Token", &bao.token)
        .json(&serde_json::json!({ "data": data }))
        .send()
        .await
        .expect("write secret");
    assert!(response.status().is_success(), "{}", response.status());
}

fn vault(bao: &OpenBao, token: &str) -> VaultProvider {
    VaultProvider::new(VaultConfig {
        address: url::Url::parse(&bao.address).expect("url"),
        token: SecretString::from(token.to_owned()),
        mount: "secret".to_owned(),
        prefix: "entra-sync".to_owned(),
        cache_ttl: Duration::ZERO,
        request_timeout: Duration::from_secs(5),
        // The OpenBao dev server listens on loopback.
        allow_private_endpoints: true,
    })
    .expect("provider")
}

#[tokio::test]
async fn vault_kv_v2_on_a_real_openbao_server() {
    let bao = start_openbao().await;
    let tenant = Uuid::new_v4();
    let provider = Arc::new(vault(&bao, &bao.token));
    assert!(provider
        .get(SecretScope::Application, "MICROSOFT_CLIENT_ID")
        .await
        .expect("a missing secret is not an error")
        .is_none());

    put_secret(
        &bao,
        "entra-sync/app",
        serde_json::json!({"MICROSOFT_CLIENT_ID": "vault-app", "MICROSOFT_CLIENT_SECRET": "v1-secret"}),
    )
    .await;
    let resolver = AppCredentialResolver::new(
        vec![provider.clone() as Arc<dyn SecretProvider>],
        EnvironmentProvider::default(),
    );
    let first = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(
        (first.client_id.as_str(), first.source.as_str()),
        ("vault-app", "vault (application)")
    );
    assert_eq!(secret_of(&first.credential), "v1-secret");

    // A new version is used without a restart; the tenant's own secret then wins.
    put_secret(
        &bao,
        "entra-sync/app",
        serde_json::json!({"MICROSOFT_CLIENT_ID": "vault-app", "MICROSOFT_CLIENT_SECRET": "v2-secret"}),
    )
    .await;
    let second = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(secret_of(&second.credential), "v2-secret");
    put_secret(
        &bao,
        &format!("entra-sync/tenants/{tenant}"),
        serde_json::json!({"MICROSOFT_CLIENT_ID": "tenant-app", "MICROSOFT_CLIENT_SECRET": "tenant-secret"}),
    )
    .await;
    let own = resolver.resolve(tenant).await.expect("ok").expect("app");
    assert_eq!(
        (own.client_id.as_str(), own.source.as_str()),
        ("tenant-app", "vault (tenant)")
    );

    // A bad token is a configuration error that names the settings, not the token.
    let refused = vault(&bao, "not-the-token")
        .get(SecretScope::Application, "MICROSOFT_CLIENT_ID")
        .await
        .expect_err("refused");
    let text = refused.to_string();
    assert!(
        text.contains("VAULT_TOKEN") && !text.contains("not-the-token"),
        "{text}"
    );
}

fn vault_at(address: &str, allow_private_endpoints: bool) -> Result<VaultProvider, SecretsError> {
    VaultProvider::new(VaultConfig {
        address: url::Url::parse(address).expect("url"),
        token: SecretString::from("vault-token-value".to_owned()),
        mount: "secret".to_owned(),
        prefix: "entra-sync".to_owned(),
        cache_ttl: Duration::ZERO,
        request_timeout: Duration::from_secs(5),
        allow_private_endpoints,
    })
}

/// A server on loopback that answers every request with `status`, `extra` headers and `body`,
/// and counts the requests it got.
async fn answering_server(
    status: &'static str,
    extra: &'static str,
    body: &'static str,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (format!("http://localhost:{port}"), requests)
}

#[tokio::test]
async fn a_private_vault_address_is_refused_unless_allowed() {
    // An IP literal is refused when the provider is built.
    let error = vault_at("http://127.0.0.1:8200", false).expect_err("refused");
    assert!(matches!(error, SecretsError::Config { .. }), "{error:?}");
    assert!(error
        .to_string()
        .contains("ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS"));

    // A name is refused when it resolves, before anything is sent: the server never hears
    // from us, and its answer (which names a secret) cannot end up in the error.
    let (address, requests) = answering_server(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"data":{"data":{"MICROSOFT_CLIENT_SECRET":"private-answer"}}}"#,
    )
    .await;
    let provider = vault_at(&address, false).expect("names are checked at connect time");
    let error = provider
        .get(SecretScope::Application, "MICROSOFT_CLIENT_SECRET")
        .await
        .expect_err("refused");
    assert!(matches!(error, SecretsError::Config { .. }), "{error:?}");
    assert!(!error.to_string().contains("private-answer"));
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Allowed explicitly, the same server is read.
    let provider = vault_at(&address, true).expect("allowed");
    let secret = provider
        .get(SecretScope::Application, "MICROSOFT_CLIENT_SECRET")
        .await
        .expect("read")
        .expect("present");
    assert_eq!(secret.expose_secret(), "private-answer");
}

#[tokio::test]
async fn the_vault_client_follows_no_redirect() {
    let (target, target_requests) = answering_server(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"data":{"data":{"MICROSOFT_CLIENT_SECRET":"redirected"}}}"#,
    )
    .await;
    let location: &'static str =
        Box::leak(format!("location: {target}/v1/secret/data/x\r\n").into_boxed_str());
    let (address, _) = answering_server("307 Temporary Redirect", location, "").await;
    let provider = vault_at(&address, true).expect("provider");
    let error = provider
        .get(SecretScope::Application, "MICROSOFT_CLIENT_SECRET")
        .await
        .expect_err("a redirect is an error");
    assert!(
        matches!(error, SecretsError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("redirected"));
    assert_eq!(
        target_requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the token went to the redirect target"
    );
}
