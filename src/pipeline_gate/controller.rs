//! The PipelineGate controller: which watches trigger a gate's reconcile, and its run loop.

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tracing::info;

use super::reconcile::{error_policy, gates_using_secret, reconcile, GateContext};
use super::KIND;
use crate::api::CacheSlot;
use crate::crd::PipelineGate;
use crate::reconciler::events::EVENT_FLUSH_GRACE;
use crate::reconciler::runtime::{
    log_result, ready_after_first_list, secret_changes, stop_bounded, CacheCompact,
    RECONCILE_CONCURRENCY,
};
use crate::reconciler::Shared;
use kube::core::PartialObjectMeta;

/// Run the PipelineGate controller until `shutdown` resolves; in-flight reconciles finish first.
///
/// Watches every change of every gate (lists paged, see [`crate::shard::OWNED_PAGE_SIZE`]; no predicates: a `lockstep.dev/requested-at`
/// annotation change must trigger a reconcile even though it does not bump `generation`), and the Secrets
/// in the watched namespaces, mapped to the gates that reference them (metadata only: see
/// [`secret_changes`]). When the webhook receiver runs in this process, it also hands over the gates a
/// delivery names directly ([`crate::reconciler::HookRelay`]).
///
/// `api_cache`: where the read API finds this controller's store (see [`crate::api`]); the store is
/// published there once the controller has it, and read-only from then on.
pub async fn run(
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    api_cache: Option<Arc<CacheSlot<PipelineGate>>>,
) {
    let gates: Api<PipelineGate> = shared.scoped();
    let secrets: Api<PartialObjectMeta<Secret>> = shared.scoped();
    // The controller's cache holds every gate for the life of the process: what nothing reads is
    // dropped on the way in.
    let (store, writer) = reflector::store();
    let mut ctx = GateContext::new(shared.reconcile_io(), store.clone());
    if let Some(hints) = shared.webhook_hints.clone() {
        ctx = ctx.with_webhook_hints(hints);
    }
    let ctx = Arc::new(ctx);
    let observing_ctx = ctx.clone();
    let recorders = ctx.io.recorders.clone();
    let gate_stream = reflector(
        writer,
        watcher::watcher(gates, shared.sharding.watcher_config())
            .modify(PipelineGate::compact_for_cache),
    )
    .applied_objects()
    .inspect_ok(move |gate| observing_ctx.observe(gate));
    let mut controller = Controller::for_stream(gate_stream, store.clone());
    if let Some(hints) = &shared.webhook_hints {
        // Gates a delivery names, straight from the receiver: no annotation round trip first.
        controller = controller.reconcile_on(hints.gate_relay.attach());
    }
    let mapper_store = store.clone();
    let tokens_ctx = ctx.clone();

    let (first_list, mark_ready) =
        ready_after_first_list(&store, "PipelineGates", &shared.readiness);
    if let Some(slot) = api_cache {
        let listed = first_list.clone();
        slot.publish(store.clone(), Arc::new(move || listed.is_done()));
    }

    let shutdown = shutdown.shared();
    let running = controller
        .watches_stream(
            secret_changes(secrets),
            move |secret: PartialObjectMeta<Secret>| {
                // Before the reconciles this change triggers run: they must read the new PAT.
                tokens_ctx.io.tokens.invalidate_secret(&secret.metadata);
                gates_using_secret(&mapper_store, &secret.metadata)
            },
        )
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move { log_result(KIND, result) });
    stop_bounded(running, shutdown, &first_list).await;
    // Events of the last reconciles may still be posting in the background.
    recorders.flush(EVENT_FLUSH_GRACE).await;
    mark_ready.abort();
    info!("PipelineGate controller stopped");
}
