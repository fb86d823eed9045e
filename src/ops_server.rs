//! The operations HTTP server on `--metrics-addr`: `/metrics` (Prometheus text), `/healthz` (every
//! long-lived task is still running: a controller, the leader loop, the webhook receiver or its watches
//! that ended makes it 503, so the kubelet restarts the pod instead of leaving it alive and idle) and `/readyz` (the controller has listed its objects once, Flux's readiness rule; a standby
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

use crate::http_server::{serve_bounded, ConnectionLimits};

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

/// Liveness: healthy until some long-lived task that should run for the life of the process ended.
#[derive(Clone, Default)]
pub struct Liveness(Arc<std::sync::Mutex<Option<String>>>);

impl Liveness {
    /// Mark the process dead: `/healthz` answers 503 with `why` from now on (the first reason is kept).
    pub fn fail(&self, why: impl Into<String>) {
        let mut dead = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if dead.is_none() {
            let why = why.into();
            tracing::error!(reason = %why, "a long-lived task ended: /healthz fails so the pod is restarted");
            *dead = Some(why);
        }
    }

    /// Why the process is dead, if it is.
    pub fn failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
    liveness: Liveness,
}

/// The router, separate from serving so tests can drive it without a socket.
pub fn ops_router(registry: Arc<Registry>, readiness: Readiness, liveness: Liveness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(OpsState {
            registry,
            readiness,
            liveness,
        })
}

/// Scrapers and probes open few connections; anything beyond this is not a kubelet or a Prometheus.
const OPS_MAX_CONNECTIONS: usize = 64;

/// Serve until `shutdown` resolves, with the same connection bounds as the webhook receiver
/// ([`crate::http_server`]): a probe port that a stuck client could hold open would delay shutdown too.
pub async fn serve_ops(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    liveness: Liveness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = ConnectionLimits {
        max_connections: OPS_MAX_CONNECTIONS,
        ..ConnectionLimits::default()
    };
    serve_bounded(
        listener,
        ops_router(registry, readiness, liveness),
        limits,
        None,
        shutdown,
    )
    .await
}

async fn healthz(State(state): State<OpsState>) -> impl IntoResponse {
    match state.liveness.failure() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}; restart the process"),
        ),
    }
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
        let (url, readiness, _, stop) = serve_with_liveness().await;
        (url, readiness, stop)
    }

    async fn serve_with_liveness() -> (
        String,
        Readiness,
        Liveness,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let readiness = Readiness::default();
        let liveness = Liveness::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut registry = Registry::default();
        crate::telemetry::Metrics::register(&mut registry);
        tokio::spawn(serve_ops(
            listener,
            Arc::new(registry),
            readiness.clone(),
            liveness.clone(),
            async {
                let _ = rx.await;
            },
        ));
        (url, readiness, liveness, tx)
    }

    #[tokio::test]
    async fn healthz_fails_once_a_long_lived_task_ended() {
        let (url, _, liveness, stop) = serve_with_liveness().await;
        assert_eq!(get_status(&format!("{url}/healthz")).await.0, 200);
        liveness.fail("the PipelineGate controller ended");
        liveness.fail("a second reason is not kept");
        let (status, body) = get_status(&format!("{url}/healthz")).await;
        assert_eq!(status, 503);
        assert!(body.contains("PipelineGate controller ended"), "{body}");
        assert!(!body.contains("second"), "{body}");
        stop.send(()).unwrap();
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
