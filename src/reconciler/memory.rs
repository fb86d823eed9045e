//! What a reconciler remembers per object between reconciles, beyond what its status says: consecutive
//! failures (for the retry backoff), the last status it wrote (to bridge the moment before the watch
//! delivers it) and the Ready state (for the objects-by-Ready gauge). Both reconcilers need the same
//! bookkeeping; `X` holds what only one of them needs.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
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

/// One object's entry. Kept small: the map holds one per object for the life of the process, and a
/// table of 10 000 entries is resized (old and new table alive at once) as objects arrive. The copy of a
/// written status lives behind a pointer and only until the watch delivers the write.
struct Entry<S, X> {
    failures: u32,
    /// Ready condition status, for the gauge.
    ready: ReadyState,
    written: Option<Box<Written<S>>>,
    extra: X,
}

impl<S, X: Default> Default for Entry<S, X> {
    fn default() -> Self {
        Self {
            failures: 0,
            ready: ReadyState::Absent,
            written: None,
            extra: X::default(),
        }
    }
}

/// The Ready condition's status as the gauge counts it: a byte, not a `String` per object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReadyState {
    Absent,
    True,
    False,
    Unknown,
}

impl ReadyState {
    fn of(status: Option<&str>) -> Self {
        match status {
            Some("True") => Self::True,
            Some("False") => Self::False,
            Some("Unknown") => Self::Unknown,
            _ => Self::Absent,
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
    fn add(&mut self, ready: ReadyState, by: i64) {
        match ready {
            ReadyState::True => self.r#true += by,
            ReadyState::False => self.r#false += by,
            ReadyState::Unknown => self.unknown += by,
            ReadyState::Absent => {}
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
        f(entry_of(&mut state.entries, key))
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
        // A panic in one reconcile must not end the controller (kube-runtime runs reconciles inside its
        // own stream; an unwinding task would take every object of the kind with it). It becomes an
        // error: counted (result="panic"), logged by error_policy, retried with backoff.
        let result = match AssertUnwindSafe(reconcile.instrument(span))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(payload) => Err(Error::Panicked {
                kind: self.kind,
                object: key.to_string(),
                message: panic_message(payload.as_ref()),
            }),
        };
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
        crate::reconciler::schedule::requeue(delay)
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
            e.written = Some(Box::new(Written {
                base_resource_version,
                status: status.clone(),
            }))
        });
    }

    /// The watch delivered `obj`: a status copy remembered over an older version of it is superseded
    /// (the object now carries our write, or someone else's newer one), so it is dropped now rather than
    /// at the object's next reconcile, which for an idle object is an `interval` away.
    pub fn observe(&self, obj: &K) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.entries.get_mut(&ObjectRef::from_obj(obj)) else {
            return;
        };
        let rv = obj.meta().resource_version.as_ref();
        if entry
            .written
            .as_ref()
            .is_some_and(|w| w.base_resource_version.as_ref() != rv)
        {
            entry.written = None;
        }
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
        let entry = entry_of(&mut state.entries, key);
        let previous = std::mem::replace(&mut entry.ready, ReadyState::of(ready.as_deref()));
        state.ready.add(previous, -1);
        state.ready.add(entry.ready, 1);
        // Remembering more objects than the store holds means some were deleted: only then is a pass
        // over all of them worth it.
        if state.entries.len() > store.len() {
            let (entries, tally) = (&mut state.entries, &mut state.ready);
            entries.retain(|k, e| {
                let keep = k == key || store.get(k).is_some();
                if !keep {
                    tally.add(e.ready, -1);
                }
                keep
            });
        }
        let tally = &state.ready;
        metrics.set_ready_counts(self.kind, tally.r#true, tally.r#false, tally.unknown);
    }
}

/// The entry of `key`, under a key without the resource version and uid that `ObjectRef::from_obj`
/// carries: equality ignores them, and kept they were two more strings per object for the life of the
/// process.
fn entry_of<'a, K, S, X>(
    entries: &'a mut HashMap<ObjectRef<K>, Entry<S, X>>,
    key: &ObjectRef<K>,
) -> &'a mut Entry<S, X>
where
    K: Resource<DynamicType = ()>,
    X: Default,
{
    let mut bare = ObjectRef::new(&key.name);
    bare.namespace = key.namespace.clone();
    entries.entry(bare).or_default()
}

/// The text of a panic payload (`panic!` with a literal or a formatted message), else a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_becomes_an_error_and_backs_off() {
        use crate::crd::PipelineGate;
        let memory: ObjectMemory<PipelineGate, ()> = ObjectMemory::new("PipelineGate");
        let metrics = std::sync::Arc::new(Metrics::register(
            &mut prometheus_client::registry::Registry::default(),
        ));
        let key = ObjectRef::<PipelineGate>::new("g").within("ns");
        let result = memory
            .track_reconcile(&metrics, &key, async {
                let huge = std::time::Instant::now();
                let _ = huge + Duration::MAX;
                Ok(Action::await_change())
            })
            .await;
        let error = result.expect_err("the panic is an error");
        assert_eq!(error.category(), "panic");
        assert!(
            error.to_string().contains("ns/g") || error.to_string().contains("g.ns"),
            "{error}"
        );
        assert!(error.to_string().contains("overflow"), "{error}");
        // Retried with backoff like any failed reconcile.
        assert_eq!(
            memory.retry_delay_after_failure(&key),
            Duration::from_secs(1)
        );
        assert_eq!(
            memory.retry_delay_after_failure(&key),
            Duration::from_secs(2)
        );
        // And the next reconcile of the same object runs normally.
        let ok = memory
            .track_reconcile(&metrics, &key, async { Ok(Action::await_change()) })
            .await;
        assert!(ok.is_ok());
    }

    fn gate_at(resource_version: &str) -> crate::crd::PipelineGate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": "g", "namespace": "ns", "resourceVersion": resource_version},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": "P",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_written_status_bridges_until_the_watch_delivers_the_write() {
        let memory: ObjectMemory<crate::crd::PipelineGate, String> = ObjectMemory::new("G");
        let (old, new) = (gate_at("1"), gate_at("2"));
        let key = ObjectRef::from_obj(&old);
        let own = "own".to_string();
        memory.remember_written(&key, &old, &"written".to_string());
        // The watch has not delivered the write yet: the object still has the version it was based on.
        memory.observe(&old);
        assert_eq!(
            memory.current_status(&key, &old, Some(&own)).as_deref(),
            Some("written")
        );
        // It has: the copy is dropped at once, and the object's own status is current from then on.
        memory.observe(&new);
        assert!(memory.with_entry(&key, |e| e.written.is_none()));
        assert_eq!(
            memory.current_status(&key, &old, Some(&own)).as_deref(),
            Some("own")
        );
        // An object the reconciler never saw leaves no entry behind.
        let mut other = gate_at("3");
        other.metadata.name = Some("other".into());
        memory.observe(&other);
        assert_eq!(memory.state.lock().unwrap().entries.len(), 1);
    }

    #[test]
    fn an_entry_stays_small() {
        // One per object for the life of the process (see `Entry`): the status copy is not inline.
        assert!(
            std::mem::size_of::<Entry<crate::crd::PipelineGateStatus, [u64; 4]>>() <= 64,
            "{}",
            std::mem::size_of::<Entry<crate::crd::PipelineGateStatus, [u64; 4]>>()
        );
    }

    #[test]
    fn the_ready_tally_follows_objects_between_states() {
        let mut tally = ReadyTally::default();
        tally.add(ReadyState::of(Some("True")), 1);
        tally.add(ReadyState::of(Some("True")), 1);
        tally.add(ReadyState::of(None), -1);
        // One object moves from True to False.
        tally.add(ReadyState::True, -1);
        tally.add(ReadyState::of(Some("False")), 1);
        tally.add(ReadyState::of(Some("Unknown")), 1);
        tally.add(ReadyState::of(Some("Maybe")), 1);
        assert_eq!((tally.r#true, tally.r#false, tally.unknown), (1, 1, 1));
    }
}
