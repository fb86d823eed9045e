//! What a reconciler remembers per object between reconciles, beyond what its status says: consecutive
//! failures (for the retry backoff), the last status it wrote (to bridge the moment before the watch
//! delivers it) and the Ready state (for the objects-by-Ready gauge). Both reconcilers need the same
//! bookkeeping; `X` holds what only one of them needs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use super::backoff::retry_delay;
use super::Error;
use crate::telemetry::Metrics;

/// What the last status write of one object was based on.
struct Written<S> {
    base_resource_version: Option<String>,
    status: S,
}

struct Entry<S, X> {
    failures: u32,
    written: Option<Written<S>>,
    /// Ready condition status (`True`, `False`, `Unknown`), for the gauge.
    ready: Option<String>,
    extra: X,
}

impl<S, X: Default> Default for Entry<S, X> {
    fn default() -> Self {
        Self {
            failures: 0,
            written: None,
            ready: None,
            extra: X::default(),
        }
    }
}

/// Per-object memory of one reconciler for objects of kind `K` with status `S`.
pub struct ObjectMemory<K, S, X = ()>
where
    K: Resource<DynamicType = ()>,
{
    kind: &'static str,
    entries: Mutex<HashMap<ObjectRef<K>, Entry<S, X>>>,
}

impl<K, S, X> ObjectMemory<K, S, X>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    S: Clone,
    X: Default,
{
    /// `kind` labels the metrics.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The kind name, for metrics, logs and errors.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn with_entry<T>(&self, key: &ObjectRef<K>, f: impl FnOnce(&mut Entry<S, X>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain data behind, still fine to use.
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key.clone()).or_default())
    }

    /// Read or update what only this reconciler remembers about `key`.
    pub fn with_extra<T>(&self, key: &ObjectRef<K>, f: impl FnOnce(&mut X) -> T) -> T {
        self.with_entry(key, |e| f(&mut e.extra))
    }

    /// Run one reconcile of `key`: timed for the metrics, and a success ends the object's failure streak.
    pub async fn track_reconcile(
        &self,
        metrics: &std::sync::Arc<Metrics>,
        key: &ObjectRef<K>,
        reconcile: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let timer = metrics.reconcile_started(self.kind);
        let result = reconcile.await;
        match &result {
            Ok(_) => {
                self.with_entry(key, |e| e.failures = 0);
                timer.finish("success");
            }
            Err(e) => timer.finish(e.category()),
        }
        result
    }

    /// Count a failed reconcile of `key` and say how long to wait before the next try.
    pub fn retry_delay_after_failure(&self, key: &ObjectRef<K>) -> Duration {
        let failures = self.with_entry(key, |e| {
            e.failures = e.failures.saturating_add(1);
            e.failures
        });
        retry_delay(failures)
    }

    /// The object's current status: its own, unless the watch has not yet delivered our last write
    /// (the object still has the resource version that write was based on).
    pub fn current_status(&self, key: &ObjectRef<K>, obj: &K, status: Option<&S>) -> Option<S> {
        let rv = obj.meta().resource_version.as_ref();
        self.with_entry(key, |e| match &e.written {
            Some(w) if w.base_resource_version.as_ref() == rv => Some(w.status.clone()),
            _ => status.cloned(),
        })
    }

    /// Remember that `status` was written over `obj` as it is now.
    pub fn remember_written(&self, key: &ObjectRef<K>, obj: &K, status: &S) {
        let base_resource_version = obj.meta().resource_version.clone();
        self.with_entry(key, |e| {
            e.written = Some(Written {
                base_resource_version,
                status: status.clone(),
            })
        });
    }

    /// Record the object's Ready state and refresh the gauge; forget objects that left `store`.
    pub fn update_ready_gauge(
        &self,
        metrics: &Metrics,
        store: &Store<K>,
        key: &ObjectRef<K>,
        ready: Option<String>,
    ) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().ready = ready;
        map.retain(|k, _| k == key || store.get(k).is_some());
        let count = |s: &str| {
            map.values()
                .filter(|e| e.ready.as_deref() == Some(s))
                .count() as i64
        };
        metrics.set_ready_counts(self.kind, count("True"), count("False"), count("Unknown"));
    }
}
