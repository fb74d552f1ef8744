//! The API's per-request timeout and concurrency limit: at most `max_concurrent` requests are
//! handled at once, a request waits for a slot and for its answer within one deadline, and a
//! request that misses it gets 503 (`overloaded` when it never got a slot, `timeout` when its
//! handler ran too long) instead of holding a connection and a database transaction forever.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

#[derive(Clone, Debug)]
pub(crate) struct Limits {
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl Limits {
    pub(crate) fn new(timeout: Duration, max_concurrent: usize) -> Limits {
        Limits {
            timeout,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }
}

pub(crate) async fn enforce(
    State(limits): State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let permit = match tokio::time::timeout_at(deadline, limits.slots.clone().acquire_owned()).await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server is handling as many requests as it allows; try again shortly",
            )
            .into_response()
        }
    };
    let response = tokio::time::timeout_at(deadline, next.run(request)).await;
    drop(permit);
    match response {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request was not answered within {} s and was abandoned",
                limits.timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app(limits: Limits, release: Arc<tokio::sync::Notify>) -> Router {
        Router::new()
            .route(
                "/wait",
                get(move || {
                    let release = release.clone();
                    async move {
                        release.notified().await;
                        "done"
                    }
                }),
            )
            .route("/quick", get(|| async { "quick" }))
            .layer(axum::middleware::from_fn_with_state(limits, enforce))
    }

    async fn code(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        (
            status,
            value["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    fn get_request(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn a_handler_past_the_deadline_gets_503_timeout() {
        let release = Arc::new(tokio::sync::Notify::new());
        let app = app(Limits::new(Duration::from_millis(200), 4), release);
        let response = app.oneshot(get_request("/wait")).await.expect("response");
        assert_eq!(
            code(response).await,
            (StatusCode::SERVICE_UNAVAILABLE, "timeout".to_owned())
        );
    }

    #[tokio::test]
    async fn requests_beyond_the_concurrency_limit_get_503_overloaded() {
        let release = Arc::new(tokio::sync::Notify::new());
        // One slot, shared by two deadlines: the holder's far beyond the test's own, so it
        // keeps the slot until released, and the other requests' short, so they give up
        // waiting for it while it is held. (With one deadline for both, the holder, which
        // started first, timed out first and freed the slot whenever the two timers fell in
        // different ticks, and the loop below then never saw the slot taken.)
        let patient = Limits::new(Duration::from_secs(120), 1);
        let impatient = Limits {
            timeout: Duration::from_millis(200),
            slots: patient.slots.clone(),
        };
        let holder = tokio::spawn(app(patient, release.clone()).oneshot(get_request("/wait")));
        let app = app(impatient, release.clone());
        // Wait (with a deadline) until the first request holds the only slot.
        let limits_full = async {
            loop {
                let response = app
                    .clone()
                    .oneshot(get_request("/quick"))
                    .await
                    .expect("response");
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    return code(response).await;
                }
                tokio::task::yield_now().await;
            }
        };
        let refused = tokio::time::timeout(Duration::from_secs(30), limits_full)
            .await
            .expect("the slot was taken");
        assert_eq!(
            refused,
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded".to_owned())
        );
        release.notify_waiters();
        let _ = holder.await;
        // With the slot free again, requests are served.
        let response = app.oneshot(get_request("/quick")).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
