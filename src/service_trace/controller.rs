//! The ServiceTrace controller: which watches trigger a trace's reconcile, and its run loop.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tracing::info;

use super::deployed::DeployedKind;
use super::read::{argo_application_resource, flux_kustomization_resource};
use super::reconcile::{
    error_policy, reconcile, traces_deployed_on, traces_using_secret, TraceContext,
};
use super::KIND;
use crate::api::CacheSlot;
use crate::crd::{ServiceTrace, WorkloadKind};
use crate::reconciler::events::EVENT_FLUSH_GRACE;
use crate::reconciler::runtime::{
    can_watch, foreign_watch_config, log_result, ready_after_first_list, stop_bounded, CacheCompact,
};
use crate::reconciler::Shared;

/// Reconciles in parallel: a trace makes several Azure DevOps reads, so fewer at once than the gates.
const TRACE_CONCURRENCY: u16 = 8;

/// Watch the workloads of type `W` (of `kind`), so a rollout re-traces the traces whose `spec.deployed`
/// names the workload.
///
/// Metadata only: the mapper reads namespace and name, and a rollout changes the resourceVersion, so
/// a full watch would only stream every Deployment's pod template of the cluster through this process
/// (a trace reads its own workload with a GET when it reconciles).
fn watch_workloads<W>(
    controller: Controller<ServiceTrace>,
    shared: &Shared,
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
    controller.watches_stream(
        // kube 5: a watcher over `Api<PartialObjectMeta<W>>` sends metadata-only requests.
        watcher::watcher(
            shared.scoped::<PartialObjectMeta<W>>(),
            foreign_watch_config(),
        )
        .touched_objects(),
        move |o: PartialObjectMeta<W>| {
            traces_deployed_on(
                &store,
                DeployedKind::Workload(kind),
                o.metadata.namespace.as_deref(),
                o.metadata.name.as_deref(),
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
///
/// `api_cache`: where the read API finds this controller's store (see [`crate::api`]); the store is
/// published there once the controller has it, and read-only from then on.
pub async fn run(
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    api_cache: Option<Arc<CacheSlot<ServiceTrace>>>,
) {
    // As the gate controller's cache: every trace for the life of the process, without what nothing reads.
    let (store, writer) = reflector::store();
    let mut ctx = TraceContext::new(shared.reconcile_io(), store.clone());
    if let Some(hints) = shared.webhook_hints.clone() {
        ctx = ctx.with_webhook_hints(hints);
    }
    let ctx = Arc::new(ctx);
    let observing_ctx = ctx.clone();
    let recorders = ctx.io.recorders.clone();
    let trace_stream = reflector(
        writer,
        watcher::watcher(
            shared.scoped::<ServiceTrace>(),
            shared.sharding.watcher_config(),
        )
        .modify(ServiceTrace::compact_for_cache),
    )
    .applied_objects()
    .inspect_ok(move |trace| observing_ctx.observe(trace));
    let controller = Controller::for_stream(trace_stream, store.clone());

    let secrets_store = store.clone();
    let tokens_ctx = ctx.clone();
    let mut controller = controller.watches_stream(
        crate::reconciler::runtime::secret_changes(shared.scoped()),
        move |secret: kube::core::PartialObjectMeta<Secret>| {
            // Before the reconciles this change triggers run: they must read the new PAT.
            tokens_ctx.io.tokens.invalidate_secret(&secret.metadata);
            traces_using_secret(&secrets_store, &secret.metadata)
        },
    );
    for (kind, resource) in [
        (
            DeployedKind::FluxKustomization,
            flux_kustomization_resource(),
        ),
        (DeployedKind::ArgoApplication, argo_application_resource()),
    ] {
        let api = shared.scoped_dynamic::<DynamicObject>(&resource);
        if can_watch(&api, kind.kind_name()).await {
            let s = store.clone();
            // Metadata only, as for workloads: a sync changes the resourceVersion, and the trace reads
            // its own Kustomization / Application with a GET.
            controller = controller.watches_stream_with(
                watcher::watcher(
                    shared.scoped_dynamic::<PartialObjectMeta<DynamicObject>>(&resource),
                    foreign_watch_config(),
                )
                .touched_objects(),
                move |o: PartialObjectMeta<DynamicObject>| {
                    traces_deployed_on(
                        &s,
                        kind,
                        o.metadata.namespace.as_deref(),
                        o.metadata.name.as_deref(),
                    )
                },
                resource,
            );
        }
    }
    let controller =
        watch_workloads::<Deployment>(controller, &shared, &store, WorkloadKind::Deployment);
    let controller =
        watch_workloads::<StatefulSet>(controller, &shared, &store, WorkloadKind::StatefulSet);
    let controller =
        watch_workloads::<DaemonSet>(controller, &shared, &store, WorkloadKind::DaemonSet);

    let (first_list, mark_ready) =
        ready_after_first_list(&store, "ServiceTraces", &shared.readiness);
    if let Some(slot) = api_cache {
        let listed = first_list.clone();
        slot.publish(store.clone(), Arc::new(move || listed.is_done()));
    }
    let shutdown = shutdown.shared();
    let running = controller
        .with_config(controller::Config::default().concurrency(TRACE_CONCURRENCY))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move { log_result(KIND, result) });
    // Same shutdown bound as the gate controller: without it an unreachable API server before the
    // first list keeps the process alive after SIGTERM (STACK.md's shutdown trap).
    stop_bounded(running, shutdown, &first_list).await;
    // Events of the last reconciles may still be posting in the background.
    recorders.flush(EVENT_FLUSH_GRACE).await;
    mark_ready.abort();
    info!("ServiceTrace controller stopped");
}
