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
use tracing::Instrument;

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
    state: Mutex<State<K, S, X>>,
}

/// The entries, and how many of them are in each Ready state (kept in step with the map, so the gauge
/// costs O(1) per reconcile rather than a pass over every object).
struct State<K, S, X>
where
    K: Resource<DynamicType = ()>,
{
    entries: HashMap<ObjectRef<K>, Entry<S, X>>,
    ready: ReadyTally,
}

#[derive(Default)]
struct ReadyTally {
    r#true: i64,
    r#false: i64,
    unknown: i64,
}

impl ReadyTally {
    fn add(&mut self, ready: Option<&str>, by: i64) {
        match ready {
            Some("True") => self.r#true += by,
            Some("False") => self.r#false += by,
            Some("Unknown") => self.unknown += by,
            _ => {}
        }
    }
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
            state: Mutex::new(State {
                entries: HashMap::new(),
                ready: ReadyTally::default(),
            }),
        }
    }

    /// The kind name, for metrics, logs and errors.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn with_entry<T>(&self, key: &ObjectRef<K>, f: impl FnOnce(&mut Entry<S, X>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain data behind, still fine to use.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(state.entries.entry(key.clone()).or_default())
    }

    /// Read or update what only this reconciler remembers about `key`.
    pub fn with_extra<T>(&self, key: &ObjectRef<K>, f: impl FnOnce(&mut X) -> T) -> T {
        self.with_entry(key, |e| f(&mut e.extra))
    }

    /// Run one reconcile of `key`: timed for the metrics, inside a `reconcile` span naming the object (so
    /// every log line of the reconcile carries kind, namespace and name), and a success ends the
    /// object's failure streak. The name's field is `object`: the JSON log format writes the span's
    /// own name under `name`, and a second `name` key would shadow it.
    pub async fn track_reconcile(
        &self,
        metrics: &std::sync::Arc<Metrics>,
        key: &ObjectRef<K>,
        reconcile: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let span = tracing::info_span!(
            "reconcile",
            kind = self.kind,
            namespace = key.namespace.as_deref().unwrap_or_default(),
            object = %key.name,
        );
        let timer = metrics.reconcile_started(self.kind);
        let result = reconcile.instrument(span).await;
        match &result {
            Ok(_) => {
                self.with_entry(key, |e| e.failures = 0);
                timer.finish("success");
            }
            Err(e) => timer.finish(e.category()),
        }
        result
    }

    /// A kind's `error_policy`: count the failure, log it, and requeue after the backoff.
    pub fn requeue_after_failure(&self, key: &ObjectRef<K>, error: &Error) -> Action {
        let delay = self.retry_delay_after_failure(key);
        tracing::warn!(kind = self.kind, object = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
        Action::requeue(delay)
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
            // The watch delivered a newer object: the copy is never needed again, so it is not kept.
            _ => {
                e.written = None;
                status.cloned()
            }
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
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let entry = state.entries.entry(key.clone()).or_default();
        let previous = std::mem::replace(&mut entry.ready, ready);
        state.ready.add(previous.as_deref(), -1);
        state.ready.add(entry.ready.as_deref(), 1);
        // Remembering more objects than the store holds means some were deleted: only then is a pass
        // over all of them worth it.
        if state.entries.len() > store.len() {
            let (entries, tally) = (&mut state.entries, &mut state.ready);
            entries.retain(|k, e| {
                let keep = k == key || store.get(k).is_some();
                if !keep {
                    tally.add(e.ready.as_deref(), -1);
                }
                keep
            });
        }
        let tally = &state.ready;
        metrics.set_ready_counts(self.kind, tally.r#true, tally.r#false, tally.unknown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_tally_follows_objects_between_states() {
        let mut tally = ReadyTally::default();
        tally.add(Some("True"), 1);
        tally.add(Some("True"), 1);
        tally.add(None, -1);
        // One object moves from True to False.
        tally.add(Some("True"), -1);
        tally.add(Some("False"), 1);
        tally.add(Some("Unknown"), 1);
        assert_eq!((tally.r#true, tally.r#false, tally.unknown), (1, 1, 1));
    }
}
