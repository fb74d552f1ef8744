//! The request log names routes, never the raw URI: OAuth codes and states in a callback's
//! query stay out of logs. In its own test binary because it installs a thread-local tracing
//! subscriber, and tracing's per-callsite interest cache is shared with whatever other tests
//! run at the same time in the same process.

mod support;

use axum::http::Method;
use sqlx::PgPool;

use support::*;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Text logs, then the JSON format the containers use (`ENTRA_SYNC_LOG_FORMAT=json`: every
/// line one JSON object) — one after the other in one test, because two tests installing
/// subscribers at the same time disturb each other's callsite interest (see above).
#[sqlx::test(migrations = "../../migrations")]
async fn request_logs_name_routes_not_secrets(pool: PgPool) {
    let app = TestApp::new(pool);
    let world = world(&app).await;
    request_logs_hold_no_secrets(&app, &world, LogFormat::Text).await;
    request_logs_hold_no_secrets(&app, &world, LogFormat::Json).await;
}

#[derive(Clone, Copy, PartialEq)]
enum LogFormat {
    Text,
    Json,
}

async fn request_logs_hold_no_secrets(app: &TestApp, world: &World, format: LogFormat) {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false);
    let dispatch = match format {
        LogFormat::Text => tracing::Dispatch::new(builder.finish()),
        LogFormat::Json => tracing::Dispatch::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
    };
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let secret_code = "code-SECRET-0123456789";
    let secret_state = "state-SECRET-9876543210";
    app.call(
        Method::GET,
        &format!("/auth/oauth2/microsoft/callback?code={secret_code}&state={secret_state}"),
        None,
        None,
    )
    .await;
    app.get(
        &format!("/api/v1/contacts/{}/history", world.contact_a),
        &world.reader,
    )
    .await;
    let logs = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
    if format == LogFormat::Json {
        for line in logs.lines().filter(|line| !line.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not one JSON object per line ({error}): {line}"));
            assert!(value.is_object(), "{line}");
        }
    }
    assert!(logs.contains("/auth/oauth2/microsoft/callback"), "{logs}");
    assert!(
        logs.contains("/api/v1/contacts/{contact_id}/history"),
        "{logs}"
    );
    assert!(
        !logs.contains(secret_code),
        "the OAuth code was logged: {logs}"
    );
    assert!(
        !logs.contains(secret_state),
        "the OAuth state was logged: {logs}"
    );
    assert!(
        !logs.contains(&world.reader),
        "an API key was logged: {logs}"
    );
}
