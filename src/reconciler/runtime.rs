//! The runtime plumbing every controller uses: what the process shares with its controllers
//! ([`Shared`]), namespace scoping, readiness after the first list, the bounded stop, and the log line
//! for each reconcile result. Kind-free: each kind's `controller.rs` wires its own watches with these.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use tracing::{debug, info, warn};

use super::events::EventRecorders;
use super::hints::WebhookHints;
use super::io::{BuildsCache, ReconcileIo, ReconcilerConfig};
use super::token_cache::TokenCache;
use crate::ado::AdoClient;
use crate::entra::EntraContext;
use crate::ops_server::Readiness;
use crate::telemetry::Metrics;

/// Reconciles in parallel. They mostly wait on I/O; enough of them that objects sharing a pipeline, which
/// requeue at the same instant, all finish within the poll cache's TTL and keep sharing one request.
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// How long in-flight reconciles may run on after shutdown began.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// What the controllers share, built once per process (survives losing and regaining leadership).
#[derive(Clone)]
pub struct Shared {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    /// One Entra token per identity, shared by both controllers.
    pub entra: Arc<EntraContext>,
    pub metrics: Arc<Metrics>,
    pub config: ReconcilerConfig,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    /// Which PipelineGates and ServiceTraces this instance serves: every watch of them carries its
    /// label selector.
    pub sharding: crate::shard::Sharding,
    /// Reported on Events, to tell replicas apart.
    pub identity: String,
    pub readiness: Readiness,
    /// Present when the webhook receiver runs in this process.
    pub webhook_hints: Option<WebhookHints>,
}

impl Shared {
    /// What one controller's reconciler talks to. Each controller has its own Event recorders (the
    /// identity tells replicas apart in `kubectl describe`) and its own Secret reads (invalidated by its
    /// own Secret watch); the rest is shared by the whole process.
    pub fn reconcile_io(&self) -> ReconcileIo {
        ReconcileIo {
            client: self.client.clone(),
            ado: self.ado.clone(),
            cache: self.cache.clone(),
            recorders: EventRecorders::new(
                &self.client,
                &Reporter {
                    controller: "lockstep".to_string(),
                    instance: Some(self.identity.clone()),
                },
            ),
            tokens: TokenCache::new(self.config.secret_cache_ttl),
            entra: self.entra.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
        }
    }

    /// `Api::all` or `Api::namespaced`, per `--namespace`.
    pub fn scoped<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        scoped(&self.client, &self.namespace)
    }

    /// [`Shared::scoped`] for a resource known only at run time (Flux, Argo CD).
    /// `K` is `DynamicObject`, or `PartialObjectMeta<DynamicObject>` for metadata-only reads.
    pub fn scoped_dynamic<K>(&self, resource: &ApiResource) -> Api<K>
    where
        K: Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }
}

/// `Api::all` or `Api::namespaced`, per `--namespace`.
pub fn scoped<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Drop from an object what no reader of the controllers' caches uses, before it enters a cache that
/// holds every object for the life of the process: managedFields (status is written by server-side
/// apply, which the API server resolves) and `kubectl apply`'s copy of the whole object in
/// `kubectl.kubernetes.io/last-applied-configuration` (the read API hides it too, see
/// `crate::api::view`). Together they are most of a small object's size.
pub fn strip_unread(meta: &mut kube::core::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What a kind's objects shed before they enter a cache that holds them all for the life of the process
/// (the controllers' stores, and the read API's own on a standby replica): [`strip_unread`], and
/// whatever else the kind can make smaller without changing what a reader sees.
pub trait CacheCompact: kube::Resource {
    fn compact_for_cache(&mut self) {
        strip_unread(self.meta_mut());
    }
}

const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Changes of the Secrets in `api`, metadata only (`PartialObjectMetadata`): a Secret's data is read
/// only when a reconcile needs its PAT, and only that Secret. Watching full Secrets would hold every
/// Secret of the cluster in memory (Helm keeps each release revision in one of up to 1 MiB), though
/// lockstep uses a handful; a change of metadata (the resourceVersion) is all a mapper needs to know.
pub fn secret_changes(
    api: Api<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>,
) -> impl futures::Stream<
    Item = Result<
        kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>,
        kube::runtime::watcher::Error,
    >,
> + Send {
    use kube::runtime::WatchStreamExt;
    // kube 5: a watcher over `Api<PartialObjectMeta<K>>` sends metadata-only requests
    // (`Accept: ...;as=PartialObjectMetadata`), so the API server never sends Secret data.
    kube::runtime::watcher(api, foreign_watch_config()).touched_objects()
}

/// Objects listed per page by the watches of kinds lockstep does not serve (Secrets, workloads, Flux
/// Kustomizations, Argo CD Applications). Their items are dropped as soon as a mapper has read a name,
/// so a page is the whole memory cost, and it is a peak the allocator keeps: kube's default page of 500
/// Deployments' metadata (managedFields and a `last-applied-configuration` copy each) cost ≈ 10 MiB of
/// peak RSS in `cargo bench --bench scale -- --foreign-deployments 1000`. The price is more list requests
/// at start-up and on a relist: one per 50 objects.
pub const FOREIGN_PAGE_SIZE: u32 = 50;

/// The watcher configuration for kinds lockstep watches but does not serve: small list pages.
pub fn foreign_watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().page_size(FOREIGN_PAGE_SIZE)
}

/// The log line for one result of a controller's run stream (`kind` names the controller).
pub fn log_result<K, E, Q>(
    kind: &'static str,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, Q>>,
) where
    K: Resource,
    E: Display,
    Q: Display,
{
    match result {
        // Logged by the kind's error_policy.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        // A trigger for an object that was deleted meanwhile: nothing to do.
        Err(controller::Error::ObjectNotFound(obj)) => {
            debug!(kind, object = %obj, "object is gone")
        }
        Err(other) => warn!(kind, error = %other, "controller"),
        Ok(_) => {}
    }
}

/// Watch `store` (named `what`) for its first list and mark the process ready then. The returned task is
/// aborted when the controller stops, so a controller that never listed never marks readiness.
pub fn ready_after_first_list<K>(
    store: &Store<K>,
    what: &'static str,
    readiness: &Readiness,
) -> (FirstList, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let first_list = FirstList::watch(store.clone(), what);
    let readiness = readiness.clone();
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

/// Whether the cluster serves `resource` and lockstep may list it: Flux and Argo CD are optional, and a
/// watch on an API that is not there would only fail and retry forever.
pub async fn can_watch(api: &Api<DynamicObject>, what: &str) -> bool {
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(e) => {
            info!(api = what, error = %e, "not watching {what}: ServiceTraces that reference one are still re-read every interval");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PipelineGate;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    #[test]
    fn caches_drop_managed_fields_and_the_last_applied_copy_but_keep_other_annotations() {
        let mut gate: PipelineGate = serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": "g", "namespace": "ns",
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                         "annotations": {LAST_APPLIED_ANNOTATION: "{\"spec\":{}}",
                                         "lockstep.dev/requested-at": "2026-11-30T03:00:00Z"}},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": "p",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            }
        }))
        .unwrap();
        strip_unread(&mut gate.metadata);
        assert_eq!(gate.metadata.managed_fields, None);
        let annotations = gate.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["lockstep.dev/requested-at"]
        );

        let mut only_last_applied = kube::core::ObjectMeta {
            annotations: Some([(LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string())].into()),
            ..Default::default()
        };
        strip_unread(&mut only_last_applied);
        assert_eq!(only_last_applied.annotations, None);
    }

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
