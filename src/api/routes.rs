//! The HTTP routes: JSON under `/api/v1`, the change stream, and the dashboard's files.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use super::assets;
use super::auth::{AuthError, Authenticator, Caller, Kind, Verb};
use super::caches::ApiCaches;
use super::query::{Filters, QueryError, RawQuery};
use super::verdict::Verdict;
use super::view;
use super::watch::{snapshot, Change, ChangeFeed, SnapshotItem};
use crate::crd::{PipelineGate, ServiceTrace};

/// Concurrent change-stream clients; more get 503, so open streams cannot exhaust memory.
pub const MAX_WATCH_CLIENTS: usize = 256;
/// A stream is closed after this long and the client reconnects: its permissions are checked afresh
/// and no connection lives forever.
const MAX_WATCH_DURATION: Duration = Duration::from_secs(10 * 60);
const API_VERSION: &str = "lockstep.dev/v1alpha1";

/// Everything a request needs.
#[derive(Clone)]
pub struct ApiState {
    pub caches: ApiCaches,
    pub auth: Arc<Authenticator>,
    pub feed: ChangeFeed,
    pub watch_clients: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

/// Why a request was not answered with data.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("lockstep has not listed {0} yet (starting, or this replica is not serving); retry in a second")]
    NotReady(&'static str),
    #[error("too many open change streams ({MAX_WATCH_CLIENTS}); retry later")]
    TooManyStreams,
    #[error("no such route: see docs/api.md for the API's routes")]
    NoRoute,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Auth(AuthError::MissingToken | AuthError::InvalidToken) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::Auth(AuthError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Query(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::NotReady(_) | ApiError::TooManyStreams => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = Json(json!({"code": status.as_u16(), "error": self.to_string()}));
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lockstep\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/pipelinegates", get(list_gates_all))
        .route("/api/v1/servicetraces", get(list_traces_all))
        .route("/api/v1/namespaces/{ns}/pipelinegates", get(list_gates_ns))
        .route(
            "/api/v1/namespaces/{ns}/pipelinegates/{name}",
            get(get_gate),
        )
        .route(
            "/api/v1/namespaces/{ns}/pipelinegates/{name}/verdict",
            get(get_verdict),
        )
        .route("/api/v1/namespaces/{ns}/servicetraces", get(list_traces_ns))
        .route(
            "/api/v1/namespaces/{ns}/servicetraces/{name}",
            get(get_trace),
        )
        .route("/api/v1/watch", get(watch_changes))
        .fallback(|| async { ApiError::NoRoute })
        .layer(axum::middleware::map_response(no_store));
    Router::new()
        .merge(assets::router())
        .merge(api)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The dashboard loads only its own files and talks only to this origin; nothing may frame it.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn gates_store(state: &ApiState) -> Result<Store<PipelineGate>, ApiError> {
    state
        .caches
        .gates
        .ready_store()
        .ok_or(ApiError::NotReady("PipelineGates"))
}

fn traces_store(state: &ApiState) -> Result<Store<ServiceTrace>, ApiError> {
    state
        .caches
        .traces
        .ready_store()
        .ok_or(ApiError::NotReady("ServiceTraces"))
}

/// The namespaces of `objects` the caller may list `kind` in: all of them when it may list across
/// namespaces, else each one asked separately, so a caller sees exactly the namespaces RBAC grants it.
async fn listable<K: kube::Resource>(
    auth: &Authenticator,
    caller: &Caller,
    kind: Kind,
    namespace: Option<&str>,
    objects: &[Arc<K>],
) -> Result<Option<BTreeSet<String>>, ApiError> {
    if let Some(ns) = namespace {
        auth.require(caller, Verb::List, kind, Some(ns), None)
            .await?;
        return Ok(Some(BTreeSet::from([ns.to_string()])));
    }
    if auth.allowed(caller, Verb::List, kind, None, None).await? {
        return Ok(None);
    }
    let namespaces: BTreeSet<String> = objects
        .iter()
        .filter_map(|o| o.meta().namespace.clone())
        .collect();
    let mut allowed = BTreeSet::new();
    for ns in namespaces {
        if auth
            .allowed(caller, Verb::List, kind, Some(&ns), None)
            .await?
        {
            allowed.insert(ns);
        }
    }
    Ok(Some(allowed))
}

fn list_body(kind: &str, mut items: Vec<(String, String, Value)>) -> Json<Value> {
    items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Json(json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "items": items.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
    }))
}

/// How one kind is listed: where its store is, which filters apply, how an object is shown.
struct Listing<K: kube::Resource<DynamicType = ()> + 'static> {
    kind: Kind,
    list_kind: &'static str,
    store: fn(&ApiState) -> Result<Store<K>, ApiError>,
    matches: fn(&Filters, &K) -> bool,
    view: fn(&K) -> Value,
}

const GATES: Listing<PipelineGate> = Listing {
    kind: Kind::PipelineGates,
    list_kind: "PipelineGateList",
    store: gates_store,
    matches: Filters::gate_matches,
    view: view::gate,
};

const TRACES: Listing<ServiceTrace> = Listing {
    kind: Kind::ServiceTraces,
    list_kind: "ServiceTraceList",
    store: traces_store,
    matches: Filters::trace_matches,
    view: view::trace,
};

/// Authenticate, then the objects of `listing` in the namespaces the caller may list, filtered.
async fn list_objects<K>(
    listing: &Listing<K>,
    state: ApiState,
    headers: HeaderMap,
    path_ns: Option<String>,
    raw: RawQuery,
) -> Result<Json<Value>, ApiError>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let caller = state.auth.authenticate(&headers).await?;
    let filters = Filters::parse(raw)?;
    let namespace = path_ns.or(filters.namespace.clone());
    let store = (listing.store)(&state)?;
    let all = store.state();
    let scope = listable(
        &state.auth,
        &caller,
        listing.kind,
        namespace.as_deref(),
        &all,
    )
    .await?;
    let items = all
        .iter()
        .filter(|o| {
            scope
                .as_ref()
                .is_none_or(|s| o.namespace().is_some_and(|ns| s.contains(&ns)))
        })
        .filter(|o| (listing.matches)(&filters, o))
        .map(|o| {
            (
                o.namespace().unwrap_or_default(),
                o.name_any(),
                (listing.view)(o),
            )
        })
        .collect();
    Ok(list_body(listing.list_kind, items))
}

async fn list_gates(
    state: ApiState,
    headers: HeaderMap,
    path_ns: Option<String>,
    raw: RawQuery,
) -> Result<Json<Value>, ApiError> {
    list_objects(&GATES, state, headers, path_ns, raw).await
}

async fn list_traces(
    state: ApiState,
    headers: HeaderMap,
    path_ns: Option<String>,
    raw: RawQuery,
) -> Result<Json<Value>, ApiError> {
    list_objects(&TRACES, state, headers, path_ns, raw).await
}

async fn list_gates_all(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(raw): Query<RawQuery>,
) -> Result<Json<Value>, ApiError> {
    list_gates(state, headers, None, raw).await
}

async fn list_gates_ns(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(raw): Query<RawQuery>,
) -> Result<Json<Value>, ApiError> {
    list_gates(state, headers, Some(ns), raw).await
}

async fn list_traces_all(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(raw): Query<RawQuery>,
) -> Result<Json<Value>, ApiError> {
    list_traces(state, headers, None, raw).await
}

async fn list_traces_ns(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(raw): Query<RawQuery>,
) -> Result<Json<Value>, ApiError> {
    list_traces(state, headers, Some(ns), raw).await
}

/// Authorize before looking the gate up, so a caller without access cannot learn which gates exist.
async fn find_gate(
    state: &ApiState,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
) -> Result<Arc<PipelineGate>, ApiError> {
    let caller = state.auth.authenticate(headers).await?;
    state
        .auth
        .require(
            &caller,
            Verb::Get,
            Kind::PipelineGates,
            Some(ns),
            Some(name),
        )
        .await?;
    gates_store(state)?
        .get(&ObjectRef::new(name).within(ns))
        .ok_or_else(|| ApiError::NotFound {
            kind: "PipelineGate",
            namespace: ns.to_string(),
            name: name.to_string(),
        })
}

async fn get_gate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let gate = find_gate(&state, &headers, &ns, &name).await?;
    Ok(Json(view::gate(&gate)))
}

async fn get_verdict(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Verdict>, ApiError> {
    let gate = find_gate(&state, &headers, &ns, &name).await?;
    Ok(Json(Verdict::of(&gate)))
}

async fn get_trace(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.authenticate(&headers).await?;
    state
        .auth
        .require(
            &caller,
            Verb::Get,
            Kind::ServiceTraces,
            Some(&ns),
            Some(&name),
        )
        .await?;
    let trace = traces_store(&state)?
        .get(&ObjectRef::new(&name).within(&ns))
        .ok_or_else(|| ApiError::NotFound {
            kind: "ServiceTrace",
            namespace: ns.clone(),
            name: name.clone(),
        })?;
    Ok(Json(view::trace(&trace)))
}

#[derive(serde::Deserialize)]
struct WatchQuery {
    namespace: Option<String>,
}

/// One client's stream: a snapshot of what it may read, `SYNCED`, then live changes.
struct Stream {
    auth: Arc<Authenticator>,
    caller: Caller,
    namespace: Option<String>,
    snapshot: std::collections::VecDeque<SnapshotItem>,
    synced: bool,
    rx: broadcast::Receiver<Arc<Change>>,
    shutdown: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    async fn may_watch(&self, kind: Kind, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self
                .auth
                .allowed(&self.caller, Verb::Watch, kind, Some(namespace), None)
                .await
                .unwrap_or(false)
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.done {
            return None;
        }
        while let Some(item) = self.snapshot.pop_front() {
            if self.may_watch(item.kind(), &item.namespace()).await {
                let event = Event::default().data(item.data());
                return Some((Ok(event), self));
            }
        }
        if !self.synced {
            self.synced = true;
            return Some((Ok(Event::default().data(r#"{"type":"SYNCED"}"#)), self));
        }
        loop {
            enum Woken {
                Stop,
                Expired,
                Received(Result<Arc<Change>, broadcast::error::RecvError>),
            }
            let woken = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => Woken::Stop,
                _ = tokio::time::sleep_until(self.deadline) => Woken::Expired,
                received = self.rx.recv() => Woken::Received(received),
            };
            let received = match woken {
                Woken::Stop => return None,
                Woken::Expired => {
                    self.done = true;
                    let event = Event::default().data(
                        r#"{"type":"RECONNECT","message":"stream lifetime reached; reconnect"}"#,
                    );
                    return Some((Ok(event), self));
                }
                Woken::Received(received) => received,
            };
            match received {
                Ok(change) => {
                    if self.may_watch(change.kind, &change.namespace).await {
                        return Some((Ok(Event::default().data(change.data.clone())), self));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.done = true;
                    let data = json!({"type": "ERROR", "message": format!("this client fell {missed} changes behind and was disconnected; reconnect for a fresh snapshot")});
                    return Some((Ok(Event::default().data(data.to_string())), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

async fn watch_changes(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> Result<Response, ApiError> {
    let caller = state.auth.authenticate(&headers).await?;
    gates_store(&state)?;
    traces_store(&state)?;
    let namespace = q.namespace.filter(|n| !n.is_empty());
    if let Some(ns) = &namespace {
        let gates = state
            .auth
            .allowed(&caller, Verb::Watch, Kind::PipelineGates, Some(ns), None)
            .await?;
        if !gates {
            state
                .auth
                .require(&caller, Verb::Watch, Kind::ServiceTraces, Some(ns), None)
                .await?;
        }
    }
    let permit = state
        .watch_clients
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams)?;
    // Subscribe before taking the snapshot: a change between the two is sent twice, never lost.
    let rx = state.feed.subscribe();
    let stream = Stream {
        auth: state.auth.clone(),
        caller,
        snapshot: snapshot(&state.caches, namespace.as_deref()),
        namespace,
        synced: false,
        rx,
        shutdown: state.shutdown.clone(),
        deadline: tokio::time::Instant::from_std(Instant::now() + MAX_WATCH_DURATION),
        done: false,
        _permit: permit,
    };
    let events = futures::stream::unfold(stream, Stream::next);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
