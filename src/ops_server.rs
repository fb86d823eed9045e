//! The operations HTTP server on `--metrics-addr`: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (the controller has listed its objects once, Flux's readiness rule; a standby
//! replica without the lease is ready too, or a rolling update of a leader-elected Deployment would never
//! finish).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Readiness shared between the controller (writer) and the probe (reader).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The router, separate from serving so tests can drive it without a socket.
pub fn ops_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState {
            registry,
            readiness,
        })
}

/// Serve until `shutdown` resolves.
pub async fn serve_ops(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, ops_router(registry, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first list of objects has not completed",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once() -> (String, Readiness, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let readiness = Readiness::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut registry = Registry::default();
        crate::telemetry::Metrics::register(&mut registry);
        tokio::spawn(serve_ops(
            listener,
            Arc::new(registry),
            readiness.clone(),
            async {
                let _ = rx.await;
            },
        ));
        (url, readiness, tx)
    }

    async fn get_status(url: &str) -> (u16, String) {
        let resp = reqwest::get(url).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn probes_and_metrics_answer() {
        let (url, readiness, stop) = serve_once().await;
        assert_eq!(get_status(&format!("{url}/healthz")).await.0, 200);
        assert_eq!(get_status(&format!("{url}/readyz")).await.0, 503);
        readiness.set_ready(true);
        assert_eq!(get_status(&format!("{url}/readyz")).await.0, 200);
        let (status, body) = get_status(&format!("{url}/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("lockstep_reconcile_duration_seconds"),
            "{body}"
        );
        stop.send(()).unwrap();
    }
}
