//! The change stream behind `GET /api/v1/watch` (server-sent events).
//!
//! One task compares the caches with what it saw last, every [`FEED_PERIOD`], by resourceVersion, and
//! serializes each change once into a broadcast channel of fixed capacity. Every client reads that
//! channel at its own pace; a client that falls [`FEED_CAPACITY`] changes behind is told so and
//! disconnected (it reconnects and gets a fresh snapshot) instead of holding memory for it. Diffing the
//! stores, rather than hooking the controllers' watch streams, keeps the API independent of how the
//! controllers are built and of leadership changes that replace their stores.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use super::auth::Kind;
use super::caches::ApiCaches;
use super::view;
use crate::crd::{PipelineGate, ServiceTrace};

/// How often the caches are compared; the dashboard's latency floor.
pub const FEED_PERIOD: Duration = Duration::from_millis(500);
/// Changes a client may fall behind before it is dropped.
pub const FEED_CAPACITY: usize = 1024;

/// One change, serialized once for every client.
#[derive(Debug)]
pub struct Change {
    pub kind: Kind,
    pub namespace: String,
    /// The SSE `data:` line: `{"type": "ADDED"|"MODIFIED"|"DELETED", "kind": .., "object": ..}`.
    pub data: String,
}

/// The sending side; clone it to subscribe.
#[derive(Clone)]
pub struct ChangeFeed {
    tx: broadcast::Sender<Arc<Change>>,
}

impl ChangeFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Start comparing `caches` every `period` until `shutdown` turns true.
    pub fn start(
        caches: ApiCaches,
        period: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        let feed = Self { tx: tx.clone() };
        let task = tokio::spawn(async move {
            let mut gates = Seen::default();
            let mut traces = Seen::default();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                if let Some(store) = caches.gates.ready_store() {
                    gates.diff(&store, Kind::PipelineGates, "PipelineGate", view::gate, &tx);
                }
                if let Some(store) = caches.traces.ready_store() {
                    traces.diff(
                        &store,
                        Kind::ServiceTraces,
                        "ServiceTrace",
                        view::trace,
                        &tx,
                    );
                }
            }
        });
        (feed, task)
    }
}

/// resourceVersions by namespace and name, as of the previous comparison.
#[derive(Default)]
struct Seen(HashMap<(String, String), String>);

impl Seen {
    fn diff<K>(
        &mut self,
        store: &Store<K>,
        kind: Kind,
        kind_name: &str,
        render: fn(&K) -> Value,
        tx: &broadcast::Sender<Arc<Change>>,
    ) where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut now = HashMap::with_capacity(self.0.len());
        for object in store.state() {
            let key = (object.namespace().unwrap_or_default(), object.name_any());
            let version = object.resource_version().unwrap_or_default();
            let change = match self.0.remove(&key) {
                None => Some("ADDED"),
                Some(before) if before != version => Some("MODIFIED"),
                Some(_) => None,
            };
            if let Some(type_) = change {
                // Nobody listening: keep the bookkeeping, skip the serialization.
                if tx.receiver_count() > 0 {
                    let data = json!({"type": type_, "kind": kind_name, "object": render(&object)});
                    let _ = tx.send(Arc::new(Change {
                        kind,
                        namespace: key.0.clone(),
                        data: data.to_string(),
                    }));
                }
            }
            now.insert(key, version);
        }
        for ((namespace, name), _) in self.0.drain() {
            if tx.receiver_count() > 0 {
                let data = json!({"type": "DELETED", "kind": kind_name,
                                  "object": {"metadata": {"namespace": namespace, "name": name}}});
                let _ = tx.send(Arc::new(Change {
                    kind,
                    namespace,
                    data: data.to_string(),
                }));
            }
        }
        self.0 = now;
    }
}

/// What a new client is sent before live changes: every object it may read, as ADDED.
pub enum SnapshotItem {
    Gate(Arc<PipelineGate>),
    Trace(Arc<ServiceTrace>),
}

impl SnapshotItem {
    pub fn kind(&self) -> Kind {
        match self {
            SnapshotItem::Gate(_) => Kind::PipelineGates,
            SnapshotItem::Trace(_) => Kind::ServiceTraces,
        }
    }
    pub fn namespace(&self) -> String {
        match self {
            SnapshotItem::Gate(g) => g.namespace().unwrap_or_default(),
            SnapshotItem::Trace(t) => t.namespace().unwrap_or_default(),
        }
    }
    pub fn data(&self) -> String {
        match self {
            SnapshotItem::Gate(g) => {
                json!({"type": "ADDED", "kind": "PipelineGate", "object": view::gate(g)})
            }
            SnapshotItem::Trace(t) => {
                json!({"type": "ADDED", "kind": "ServiceTrace", "object": view::trace(t)})
            }
        }
        .to_string()
    }
}

pub fn snapshot(caches: &ApiCaches, namespace: Option<&str>) -> VecDeque<SnapshotItem> {
    let in_scope = |ns: Option<String>| namespace.is_none_or(|want| ns.as_deref() == Some(want));
    let mut items = VecDeque::new();
    if let Some(store) = caches.gates.ready_store() {
        items.extend(
            store
                .state()
                .into_iter()
                .filter(|g| in_scope(g.namespace()))
                .map(SnapshotItem::Gate),
        );
    }
    if let Some(store) = caches.traces.ready_store() {
        items.extend(
            store
                .state()
                .into_iter()
                .filter(|t| in_scope(t.namespace()))
                .map(SnapshotItem::Trace),
        );
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn gate(name: &str, rv: &str) -> PipelineGate {
        serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_diff_reports_adds_modifications_and_deletions_once() {
        let mut writer = Writer::<PipelineGate>::default();
        let store = writer.as_reader();
        let (tx, mut rx) = broadcast::channel(16);
        let mut seen = Seen::default();
        writer.apply_watcher_event(&watcher::Event::Apply(gate("a", "1")));
        seen.diff(&store, Kind::PipelineGates, "PipelineGate", view::gate, &tx);
        let added: Value = serde_json::from_str(&rx.try_recv().unwrap().data).unwrap();
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"]["verdict"]["open"], false);

        seen.diff(&store, Kind::PipelineGates, "PipelineGate", view::gate, &tx);
        assert!(rx.try_recv().is_err(), "nothing changed, nothing sent");

        writer.apply_watcher_event(&watcher::Event::Apply(gate("a", "2")));
        seen.diff(&store, Kind::PipelineGates, "PipelineGate", view::gate, &tx);
        let modified: Value = serde_json::from_str(&rx.try_recv().unwrap().data).unwrap();
        assert_eq!(modified["type"], "MODIFIED");

        writer.apply_watcher_event(&watcher::Event::Delete(gate("a", "2")));
        seen.diff(&store, Kind::PipelineGates, "PipelineGate", view::gate, &tx);
        let deleted: Value = serde_json::from_str(&rx.try_recv().unwrap().data).unwrap();
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["metadata"]["name"], "a");
    }
}
