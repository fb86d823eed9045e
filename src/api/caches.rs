//! What the API reads: the controllers' reflector stores, never the API server. The stores are
//! published by whoever owns them (the controllers, or the API's own watches on a standby replica) and can
//! be replaced, because a controller's store lives as long as one leadership term.

use std::sync::{Arc, RwLock};

use kube::runtime::reflector::Store;

use crate::crd::{PipelineGate, ServiceTrace};

/// Whether a published store has completed its first list; until then the API answers 503 rather than
/// an empty list that a caller would take for "there are no gates".
pub type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;

struct Published<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    ready: ReadyFn,
}

/// One kind's store, replaceable.
pub struct CacheSlot<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    inner: RwLock<Option<Published<K>>>,
}

impl<K> Default for CacheSlot<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn default() -> Self {
        Self {
            inner: RwLock::new(None),
        }
    }
}

impl<K> CacheSlot<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// Serve from `store` from now on; `ready` says when its first list is complete.
    pub fn publish(&self, store: Store<K>, ready: ReadyFn) {
        // A poisoned lock only means a writer panicked mid-assignment of an Option; the value is whole.
        let mut slot = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(Published { store, ready });
    }

    /// The store, once it has listed; `None` before.
    pub fn ready_store(&self) -> Option<Store<K>> {
        let slot = self.inner.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|p| (p.ready)())
            .map(|p| p.store.clone())
    }
}

/// The stores of both kinds.
#[derive(Clone, Default)]
pub struct ApiCaches {
    pub gates: Arc<CacheSlot<PipelineGate>>,
    pub traces: Arc<CacheSlot<ServiceTrace>>,
}

impl ApiCaches {
    pub fn new() -> Self {
        Self::default()
    }

    /// Caches over stores that are already complete: tests, benchmarks and callers that fill a store
    /// themselves.
    pub fn from_stores(gates: Store<PipelineGate>, traces: Store<ServiceTrace>) -> Self {
        let caches = Self::default();
        caches.gates.publish(gates, Arc::new(|| true));
        caches.traces.publish(traces, Arc::new(|| true));
        caches
    }
}
