//! The HTTP receiver: `POST /hooks/azure-devops`.
//!
//! Order of checks, each answering before the next is attempted, so bad input changes nothing:
//! authentication (401) → content type (415) → body size (413) → JSON (400) → test delivery or unknown
//! event (200, ignored) → duplicate event id (200) → routing through the index → annotation patches.
//!
//! The patches happen before the answer so that a Kubernetes outage is reported as 503, which Azure DevOps
//! retries (1 s, 2 s, 4 s … for about three minutes), instead of a 202 for a hint that was lost. They run
//! concurrently and under a short deadline, so a healthy delivery is answered in milliseconds. Nothing here
//! ever answers 410 (Azure DevOps disables the subscription on 410) or 500 (it puts the subscription on
//! probation, during which events are dropped).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::auth::WebhookAuth;
use super::dedup::{Claim, EventDedup};
use super::index::HintIndex;
use super::metrics::WebhookMetrics;
use super::payload::{parse_event, EventKind, PayloadError};
use crate::crd::{PipelineGate, ServiceTrace};

pub const HOOK_PATH: &str = "/hooks/azure-devops";
/// Annotation whose change makes the controller reconcile an object (Flux's `requestedAt` pattern).
pub const REQUESTED_AT_ANNOTATION: &str = "lockstep.dev/requested-at";
/// Azure DevOps caps payloads at 2 MB; anything larger is not a service hook.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Field manager of the annotation patches (the status manager is `lockstep`).
pub const FIELD_MANAGER: &str = "lockstep-webhook";

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub body_limit: usize,
    /// Deadline for annotating every affected object; past it the delivery is answered 503.
    pub patch_timeout: Duration,
    /// Concurrent patches per delivery.
    pub patch_concurrency: usize,
    pub dedup_capacity: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            patch_timeout: Duration::from_secs(5),
            patch_concurrency: 16,
            dedup_capacity: super::dedup::DEFAULT_CAPACITY,
        }
    }
}

/// Everything a delivery needs; cheap to clone.
#[derive(Clone)]
pub struct WebhookState {
    shared: Arc<Shared>,
}

struct Shared {
    client: kube::Client,
    index: Arc<HintIndex>,
    auth: WebhookAuth,
    metrics: WebhookMetrics,
    dedup: EventDedup,
    config: WebhookConfig,
}

impl WebhookState {
    pub fn new(
        client: kube::Client,
        index: Arc<HintIndex>,
        auth: WebhookAuth,
        metrics: WebhookMetrics,
    ) -> Self {
        Self::with_config(client, index, auth, metrics, WebhookConfig::default())
    }

    pub fn with_config(
        client: kube::Client,
        index: Arc<HintIndex>,
        auth: WebhookAuth,
        metrics: WebhookMetrics,
        config: WebhookConfig,
    ) -> Self {
        let dedup = EventDedup::new(config.dedup_capacity);
        Self {
            shared: Arc::new(Shared {
                client,
                index,
                auth,
                metrics,
                dedup,
                config,
            }),
        }
    }

    pub fn index(&self) -> &Arc<HintIndex> {
        &self.shared.index
    }

    pub fn metrics(&self) -> &WebhookMetrics {
        &self.shared.metrics
    }
}

/// The receiver's routes. Other methods on the path get axum's 405.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(HOOK_PATH, post(receive))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen for webhooks on {addr}: {source}; choose a free --webhook-addr")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook server stopped: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the webhook server task panicked or was cancelled")]
    Task,
}

/// A running receiver.
pub struct WebhookServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl WebhookServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Wait until the server has stopped (after `shutdown` resolved and in-flight deliveries finished).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Serve(e)),
            Err(_) => Err(ServeError::Task),
        }
    }
}

/// Bind `addr` and serve the receiver on a spawned task until `shutdown` resolves; in-flight deliveries
/// are completed (graceful shutdown).
pub async fn serve(
    addr: SocketAddr,
    state: WebhookState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WebhookServer, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    tracing::info!(%local_addr, path = HOOK_PATH, "webhook receiver listening");
    Ok(WebhookServer { local_addr, task })
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Body) -> Response {
    let s = &state.shared;

    if let Err(failure) = s.auth.check(&headers) {
        s.metrics.record_rejection(failure.as_label());
        tracing::debug!(
            reason = failure.as_label(),
            "webhook delivery refused: authentication"
        );
        let mut resp = reply(
            StatusCode::UNAUTHORIZED,
            "rejected",
            "missing or wrong credentials",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="lockstep""#),
        );
        return resp;
    }

    if !is_json(&headers) {
        s.metrics.record_rejection("unsupported_media_type");
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "rejected",
            "Content-Type must be application/json",
        );
    }

    let bytes = match read_limited(body, s.config.body_limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            s.metrics.record_rejection("payload_too_large");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "rejected",
                "body exceeds 2 MiB",
            );
        }
        Err(BodyError::Unreadable) => {
            s.metrics.record_rejection("unreadable_body");
            return reply(
                StatusCode::BAD_REQUEST,
                "rejected",
                "the request body could not be read",
            );
        }
    };

    let event = match parse_event(&bytes) {
        Ok(e) => e,
        Err(e) => {
            s.metrics.record_rejection("malformed_payload");
            let reason = match &e {
                PayloadError::Malformed(_) => "malformed or truncated JSON",
                PayloadError::NotAnEvent(_) => "not an Azure DevOps service-hook event",
            };
            tracing::debug!(error = %e, "webhook delivery refused: payload");
            return reply(StatusCode::BAD_REQUEST, "rejected", reason);
        }
    };
    let label = event.kind.as_label();

    if event.is_test {
        s.metrics.record_event(label, "test");
        return reply(StatusCode::OK, "ignored", "test delivery");
    }
    if event.kind == EventKind::Unknown {
        s.metrics.record_event(label, "ignored");
        return reply(StatusCode::OK, "ignored", "event type not used by lockstep");
    }
    if !s.index.is_synced() {
        // Routing against a half-loaded index could drop the hint; Azure DevOps retries a 503 in a second.
        s.metrics.record_event(label, "unavailable");
        return unavailable("lockstep is still loading its objects");
    }

    let claimed_id = match event.id.as_deref() {
        Some(id) => match s.dedup.claim(id) {
            Claim::Duplicate => {
                s.metrics.record_duplicate();
                s.metrics.record_event(label, "duplicate");
                return reply(StatusCode::OK, "duplicate", "event already processed");
            }
            Claim::New => Some(id),
            Claim::Untracked => None,
        },
        None => None,
    };

    let affected = s.index.affected_by(&event.targets);
    if affected.is_empty() {
        s.metrics.record_event(label, "unmatched");
        tracing::debug!(event_type = %event.event_type, targets = ?event.targets, "webhook names nothing lockstep follows");
        return reply(
            StatusCode::OK,
            "ignored",
            "no PipelineGate or ServiceTrace follows this",
        );
    }

    let started = Instant::now();
    let requested_at = jiff::Timestamp::now().to_string();
    let patched = tokio::time::timeout(s.config.patch_timeout, async {
        let gates = annotate_all::<PipelineGate>(s, &affected.gates, &requested_at);
        let traces = annotate_all::<ServiceTrace>(s, &affected.traces, &requested_at);
        let (g, t) = futures::join!(gates, traces);
        g.and(t)
    })
    .await;
    s.metrics.observe_patch(started.elapsed());

    match patched {
        Ok(Ok(())) => {
            s.metrics.record_event(label, "accepted");
            s.metrics
                .record_hinted("PipelineGate", affected.gates.len());
            s.metrics
                .record_hinted("ServiceTrace", affected.traces.len());
            tracing::info!(
                event_id = event.id.as_deref().unwrap_or(""),
                event_type = %event.event_type,
                gates = affected.gates.len(),
                traces = affected.traces.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "webhook hint delivered"
            );
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "outcome": "accepted",
                    "pipelineGates": affected.gates.len(),
                    "serviceTraces": affected.traces.len(),
                })),
            )
                .into_response()
        }
        failed => {
            // Let Azure DevOps' retry of this event through.
            if let Some(id) = claimed_id {
                s.dedup.release(id);
            }
            s.metrics.record_event(label, "unavailable");
            let detail = match failed {
                Err(_) => format!("timed out after {:?}", s.config.patch_timeout),
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => String::new(),
            };
            tracing::warn!(event_type = %event.event_type, error = %detail, "could not annotate objects for a webhook; answering 503 so Azure DevOps retries");
            unavailable("the Kubernetes API is unavailable")
        }
    }
}

async fn annotate_all<K>(
    s: &Shared,
    objects: &[ObjectRef<K>],
    requested_at: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: requested_at}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    // Futures are built up front (not in a stream combinator's closure) so no higher-ranked lifetime
    // over `&ObjectRef` ends up in the handler's future type, which axum requires to be `Send`.
    let pending: Vec<_> = objects
        .iter()
        .map(|o| annotate_one(s, o, &patch, &params))
        .collect();
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(pending)
        .buffer_unordered(s.config.patch_concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn annotate_one<K>(
    s: &Shared,
    object: &ObjectRef<K>,
    patch: &serde_json::Value,
    params: &PatchParams,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match object.namespace.as_deref() {
        Some(ns) => Api::namespaced(s.client.clone(), ns),
        None => Api::default_namespaced(s.client.clone()),
    };
    match api.patch(&object.name, params, &Patch::Merge(patch)).await {
        Ok(_) => {
            s.index.record_hint(object, Instant::now());
            Ok(())
        }
        // Deleted since the index saw it: nothing left to hint.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

enum BodyError {
    TooLarge,
    Unreadable,
}

async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, BodyError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Unreadable),
    }
}

fn reply(status: StatusCode, outcome: &str, reason: &str) -> Response {
    (status, Json(json!({"outcome": outcome, "reason": reason}))).into_response()
}

fn unavailable(reason: &str) -> Response {
    let mut resp = reply(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
