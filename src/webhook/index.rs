//! Which PipelineGates and ServiceTraces a hint concerns, answered from memory.
//!
//! The index is fed from the controllers' watch events (never by listing the cluster per delivery) and
//! keyed the way payloads name things, so a lookup costs a hash probe plus the size of the answer:
//! - gates by (organization, definition id) → branch → objects;
//! - traces by (organization, definition id) for their CI build (on its branch) and for their
//!   manifest-generation pipeline (any branch: that pipeline runs on the HLD branch, which the trace
//!   does not name);
//! - traces by (organization, repository name or id, branch) for their manifest and HLD repositories.
//!
//! Routing narrows only on what a payload actually carries. Organization and definition id always; the
//! branch only when the payload names one (2019 stage events do not). The project never narrows: specs
//! name it by name or id and payloads mostly by id, so comparing them would drop matches, while
//! definition ids are already unique within an organization. The rule behind all of this: a hint never
//! decides a verdict (the reconcile re-reads Azure DevOps), so notifying one object too many costs one
//! read, whereas missing one leaves it waiting for the next poll.
//!
//! The index also remembers when each object last received a hint, so the controller can tell when
//! polling found a change before any webhook did (see [`HintIndex::last_hint`]).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::payload::HintTarget;
use crate::crd::{PipelineGate, ServiceTrace};
use crate::pipeline_key::{full_branch_ref, OrgKey};

pub type GateRef = ObjectRef<PipelineGate>;
pub type TraceRef = ObjectRef<ServiceTrace>;

/// The objects one delivery concerns, in a stable order (namespace, name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Affected {
    pub gates: Vec<GateRef>,
    pub traces: Vec<TraceRef>,
}

impl Affected {
    pub fn is_empty(&self) -> bool {
        self.gates.is_empty() && self.traces.is_empty()
    }
    pub fn len(&self) -> usize {
        self.gates.len() + self.traces.len()
    }
}

#[derive(Default)]
pub struct HintIndex {
    gates: RwLock<Routes<GateRef>>,
    traces: RwLock<Routes<TraceRef>>,
    hints: RwLock<HashMap<HintKey, Instant>>,
}

impl std::fmt::Debug for HintIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HintIndex")
            .field("gates", &self.gate_count())
            .field("traces", &self.trace_count())
            .field("synced", &self.is_synced())
            .finish()
    }
}

type HintKey = (String, Option<String>, String);

impl HintIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply_gate(&self, gate: &PipelineGate) {
        if let Some(r) = object_ref(gate) {
            write(&self.gates).upsert(r, gate_slots(gate));
        }
    }

    pub fn delete_gate(&self, gate: &PipelineGate) {
        if let Some(r) = object_ref(gate) {
            write(&self.gates).remove(&r);
            self.forget_hint(&r);
        }
    }

    pub fn apply_trace(&self, trace: &ServiceTrace) {
        if let Some(r) = object_ref(trace) {
            write(&self.traces).upsert(r, trace_slots(trace));
        }
    }

    pub fn delete_trace(&self, trace: &ServiceTrace) {
        if let Some(r) = object_ref(trace) {
            write(&self.traces).remove(&r);
            self.forget_hint(&r);
        }
    }

    /// Feed one event of a `kube::runtime::watcher` stream of PipelineGates. A relist (`Init` …
    /// `InitApply`* … `InitDone`) is buffered and swapped in at `InitDone`, so lookups keep answering from
    /// the previous contents meanwhile and objects deleted while the watch was down disappear.
    pub fn observe_gate_event(&self, event: &watcher::Event<PipelineGate>) {
        let removed = observe(&self.gates, event, gate_slots);
        self.forget_hints(&removed);
    }

    /// Feed one event of a watcher stream of ServiceTraces; see [`HintIndex::observe_gate_event`].
    pub fn observe_trace_event(&self, event: &watcher::Event<ServiceTrace>) {
        let removed = observe(&self.traces, event, trace_slots);
        self.forget_hints(&removed);
    }

    /// True once both kinds have completed their first list (or [`HintIndex::mark_synced`] was called).
    /// Before that an empty answer may only mean "not loaded yet", so the receiver answers 503 and
    /// Azure DevOps retries.
    pub fn is_synced(&self) -> bool {
        read(&self.gates).synced && read(&self.traces).synced
    }

    /// For callers that fill the index with `apply_*` instead of watcher events.
    pub fn mark_synced(&self) {
        write(&self.gates).synced = true;
        write(&self.traces).synced = true;
    }

    pub fn gate_count(&self) -> usize {
        read(&self.gates).by_object.len()
    }

    pub fn trace_count(&self) -> usize {
        read(&self.traces).by_object.len()
    }

    /// Gates following `definition_id` in `organization`; `branch` (a full ref) narrows when known.
    pub fn gates_for(
        &self,
        organization: &OrgKey,
        definition_id: i64,
        branch: Option<&str>,
    ) -> Vec<GateRef> {
        sorted(read(&self.gates).pipeline(organization, definition_id, branch))
    }

    /// Traces whose CI build or manifest-generation pipeline is `definition_id`.
    pub fn traces_for_pipeline(
        &self,
        organization: &OrgKey,
        definition_id: i64,
        branch: Option<&str>,
    ) -> Vec<TraceRef> {
        sorted(read(&self.traces).pipeline(organization, definition_id, branch))
    }

    /// Traces whose manifest or HLD repository (named by id or by name in the spec) is on `branch`.
    pub fn traces_for_repository(
        &self,
        organization: &OrgKey,
        repository_id: Option<&str>,
        repository_name: Option<&str>,
        branch: &str,
    ) -> Vec<TraceRef> {
        let names: Vec<&str> = repository_id.into_iter().chain(repository_name).collect();
        sorted(read(&self.traces).repository(organization, &names, branch))
    }

    /// Everything the targets of one delivery concern.
    pub fn affected_by(&self, targets: &[HintTarget]) -> Affected {
        let mut gates = HashSet::new();
        let mut traces = HashSet::new();
        {
            let gate_routes = read(&self.gates);
            let trace_routes = read(&self.traces);
            for target in targets {
                match target {
                    HintTarget::Pipeline {
                        organization,
                        definition_id,
                        branch,
                        ..
                    } => {
                        gates.extend(gate_routes.pipeline(
                            organization,
                            *definition_id,
                            branch.as_deref(),
                        ));
                        traces.extend(trace_routes.pipeline(
                            organization,
                            *definition_id,
                            branch.as_deref(),
                        ));
                    }
                    HintTarget::Repository {
                        organization,
                        repository_id,
                        repository_name,
                        branch,
                        ..
                    } => {
                        let names: Vec<&str> = repository_id
                            .as_deref()
                            .into_iter()
                            .chain(repository_name.as_deref())
                            .collect();
                        traces.extend(trace_routes.repository(organization, &names, branch));
                    }
                }
            }
        }
        Affected {
            gates: sorted(gates),
            traces: sorted(traces),
        }
    }

    /// Note that `object` was sent a hint at `at`.
    pub fn record_hint<K: Resource<DynamicType = ()>>(&self, object: &ObjectRef<K>, at: Instant) {
        write(&self.hints).insert(hint_key(object), at);
    }

    /// When `object` last received a webhook hint, if ever since this process started. The controller
    /// compares it with the previous poll to decide whether polling found a change first.
    pub fn last_hint<K: Resource<DynamicType = ()>>(
        &self,
        object: &ObjectRef<K>,
    ) -> Option<Instant> {
        read(&self.hints).get(&hint_key(object)).copied()
    }

    /// [`HintIndex::last_hint`] by kind name, for callers that do not know the type.
    pub fn last_hint_by_name(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Instant> {
        let key: HintKey = (
            kind.to_string(),
            namespace.map(str::to_string),
            name.to_string(),
        );
        read(&self.hints).get(&key).copied()
    }

    fn forget_hint<K: Resource<DynamicType = ()>>(&self, object: &ObjectRef<K>) {
        write(&self.hints).remove(&hint_key(object));
    }

    fn forget_hints<K: Resource<DynamicType = ()>>(&self, objects: &[ObjectRef<K>]) {
        if objects.is_empty() {
            return;
        }
        let mut hints = write(&self.hints);
        for o in objects {
            hints.remove(&hint_key(o));
        }
    }
}

fn hint_key<K: Resource<DynamicType = ()>>(object: &ObjectRef<K>) -> HintKey {
    (
        K::kind(&()).into_owned(),
        object.namespace.clone(),
        object.name.clone(),
    )
}

/// A reference without resource version or uid, so equal objects compare equal across updates.
fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Option<ObjectRef<K>> {
    let name = obj.meta().name.as_deref()?;
    let r = ObjectRef::new(name);
    Some(match obj.meta().namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    })
}

/// Suspended objects and objects being deleted get no hints: their controller would do nothing with one.
fn routable<K: Resource>(obj: &K, suspended: bool) -> bool {
    !suspended && obj.meta().deletion_timestamp.is_none()
}

fn gate_slots(gate: &PipelineGate) -> Slots {
    let mut slots = Slots::default();
    if !routable(gate, gate.spec.suspend) {
        return slots;
    }
    let Some(org) = OrgKey::from_url(&gate.spec.azure_devops.organization_url) else {
        tracing::debug!(gate = %gate.name_any(), "organizationUrl does not parse; webhooks cannot route to this gate");
        return slots;
    };
    slots.pipelines.push(PipelineSlot {
        org,
        definition_id: gate.spec.pipeline.definition_id,
        branch: BranchKey::of(&gate.spec.pipeline.branch),
    });
    slots
}

fn trace_slots(trace: &ServiceTrace) -> Slots {
    let mut slots = Slots::default();
    if !routable(trace, trace.spec.suspend) {
        return slots;
    }
    let Some(org) = OrgKey::from_url(&trace.spec.azure_devops.organization_url) else {
        tracing::debug!(trace = %trace.name_any(), "organizationUrl does not parse; webhooks cannot route to this trace");
        return slots;
    };
    slots.pipelines.push(PipelineSlot {
        org: org.clone(),
        definition_id: trace.spec.build.definition_id,
        branch: BranchKey::of(&trace.spec.build.branch),
    });
    if let Some(definition_id) = trace.spec.manifest.definition_id {
        slots.pipelines.push(PipelineSlot {
            org: org.clone(),
            definition_id,
            branch: BranchKey::Any,
        });
    }
    let repos = std::iter::once((&trace.spec.manifest.repository, &trace.spec.manifest.branch))
        .chain(trace.spec.hld.as_ref().map(|h| (&h.repository, &h.branch)));
    for (repository, branch) in repos {
        slots.repos.push(RepoSlot {
            org: org.clone(),
            repository: repository.trim().to_lowercase(),
            branch: branch_key(branch),
        });
    }
    slots
}

/// Branch names compare case-insensitively: Azure Repos refuses branches differing only in case, and
/// over-matching is the safe side anyway.
fn branch_key(branch: &str) -> String {
    full_branch_ref(branch).to_lowercase()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BranchKey {
    Any,
    Ref(String),
}

impl BranchKey {
    fn of(branch: &str) -> Self {
        Self::Ref(branch_key(branch))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineSlot {
    org: OrgKey,
    definition_id: i64,
    branch: BranchKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RepoSlot {
    org: OrgKey,
    repository: String,
    branch: String,
}

/// Where one object is filed, so it can be unfiled on update or delete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Slots {
    pipelines: Vec<PipelineSlot>,
    repos: Vec<RepoSlot>,
}

impl Slots {
    fn is_empty(&self) -> bool {
        self.pipelines.is_empty() && self.repos.is_empty()
    }
}

/// The objects following one pipeline, by branch.
type ByBranch<R> = HashMap<BranchKey, HashSet<Arc<R>>>;

/// One kind's routing tables. Each object's reference is one allocation shared by every table that
/// files it, and equal slots are one allocation too (the gates of one pipeline all have the same): the
/// index holds every object for the life of the process.
struct Routes<R> {
    by_object: HashMap<Arc<R>, Arc<Slots>>,
    by_pipeline: HashMap<(OrgKey, i64), ByBranch<R>>,
    by_repo: HashMap<RepoSlot, HashSet<Arc<R>>>,
    interned: HashSet<Arc<Slots>>,
    /// Objects seen since the last `Init`, swapped in at `InitDone`.
    relist: Option<HashMap<R, Slots>>,
    synced: bool,
}

impl<R> Default for Routes<R> {
    fn default() -> Self {
        Self {
            by_object: HashMap::new(),
            by_pipeline: HashMap::new(),
            by_repo: HashMap::new(),
            interned: HashSet::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<R: Clone + Eq + Hash> Routes<R> {
    fn upsert(&mut self, r: R, slots: Slots) {
        if self.by_object.get(&r).is_some_and(|s| **s == slots) {
            return;
        }
        self.remove(&r);
        if slots.is_empty() {
            return;
        }
        let slots = match self.interned.get(&slots) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(slots);
                self.interned.insert(shared.clone());
                shared
            }
        };
        let r = Arc::new(r);
        for p in &slots.pipelines {
            self.by_pipeline
                .entry((p.org.clone(), p.definition_id))
                .or_default()
                .entry(p.branch.clone())
                .or_default()
                .insert(r.clone());
        }
        for repo in &slots.repos {
            self.by_repo
                .entry(repo.clone())
                .or_default()
                .insert(r.clone());
        }
        self.by_object.insert(r, slots);
    }

    fn remove(&mut self, r: &R) -> bool {
        let Some(slots) = self.by_object.remove(r) else {
            return false;
        };
        for p in &slots.pipelines {
            let key = (p.org.clone(), p.definition_id);
            if let Some(branches) = self.by_pipeline.get_mut(&key) {
                if let Some(set) = branches.get_mut(&p.branch) {
                    set.remove(r);
                    if set.is_empty() {
                        branches.remove(&p.branch);
                    }
                }
                if branches.is_empty() {
                    self.by_pipeline.remove(&key);
                }
            }
        }
        for repo in &slots.repos {
            if let Some(set) = self.by_repo.get_mut(repo) {
                set.remove(r);
                if set.is_empty() {
                    self.by_repo.remove(repo);
                }
            }
        }
        // The interning table and this one: no other object has these slots any more.
        if Arc::strong_count(&slots) == 2 {
            self.interned.remove(&*slots);
        }
        true
    }

    /// Replace everything with `objects`; returns the objects that disappeared.
    fn replace_all(&mut self, objects: HashMap<R, Slots>) -> Vec<R> {
        let gone: Vec<R> = self
            .by_object
            .keys()
            .filter(|r| !objects.contains_key(&***r))
            .map(|r| R::clone(r))
            .collect();
        for r in &gone {
            self.remove(r);
        }
        for (r, slots) in objects {
            self.upsert(r, slots);
        }
        gone
    }

    fn pipeline(&self, org: &OrgKey, definition_id: i64, branch: Option<&str>) -> Vec<R> {
        let Some(branches) = self.by_pipeline.get(&(org.clone(), definition_id)) else {
            return Vec::new();
        };
        match branch {
            None => branches.values().flatten().map(|r| R::clone(r)).collect(),
            Some(b) => [BranchKey::of(b), BranchKey::Any]
                .iter()
                .filter_map(|k| branches.get(k))
                .flatten()
                .map(|r| R::clone(r))
                .collect(),
        }
    }

    fn repository(&self, org: &OrgKey, names: &[&str], branch: &str) -> Vec<R> {
        let branch = branch_key(branch);
        names
            .iter()
            .filter_map(|name| {
                self.by_repo.get(&RepoSlot {
                    org: org.clone(),
                    repository: name.trim().to_lowercase(),
                    branch: branch.clone(),
                })
            })
            .flatten()
            .map(|r| R::clone(r))
            .collect()
    }
}

fn observe<K>(
    routes: &RwLock<Routes<ObjectRef<K>>>,
    event: &watcher::Event<K>,
    slots: fn(&K) -> Slots,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let mut routes = write(routes);
    match event {
        watcher::Event::Apply(obj) => {
            if let Some(r) = object_ref(obj) {
                routes.upsert(r, slots(obj));
            }
            Vec::new()
        }
        watcher::Event::Delete(obj) => match object_ref(obj) {
            Some(r) if routes.remove(&r) => vec![r],
            Some(r) => vec![r],
            None => Vec::new(),
        },
        watcher::Event::Init => {
            routes.relist = Some(HashMap::new());
            Vec::new()
        }
        watcher::Event::InitApply(obj) => {
            if let Some(r) = object_ref(obj) {
                let s = slots(obj);
                match routes.relist.as_mut() {
                    Some(buffer) => {
                        buffer.insert(r, s);
                    }
                    // An InitApply without Init (should not happen): apply it directly rather than lose it.
                    None => routes.upsert(r, s),
                }
            }
            Vec::new()
        }
        watcher::Event::InitDone => {
            let gone = match routes.relist.take() {
                Some(buffer) => routes.replace_all(buffer),
                None => Vec::new(),
            };
            routes.synced = true;
            gone
        }
    }
}

fn sorted<K: Resource<DynamicType = ()>>(
    refs: impl IntoIterator<Item = ObjectRef<K>>,
) -> Vec<ObjectRef<K>> {
    let mut v: Vec<_> = refs
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    v
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Keep `index` current from watches of both kinds until the streams end (they do not, normally). For a
/// controller that does not already have a watcher stream to share; costs one extra watch per kind.
pub async fn feed_from_watchers(
    gates: kube::Api<PipelineGate>,
    traces: kube::Api<ServiceTrace>,
    config: watcher::Config,
    index: std::sync::Arc<HintIndex>,
) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;

    let gate_index = index.clone();
    let gate_feed = watcher::watcher(gates, config.clone())
        .default_backoff()
        .for_each(move |ev| {
            match ev {
                Ok(ev) => gate_index.observe_gate_event(&ev),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook index: PipelineGate watch failed; retrying")
                }
            }
            futures::future::ready(())
        });
    let trace_feed = watcher::watcher(traces, config)
        .default_backoff()
        .for_each(move |ev| {
            match ev {
                Ok(ev) => index.observe_trace_event(&ev),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook index: ServiceTrace watch failed; retrying")
                }
            }
            futures::future::ready(())
        });
    futures::future::join(gate_feed, trace_feed).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(ns: &str, name: &str, org_url: &str, def: i64, branch: &str) -> PipelineGate {
        serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "azureDevOps": {"organizationUrl": org_url, "project": "Shop",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": def, "branch": branch}
            }
        }))
        .unwrap()
    }

    fn trace(
        name: &str,
        build_def: i64,
        manifest_def: Option<i64>,
        manifest_repo: &str,
        hld_repo: Option<&str>,
    ) -> ServiceTrace {
        let mut spec = json!({
            "azureDevOps": {"organizationUrl": "https://contoso.visualstudio.com", "project": "Shop",
                            "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
            "build": {"definitionId": build_def, "branch": "main"},
            "manifest": {"repository": manifest_repo, "branch": "main"},
            "deployed": {"fluxKustomization": {"name": "x"}}
        });
        if let Some(d) = manifest_def {
            spec["manifest"]["definitionId"] = json!(d);
        }
        if let Some(h) = hld_repo {
            spec["hld"] = json!({"repository": h, "branch": "release"});
        }
        serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace",
            "metadata": {"name": name, "namespace": "orders"}, "spec": spec
        }))
        .unwrap()
    }

    fn org(s: &str) -> OrgKey {
        OrgKey::from_url(s).unwrap()
    }

    fn names<K: Resource<DynamicType = ()>>(refs: &[ObjectRef<K>]) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
            .collect()
    }

    /// Issue 13, defect 3: two Azure DevOps Server collections that differ only by port are two
    /// organizations; a delivery from one never reaches the other's gates, whichever URL names it.
    #[test]
    fn objects_of_one_pipeline_share_their_slots_and_nothing_outlives_them() {
        let index = HintIndex::new();
        let (a, b) = (
            gate("ns", "a", "https://dev.azure.com/org", 7, "main"),
            gate("ns", "b", "https://dev.azure.com/org", 7, "main"),
        );
        index.apply_gate(&a);
        index.apply_gate(&b);
        index.apply_gate(&gate("ns", "c", "https://dev.azure.com/org", 8, "main"));
        {
            let routes = read(&index.gates);
            assert_eq!(routes.interned.len(), 2);
            let slots: Vec<_> = routes.by_object.values().collect();
            let shared = slots
                .iter()
                .filter(|s| s.pipelines[0].definition_id == 7)
                .collect::<Vec<_>>();
            assert!(Arc::ptr_eq(shared[0], shared[1]));
        }
        let org = OrgKey::from_url("https://dev.azure.com/org").unwrap();
        assert_eq!(index.gates_for(&org, 7, Some("refs/heads/main")).len(), 2);
        index.delete_gate(&a);
        assert_eq!(read(&index.gates).interned.len(), 2);
        index.delete_gate(&b);
        index.delete_gate(&gate("ns", "c", "https://dev.azure.com/org", 8, "main"));
        let routes = read(&index.gates);
        assert!(routes.interned.is_empty() && routes.by_object.is_empty());
        assert!(routes.by_pipeline.is_empty());
    }

    #[test]
    fn server_collections_on_two_ports_are_routed_apart() {
        let idx = HintIndex::new();
        idx.apply_gate(&gate(
            "a",
            "on-8080",
            "http://ado.corp:8080/coll",
            42,
            "main",
        ));
        idx.apply_gate(&gate(
            "b",
            "on-9090",
            "http://ado.corp:9090/coll",
            42,
            "main",
        ));
        idx.mark_synced();
        let with_container = br#"{"eventType":"build.complete","resource":{"definition":{"id":42},
            "sourceBranch":"refs/heads/main"},
            "resourceContainers":{"collection":{"baseUrl":"http://ado.corp:8080/coll/"}}}"#;
        let from_urls_only = br#"{"eventType":"build.complete","resource":{"definition":{"id":42},
            "sourceBranch":"refs/heads/main",
            "url":"http://ado.corp:9090/coll/Shop/_apis/build/Builds/7"}}"#;
        for (body, expected) in [
            (&with_container[..], "a/on-8080"),
            (&from_urls_only[..], "b/on-9090"),
        ] {
            let event = super::super::payload::parse_event(body).unwrap();
            let affected = idx.affected_by(&event.targets);
            assert_eq!(names(&affected.gates), vec![expected.to_string()]);
        }
    }

    #[test]
    fn gates_route_by_org_and_definition_narrowed_by_branch() {
        let idx = HintIndex::new();
        idx.apply_gate(&gate(
            "a",
            "main-gate",
            "https://dev.azure.com/Contoso",
            42,
            "main",
        ));
        idx.apply_gate(&gate(
            "b",
            "dev-gate",
            "https://contoso.visualstudio.com",
            42,
            "refs/heads/develop",
        ));
        idx.apply_gate(&gate(
            "c",
            "other-def",
            "https://dev.azure.com/contoso",
            43,
            "main",
        ));
        idx.apply_gate(&gate(
            "d",
            "other-org",
            "https://dev.azure.com/fabrikam",
            42,
            "main",
        ));
        let contoso = org("https://dev.azure.com/contoso");

        assert_eq!(
            names(&idx.gates_for(&contoso, 42, Some("refs/heads/main"))),
            vec!["a/main-gate"]
        );
        assert_eq!(
            names(&idx.gates_for(&contoso, 42, Some("refs/heads/MAIN"))),
            vec!["a/main-gate"]
        );
        assert_eq!(
            names(&idx.gates_for(&contoso, 42, None)),
            vec!["a/main-gate", "b/dev-gate"]
        );
        assert!(idx
            .gates_for(&contoso, 42, Some("refs/pull/7/merge"))
            .is_empty());
        assert!(idx.gates_for(&contoso, 44, None).is_empty());
        assert_eq!(
            names(&idx.gates_for(&org("https://dev.azure.com/fabrikam"), 42, None)),
            vec!["d/other-org"]
        );
    }

    #[test]
    fn update_moves_and_delete_removes() {
        let idx = HintIndex::new();
        let contoso = org("https://dev.azure.com/contoso");
        idx.apply_gate(&gate("a", "g", "https://dev.azure.com/contoso", 42, "main"));
        idx.apply_gate(&gate("a", "g", "https://dev.azure.com/contoso", 7, "main"));
        assert!(idx.gates_for(&contoso, 42, None).is_empty());
        assert_eq!(idx.gates_for(&contoso, 7, None).len(), 1);
        assert_eq!(idx.gate_count(), 1);

        idx.record_hint(
            &ObjectRef::<PipelineGate>::new("g").within("a"),
            Instant::now(),
        );
        idx.delete_gate(&gate("a", "g", "https://dev.azure.com/contoso", 7, "main"));
        assert!(idx.gates_for(&contoso, 7, None).is_empty());
        assert_eq!(idx.gate_count(), 0);
        assert!(
            read(&idx.gates).by_pipeline.is_empty(),
            "empty buckets are dropped"
        );
        assert!(idx
            .last_hint(&ObjectRef::<PipelineGate>::new("g").within("a"))
            .is_none());
    }

    #[test]
    fn suspended_and_unparseable_gates_get_no_hints() {
        let idx = HintIndex::new();
        let mut g = gate("a", "g", "https://dev.azure.com/contoso", 42, "main");
        g.spec.suspend = true;
        idx.apply_gate(&g);
        idx.apply_gate(&gate("a", "bad", "not a url", 42, "main"));
        assert!(idx
            .gates_for(&org("https://dev.azure.com/contoso"), 42, None)
            .is_empty());
        g.spec.suspend = false;
        idx.apply_gate(&g);
        assert_eq!(
            idx.gates_for(&org("https://dev.azure.com/contoso"), 42, None)
                .len(),
            1
        );
    }

    #[test]
    fn traces_route_by_build_manifest_pipeline_and_repositories() {
        let idx = HintIndex::new();
        idx.apply_trace(&trace(
            "t1",
            12,
            Some(14),
            "orders-manifests",
            Some("orders-hld"),
        ));
        idx.apply_trace(&trace(
            "t2",
            13,
            None,
            "8C1E4B7A-2F3D-4A9E-B6C5-7D0E1F2A3B4C",
            None,
        ));
        let contoso = org("https://dev.azure.com/contoso");

        assert_eq!(
            names(&idx.traces_for_pipeline(&contoso, 12, Some("refs/heads/main"))),
            vec!["orders/t1"]
        );
        assert!(idx
            .traces_for_pipeline(&contoso, 12, Some("refs/heads/feature"))
            .is_empty());
        // The manifest pipeline matches on any branch.
        assert_eq!(
            names(&idx.traces_for_pipeline(&contoso, 14, Some("refs/heads/whatever"))),
            vec!["orders/t1"]
        );
        assert_eq!(
            names(&idx.traces_for_repository(
                &contoso,
                Some("r-guid"),
                Some("Orders-Manifests"),
                "refs/heads/main"
            )),
            vec!["orders/t1"]
        );
        assert_eq!(
            names(&idx.traces_for_repository(
                &contoso,
                None,
                Some("orders-hld"),
                "refs/heads/release"
            )),
            vec!["orders/t1"]
        );
        assert!(idx
            .traces_for_repository(&contoso, None, Some("orders-hld"), "refs/heads/main")
            .is_empty());
        // A spec naming the repository by id matches a payload's id.
        assert_eq!(
            names(&idx.traces_for_repository(
                &contoso,
                Some("8c1e4b7a-2f3d-4a9e-b6c5-7d0e1f2a3b4c"),
                Some("x"),
                "refs/heads/main"
            )),
            vec!["orders/t2"]
        );
    }

    #[test]
    fn affected_by_unions_targets_and_dedups() {
        let idx = HintIndex::new();
        idx.apply_gate(&gate("a", "g", "https://dev.azure.com/contoso", 12, "main"));
        idx.apply_trace(&trace("t1", 12, None, "m", None));
        let contoso = org("https://dev.azure.com/contoso");
        let pipeline = |id| HintTarget::Pipeline {
            organization: contoso.clone(),
            project: None,
            definition_id: id,
            branch: None,
        };
        let a = idx.affected_by(&[pipeline(12), pipeline(12), pipeline(99)]);
        assert_eq!(names(&a.gates), vec!["a/g"]);
        assert_eq!(names(&a.traces), vec!["orders/t1"]);
        assert_eq!(a.len(), 2);
        assert!(idx.affected_by(&[pipeline(99)]).is_empty());
    }

    #[test]
    fn relist_swaps_in_at_init_done_and_drops_vanished_objects() {
        let idx = HintIndex::new();
        let contoso = org("https://dev.azure.com/contoso");
        assert!(!idx.is_synced());
        idx.observe_gate_event(&watcher::Event::Init);
        idx.observe_gate_event(&watcher::Event::InitApply(gate(
            "a",
            "g1",
            "https://dev.azure.com/contoso",
            1,
            "main",
        )));
        idx.observe_gate_event(&watcher::Event::InitApply(gate(
            "a",
            "g2",
            "https://dev.azure.com/contoso",
            2,
            "main",
        )));
        assert!(
            idx.gates_for(&contoso, 1, None).is_empty(),
            "not visible before InitDone"
        );
        idx.observe_gate_event(&watcher::Event::InitDone);
        assert_eq!(idx.gate_count(), 2);
        assert!(!idx.is_synced(), "traces not listed yet");
        idx.observe_trace_event(&watcher::Event::Init);
        idx.observe_trace_event(&watcher::Event::InitDone);
        assert!(idx.is_synced());

        let g2 = ObjectRef::<PipelineGate>::new("g2").within("a");
        idx.record_hint(&g2, Instant::now());
        // The watch restarts; g2 was deleted meanwhile, g3 created.
        idx.observe_gate_event(&watcher::Event::Init);
        idx.observe_gate_event(&watcher::Event::InitApply(gate(
            "a",
            "g1",
            "https://dev.azure.com/contoso",
            1,
            "main",
        )));
        idx.observe_gate_event(&watcher::Event::InitApply(gate(
            "a",
            "g3",
            "https://dev.azure.com/contoso",
            3,
            "main",
        )));
        assert_eq!(
            idx.gates_for(&contoso, 2, None).len(),
            1,
            "old contents answer during the relist"
        );
        idx.observe_gate_event(&watcher::Event::InitDone);
        assert!(idx.gates_for(&contoso, 2, None).is_empty());
        assert_eq!(idx.gates_for(&contoso, 3, None).len(), 1);
        assert_eq!(idx.gate_count(), 2);
        assert!(
            idx.last_hint(&g2).is_none(),
            "hint times of vanished objects are dropped"
        );
        assert!(idx.is_synced());

        idx.observe_gate_event(&watcher::Event::Apply(gate(
            "a",
            "g4",
            "https://dev.azure.com/contoso",
            4,
            "main",
        )));
        idx.observe_gate_event(&watcher::Event::Delete(gate(
            "a",
            "g1",
            "https://dev.azure.com/contoso",
            1,
            "main",
        )));
        assert_eq!(idx.gates_for(&contoso, 4, None).len(), 1);
        assert!(idx.gates_for(&contoso, 1, None).is_empty());
    }

    #[test]
    fn hint_times_are_per_object_and_kind() {
        let idx = HintIndex::new();
        let g = ObjectRef::<PipelineGate>::new("x").within("ns");
        let t = ObjectRef::<ServiceTrace>::new("x").within("ns");
        let at = Instant::now();
        idx.record_hint(&g, at);
        assert_eq!(idx.last_hint(&g), Some(at));
        assert_eq!(idx.last_hint(&t), None);
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let idx = std::sync::Arc::new(HintIndex::new());
        let contoso = org("https://dev.azure.com/contoso");
        std::thread::scope(|s| {
            for w in 0..4 {
                let idx = idx.clone();
                s.spawn(move || {
                    for i in 0..200 {
                        idx.apply_gate(&gate(
                            "ns",
                            &format!("g{w}-{i}"),
                            "https://dev.azure.com/contoso",
                            i % 5,
                            "main",
                        ));
                    }
                });
            }
            for _ in 0..4 {
                let idx = idx.clone();
                let contoso = contoso.clone();
                s.spawn(move || {
                    for i in 0..200 {
                        let _ = idx.gates_for(&contoso, i % 5, Some("refs/heads/main"));
                    }
                });
            }
        });
        assert_eq!(idx.gate_count(), 800);
        assert_eq!(idx.gates_for(&contoso, 1, None).len(), 160);
    }
}
