//! The controllers `lockstep run` starts: wiring of watches to reconcilers. The reconcilers live in their
//! own modules ([`gate`]); the pure status logic beside them ([`gate_status`]).

mod backoff;
mod commit_dates;
mod credentials;
mod error;
mod events;
pub mod gate;
pub mod gate_status;
#[cfg(test)]
mod gate_tests;
mod memory;
mod reconcile_io;
mod status_write;
mod token_cache;
pub mod trace;
#[cfg(test)]
mod trace_tests;

use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

pub use error::Error;
pub use events::EventRecorders;
pub use gate::{
    BuildsCache, GateConfig, GateContext, WebhookHints, FIELD_MANAGER, REQUESTED_AT_ANNOTATION,
};
pub use reconcile_io::ReconcileIo;

use crate::ado::AdoClient;
use crate::crd::{PipelineGate, ServiceTrace, WorkloadKind};
use crate::http::Readiness;
use crate::telemetry::Metrics;
use crate::trace::deployed::DeployedKind;

/// Reconciles in parallel. They mostly wait on I/O; enough of them that gates sharing a pipeline, which
/// requeue at the same instant, all finish within the poll cache's TTL and keep sharing one request.
const RECONCILE_CONCURRENCY: u16 = 32;

/// How long in-flight reconciles may run on after shutdown began.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// What the controllers share, built once per process (survives losing and regaining leadership).
#[derive(Clone)]
pub struct Shared {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub metrics: Arc<Metrics>,
    pub gate_config: GateConfig,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    /// Reported on Events, to tell replicas apart.
    pub identity: String,
    pub readiness: Readiness,
    /// Present when the webhook receiver runs in this process.
    pub webhook_hints: Option<WebhookHints>,
}

/// Run the PipelineGate controller until `shutdown` resolves; in-flight reconciles finish first.
///
/// Watches every change of every gate (`any_semantic`, no predicates: a `lockstep.dev/requested-at`
/// annotation change must trigger a reconcile even though it does not bump `generation`), and the Secrets
/// in the watched namespaces, mapped to the gates that reference them.
pub async fn run_gate_controller(
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (gates, secrets): (Api<PipelineGate>, Api<Secret>) = match &shared.namespace {
        Some(ns) => (
            Api::namespaced(shared.client.clone(), ns),
            Api::namespaced(shared.client.clone(), ns),
        ),
        None => (
            Api::all(shared.client.clone()),
            Api::all(shared.client.clone()),
        ),
    };
    // The controller's cache holds every gate for the life of the process; managedFields are most of a
    // gate's size and nothing here reads them (status is written by server-side apply, which the API
    // server resolves), so they are dropped on the way in.
    let (store, writer) = reflector::store();
    let gate_stream = reflector(
        writer,
        watcher::watcher(gates, watcher::Config::default().any_semantic()).modify(|gate| {
            gate.managed_fields_mut().clear();
        }),
    )
    .applied_objects();
    let controller = Controller::for_stream(gate_stream, store.clone());
    let mapper_store = store.clone();
    let mut ctx = GateContext::new(reconcile_io(&shared), store.clone());
    if let Some(hints) = shared.webhook_hints.clone() {
        ctx = ctx.with_webhook_hints(hints);
    }
    let ctx = Arc::new(ctx);
    let tokens_ctx = ctx.clone();

    let (first_list, mark_ready) = ready_after_first_list(&store, "PipelineGates", &shared);

    let shutdown = shutdown.shared();
    let running = controller
        .watches(
            secrets,
            watcher::Config::default(),
            move |secret: Secret| {
                // Before the reconciles this change triggers run: they must read the new PAT.
                tokens_ctx.io.tokens.invalidate_secret(&secret);
                gate::gates_using_secret(&mapper_store, &secret)
            },
        )
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .graceful_shutdown_on(shutdown.clone())
        .run(gate::reconcile, gate::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Logged by error_policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                // A trigger for a gate that was deleted meanwhile: nothing to do.
                Err(controller::Error::ObjectNotFound(obj)) => debug!(gate = %obj, "gate is gone"),
                Err(other) => warn!(error = %other, "PipelineGate controller"),
                Ok(_) => {}
            }
        });
    stop_bounded(running, shutdown, &first_list).await;
    mark_ready.abort();
    info!("PipelineGate controller stopped");
}

/// What one controller's reconciler talks to. Each controller has its own Event recorders (the identity
/// tells replicas apart in `kubectl describe`) and its own Secret reads (invalidated by its own Secret
/// watch); the rest is shared by the whole process.
fn reconcile_io(shared: &Shared) -> ReconcileIo {
    ReconcileIo {
        client: shared.client.clone(),
        ado: shared.ado.clone(),
        cache: shared.cache.clone(),
        recorders: EventRecorders::new(
            &shared.client,
            &Reporter {
                controller: "lockstep".to_string(),
                instance: Some(shared.identity.clone()),
            },
        ),
        tokens: token_cache::TokenCache::new(shared.gate_config.secret_cache_ttl),
        metrics: shared.metrics.clone(),
        config: shared.gate_config.clone(),
    }
}

/// Watch `store` (named `what`) for its first list and mark the process ready then. The returned task is
/// aborted when the controller stops, so a controller that never listed never marks readiness.
fn ready_after_first_list<K>(
    store: &Store<K>,
    what: &'static str,
    shared: &Shared,
) -> (FirstList, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let first_list = FirstList::watch(store.clone(), what);
    let readiness = shared.readiness.clone();
    let waiting = first_list.clone();
    let mark_ready = tokio::spawn(async move {
        waiting.wait().await;
        readiness.set_ready(true);
    });
    (first_list, mark_ready)
}

/// Whether a controller's store has completed its first list.
///
/// Polled rather than awaited once: the store's readiness signal keeps a single waker, and the
/// controller's own wait for it takes that slot, so a second waiter might never be woken.
#[derive(Clone)]
pub struct FirstList(Arc<AtomicBool>, Arc<tokio::sync::Notify>);

impl FirstList {
    /// Start watching `store` (named `what` in the log line) in the background.
    pub fn watch<K>(store: Store<K>, what: &'static str) -> Self
    where
        K: kube::Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let me = Self(
            Arc::new(AtomicBool::new(false)),
            Arc::new(tokio::sync::Notify::new()),
        );
        let done = me.clone();
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => {
                        info!("first list of {what} complete");
                        done.0.store(true, Ordering::Release);
                        done.1.notify_waiters();
                        return;
                    }
                    Ok(Err(_)) => return,
                    // Nobody is interested any more (the controller stopped before its first list).
                    Err(_) if Arc::strong_count(&done.0) == 1 => return,
                    Err(_) => {}
                }
            }
        });
        me
    }

    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Resolves once the first list completed.
    pub async fn wait(&self) {
        loop {
            let notified = self.1.notified();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

/// Drive a controller's `running` future, bounding how long it may take once `shutdown` resolves.
///
/// kube-runtime holds its runner until the first list succeeds, and graceful shutdown waits for the
/// runner; with the API server unreachable that is forever (the shutdown trap in STACK.md). So after
/// shutdown: before the first list nothing can be in flight, so stop at once; otherwise give in-flight
/// reconciles [`IN_FLIGHT_GRACE`] to finish.
pub async fn stop_bounded(
    running: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
    first_list: &FirstList,
) {
    let deadline = async {
        shutdown.await;
        if first_list.is_done() {
            tokio::time::sleep(IN_FLIGHT_GRACE).await;
        }
    };
    tokio::select! {
        () = running => {}
        () = deadline => warn!("controller still busy after shutdown; abandoning in-flight reconciles"),
    }
}

/// `Api::all` or `Api::namespaced`, per `--namespace`.
fn scoped<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn scoped_dynamic(
    client: &kube::Client,
    namespace: &Option<String>,
    resource: &ApiResource,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Whether the cluster serves `resource` and lockstep may list it: Flux and Argo CD are optional, and a
/// watch on an API that is not there would only fail and retry forever.
async fn can_watch(api: &Api<DynamicObject>, what: &str) -> bool {
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(e) => {
            info!(api = what, error = %e, "not watching {what}: ServiceTraces that reference one are still re-read every interval");
            false
        }
    }
}

/// Watch the workloads of type `W` (of `kind`), so a rollout re-traces the traces whose `spec.deployed`
/// names the workload.
fn watch_workloads<W>(
    controller: Controller<ServiceTrace>,
    client: &kube::Client,
    namespace: &Option<String>,
    store: &Store<ServiceTrace>,
    kind: WorkloadKind,
) -> Controller<ServiceTrace>
where
    W: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + 'static,
{
    let store = store.clone();
    controller.watches(
        scoped::<W>(client, namespace),
        watcher::Config::default(),
        move |o: W| {
            trace::traces_deployed_on(
                &store,
                DeployedKind::Workload(kind),
                o.meta().namespace.as_deref(),
                o.meta().name.as_deref(),
            )
        },
    )
}

/// Run the ServiceTrace controller until `shutdown` resolves; in-flight reconciles finish first.
///
/// Besides the traces and their Secrets it watches the objects traces read their deployed revision from
/// (Flux Kustomizations and Argo CD Applications when the cluster serves those APIs; Deployments,
/// StatefulSets, DaemonSets), so a sync or a rollout re-traces at once instead of at the next poll. All of
/// these are read-only: get, list, watch.
pub async fn run_trace_controller(
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = &shared.client;
    let ns = &shared.namespace;
    let controller = Controller::new(
        scoped::<ServiceTrace>(client, ns),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    let ctx = Arc::new(trace::TraceContext::new(
        reconcile_io(&shared),
        store.clone(),
    ));

    let secrets_store = store.clone();
    let tokens_ctx = ctx.clone();
    let mut controller = controller.watches(
        scoped::<Secret>(client, ns),
        watcher::Config::default(),
        move |secret: Secret| {
            // Before the reconciles this change triggers run: they must read the new PAT.
            tokens_ctx.io.tokens.invalidate_secret(&secret);
            trace::traces_using_secret(&secrets_store, &secret)
        },
    );
    for (kind, resource) in [
        (
            DeployedKind::FluxKustomization,
            trace::flux_kustomization_resource(),
        ),
        (
            DeployedKind::ArgoApplication,
            trace::argo_application_resource(),
        ),
    ] {
        let api = scoped_dynamic(client, ns, &resource);
        if can_watch(&api, kind.kind_name()).await {
            let s = store.clone();
            controller = controller.watches_with(
                api,
                resource,
                watcher::Config::default(),
                move |o: DynamicObject| {
                    trace::traces_deployed_on(
                        &s,
                        kind,
                        o.metadata.namespace.as_deref(),
                        o.metadata.name.as_deref(),
                    )
                },
            );
        }
    }
    let controller =
        watch_workloads::<Deployment>(controller, client, ns, &store, WorkloadKind::Deployment);
    let controller =
        watch_workloads::<StatefulSet>(controller, client, ns, &store, WorkloadKind::StatefulSet);
    let controller =
        watch_workloads::<DaemonSet>(controller, client, ns, &store, WorkloadKind::DaemonSet);

    let (first_list, mark_ready) = ready_after_first_list(&store, "ServiceTraces", &shared);
    let shutdown = shutdown.shared();
    let running = controller
        .with_config(controller::Config::default().concurrency(8))
        .graceful_shutdown_on(shutdown.clone())
        .run(trace::reconcile, trace::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Logged by error_policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(trace = %obj, "trace is gone")
                }
                Err(other) => warn!(error = %other, "ServiceTrace controller"),
                Ok(_) => {}
            }
        });
    // Same shutdown bound as the gate controller: without it an unreachable API server before the
    // first list keeps the process alive after SIGTERM (STACK.md's shutdown trap).
    stop_bounded(running, shutdown, &first_list).await;
    mark_ready.abort();
    info!("ServiceTrace controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;

    #[tokio::test]
    async fn first_list_resolves_once_the_store_is_ready() {
        let mut writer = Writer::<PipelineGate>::default();
        let first = FirstList::watch(writer.as_reader(), "PipelineGates");
        assert!(!first.is_done());
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::timeout(Duration::from_secs(5), first.wait())
            .await
            .expect("first list noticed");
        assert!(first.is_done());
    }

    #[tokio::test]
    async fn shutdown_before_the_first_list_stops_at_once() {
        let writer = Writer::<PipelineGate>::default();
        let first = FirstList::watch(writer.as_reader(), "PipelineGates");
        // A controller stuck before its first list never finishes on its own.
        let stopped = tokio::time::timeout(
            Duration::from_secs(2),
            stop_bounded(std::future::pending(), async {}, &first),
        )
        .await;
        assert!(stopped.is_ok());
    }

    #[tokio::test]
    async fn a_controller_that_finishes_is_not_cut_short() {
        let writer = Writer::<PipelineGate>::default();
        let first = FirstList::watch(writer.as_reader(), "PipelineGates");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let running = async move {
            let _ = rx.await;
            flag.store(true, Ordering::SeqCst);
        };
        tx.send(()).unwrap();
        stop_bounded(running, std::future::pending(), &first).await;
        assert!(finished.load(Ordering::SeqCst));
    }
}
