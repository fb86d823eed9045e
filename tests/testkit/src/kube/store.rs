//! The object store and the write semantics of the apiserver: resourceVersion, uid, generation, the status
//! split, optimistic concurrency, finalizers, managedFields. Independent of HTTP.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::events;
use super::managed;
use super::resources::{self, ResourceType};
use super::schema::{self, FieldValidation};
use super::status::{ApiError, Cause, Target};

/// Where an object lives: (storage group, storage plural, namespace or "", name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StoreKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed write, as watchers see it (objects in storage form).
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub kind: ChangeType,
    pub key: StoreKey,
    pub object: Value,
    pub old: Option<Value>,
}

/// The object a PUT, PATCH or apply proposes; an apply brings the managedFields it computed.
pub(crate) struct Candidate {
    pub object: Value,
    pub apply_entries: Option<Vec<managed::Entry>>,
}

/// Per-request options that shape a write.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteOptions {
    /// `fieldManager`, or the apiserver's default derived from the User-Agent.
    pub manager: String,
    pub manager_given: bool,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub force: bool,
}

/// The outcome of a write: the object as the client sees it, and warnings for the `Warning` header.
pub(crate) struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

pub(crate) struct Store {
    pub registry: Vec<ResourceType>,
    /// Changes whenever the registry does, so clients caching OpenAPI documents by hash refetch.
    pub registry_generation: u64,
    pub rv: u64,
    pub objects: BTreeMap<StoreKey, Value>,
    pub history: VecDeque<Arc<Change>>,
    /// A watch may start from any resourceVersion >= this; older ones get 410 Expired.
    pub oldest_rv: u64,
    pub max_history: usize,
    pub tx: broadcast::Sender<Arc<Change>>,
}

static UNIQUE: AtomicU64 = AtomicU64::new(1);

/// Pseudo-random 64 bits without a rand dependency: a fresh SipHash key per call, mixed with a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(UNIQUE.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

pub(crate) fn new_uid() -> String {
    let a = random_u64();
    let b = random_u64();
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn random_suffix() -> String {
    // The apiserver's generateName alphabet: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn name_causes(rt: &ResourceType, name: &str) -> Vec<Cause> {
    let label_only = rt.kind == "Namespace";
    let ok = if label_only {
        is_dns1123_label(name)
    } else {
        is_dns1123_subdomain(name)
    };
    if ok {
        return Vec::new();
    }
    let msg = if label_only {
        DNS1123_LABEL_MSG
    } else {
        DNS1123_SUBDOMAIN_MSG
    };
    vec![Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{name}\": {msg}"),
        field: "metadata.name".into(),
    }]
}

fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything that counts as "spec" for generation: the object minus metadata and (with a status
/// subresource) status.
fn spec_part(rt: &ResourceType, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if rt.status_subresource {
            m.remove("status");
        }
    }
    v
}

/// The whole object without fields that change on every write, for no-op detection.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        // A change of ownership is a change (it is persisted); a refreshed timestamp alone is not.
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
    }
    v
}

/// Fields only the server sets, restored from the stored object on every update.
const SERVER_OWNED_METADATA: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "namespace",
    "name",
];

impl Store {
    pub fn new(tx: broadcast::Sender<Arc<Change>>) -> Self {
        Store {
            registry: resources::builtins(),
            registry_generation: 0,
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest_rv: 1,
            max_history: 10_000,
            tx,
        }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.registry
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> StoreKey {
        StoreKey {
            group: rt.storage_group.clone(),
            plural: rt.storage_plural.clone(),
            namespace: if rt.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    fn target<'a>(rt: &'a ResourceType, name: &'a str) -> Target<'a> {
        Target {
            group: &rt.group,
            resource: &rt.plural,
            name,
        }
    }

    /// The stored object as the given resource version presents it.
    /// Custom resources get their schema's defaults here, as the CRD storage codec applies them to every
    /// object it decodes (see `schema::default_object`): reads, watch events and the live object that
    /// updates, patches and applies start from all see them.
    pub fn to_view(rt: &ResourceType, stored: &Value) -> Value {
        let mut v = if rt.is_events_v1() {
            events::core_to_v1(stored)
        } else {
            stored.clone()
        };
        if rt.custom {
            if let Some(schema) = rt.schema.as_deref() {
                schema::default_object(&mut v, schema);
            }
        }
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), json!(rt.api_version()));
            m.insert("kind".into(), json!(rt.kind));
        }
        v
    }

    fn from_view(rt: &ResourceType, view: Value) -> Value {
        let mut v = if rt.is_events_v1() {
            events::v1_to_core(&view)
        } else {
            view
        };
        if rt.is_events_v1() {
            if let Some(m) = v.as_object_mut() {
                m.insert("apiVersion".into(), json!("v1"));
                m.insert("kind".into(), json!("Event"));
            }
        }
        v
    }

    fn commit(&mut self, kind: ChangeType, key: StoreKey, object: Value, old: Option<Value>) {
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            key,
            object,
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.max_history {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_rv = dropped.rv;
            }
        }
        // Nobody listening is fine.
        let _ = self.tx.send(change);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Forgets every change so far: watches from any current resourceVersion get 410 Expired.
    pub fn expire_history(&mut self) {
        self.next_rv();
        self.history.clear();
        self.oldest_rv = self.rv;
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&StoreKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.to_string(),
        })
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .map(|o| Self::to_view(rt, o))
            .ok_or_else(|| ApiError::not_found(&Self::target(rt, name)))
    }

    /// Stored objects of a resource, optionally in one namespace, in key order.
    pub fn scan<'a>(
        &'a self,
        rt: &'a ResourceType,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a StoreKey, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| {
            k.group == rt.storage_group
                && k.plural == rt.storage_plural
                && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    fn check_type(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str) {
            if kind != rt.kind {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({}) or the kind ({kind}) does not match {}",
                    body.get("apiVersion").and_then(Value::as_str).unwrap_or_default(),
                    rt.api_version(),
                    rt.kind
                )));
            }
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
            if av != rt.api_version() {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        Ok(())
    }

    fn check_namespace(
        &self,
        rt: &ResourceType,
        url_ns: Option<&str>,
        body: &Value,
    ) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        if let (Some(body_ns), Some(url_ns)) = (meta_str(body, "namespace"), url_ns) {
            if !body_ns.is_empty() && body_ns != url_ns {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
        }
        Ok(())
    }

    /// Schema validation, pruning and defaulting for custom resources; name checks for all.
    fn admit(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let mut causes = if old.is_none() {
            name_causes(rt, &name)
        } else {
            Vec::new()
        };
        if !rt.custom {
            let (decoded, unknown) = super::builtin::decode(rt, obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded into a {}: {e}",
                    rt.kind
                ))
            })?;
            match opts.field_validation {
                FieldValidation::Strict if !unknown.is_empty() => {
                    let listed: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        listed.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                }
                _ => {}
            }
            *obj = decoded;
        }
        if rt.custom {
            let drop_status = old.is_none() && rt.status_subresource;
            match schema::admit(rt, obj, old, opts.field_validation, drop_status) {
                Ok(w) => warnings.extend(w),
                Err(schema::AdmitError::Invalid(c)) => causes.extend(c),
                Err(schema::AdmitError::Strict(msg)) => return Err(ApiError::bad_request(msg)),
            }
        }
        causes.extend(metadata_causes(obj));
        if rt.group.is_empty() && matches!(rt.kind.as_str(), "Secret" | "ConfigMap") {
            causes.extend(config_key_causes(obj)?);
        }
        if rt.kind == "Event" {
            causes.extend(event_causes(rt, obj));
        }
        if rt.kind == "CustomResourceDefinition" {
            causes.extend(resources::structural_causes(obj));
            if let Err(msg) = resources::from_crd(obj) {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {msg}"),
                    field: "spec".into(),
                });
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes))
        }
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        Self::check_type(rt, &body)?;
        self.check_namespace(rt, namespace, &body)?;
        let mut name = meta_str(&body, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta_str(&body, "generateName")
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            loop {
                name = format!("{prefix}{}", random_suffix());
                if !self.objects.contains_key(&Self::key(rt, namespace, &name)) {
                    break;
                }
            }
        }
        if rt.namespaced {
            let ns = namespace.ok_or_else(|| {
                ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource (post {})",
                    rt.plural
                ))
            })?;
            if !self.namespace_exists(ns) {
                return Err(ApiError::not_found(&Target {
                    group: "",
                    resource: "namespaces",
                    name: ns,
                }));
            }
            if self.namespace_terminating(ns) {
                let mut e = ApiError::new(
                    403,
                    "Forbidden",
                    format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", Self::target(rt, &name).qualified()),
                );
                e.details = Some(
                    json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                );
                return Err(e);
            }
        }
        let key = Self::key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&Self::target(rt, &name)));
        }
        let now = now_rfc3339();
        {
            let m = meta_mut(&mut body);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(namespace.unwrap_or_default()));
            } else {
                m.remove("namespace");
            }
            for f in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        if rt.status_subresource {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        body["apiVersion"] = json!(rt.api_version());
        body["kind"] = json!(rt.kind);
        let mut warnings = Vec::new();
        self.admit(rt, &mut body, None, opts, &mut warnings)?;
        builtin_defaults(rt, &mut body);
        let schema = rt.schema.as_deref();
        let mut entries = Vec::new();
        let all = managed::field_set(&body, schema);
        managed::record_update(
            &mut entries,
            &opts.manager,
            None,
            &rt.api_version(),
            &now,
            &all,
            &all,
        );
        managed::write_entries(&mut body, &entries);
        self.finish_create(rt, key, body, opts, warnings)
    }

    fn finish_create(
        &mut self,
        rt: &ResourceType,
        key: StoreKey,
        mut body: Value,
        opts: &WriteOptions,
        warnings: Vec<String>,
    ) -> Result<Written, ApiError> {
        let now = now_rfc3339();
        {
            let m = meta_mut(&mut body);
            m.insert("uid".into(), json!(new_uid()));
            m.insert("creationTimestamp".into(), json!(now));
            if rt.tracks_generation {
                m.insert("generation".into(), json!(1));
            }
        }
        if rt.kind == "CustomResourceDefinition" {
            body["status"] = resources::crd_status(&body, &now);
        }
        if opts.dry_run {
            return Ok(Written {
                object: body,
                created: true,
                warnings,
            });
        }
        let rv = self.next_rv();
        meta_mut(&mut body).insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = Self::from_view(rt, body);
        self.objects.insert(key.clone(), stored.clone());
        self.commit(ChangeType::Added, key, stored.clone(), None);
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&stored);
        }
        Ok(Written {
            object: Self::to_view(rt, &stored),
            created: true,
            warnings,
        })
    }

    /// Registers (or re-registers) the kinds a stored CRD serves.
    pub fn register_crd(&mut self, crd: &Value) {
        if let Ok(types) = resources::from_crd(crd) {
            let name = types[0].crd_name.clone();
            self.registry.retain(|r| r.crd_name != name);
            self.registry.extend(types);
            self.registry_generation += 1;
        }
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let Some(name) = meta_str(crd, "name").map(str::to_string) else {
            return;
        };
        let Some(rt) = self
            .registry
            .iter()
            .find(|r| r.crd_name.as_deref() == Some(&name))
            .cloned()
        else {
            return;
        };
        let keys: Vec<StoreKey> = self.scan(&rt, None).map(|(k, _)| k.clone()).collect();
        for k in keys {
            if let Some(obj) = self.objects.remove(&k) {
                let rv = self.next_rv();
                let mut obj = obj;
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                self.commit(ChangeType::Deleted, k, obj, None);
            }
        }
        self.registry
            .retain(|r| r.crd_name.as_deref() != Some(&name));
        self.registry_generation += 1;
    }

    /// PUT: full replacement with optimistic concurrency.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        Self::check_type(rt, &body)?;
        self.check_namespace(rt, namespace, &body)?;
        if let Some(body_name) = meta_str(&body, "name") {
            if body_name != name {
                return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
            }
        }
        let key = Self::key(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .map(|o| Self::to_view(rt, o))
            .ok_or_else(|| ApiError::not_found(&Self::target(rt, name)))?;
        match meta_str(&body, "resourceVersion") {
            None | Some("") if rt.custom => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        message: "Invalid value: 0x0: must be specified for an update".into(),
                        field: "metadata.resourceVersion".into(),
                    }],
                ))
            }
            Some(rv) if !rv.is_empty() && Some(rv) != meta_str(&old, "resourceVersion") => {
                return Err(ApiError::stale(&Self::target(rt, name)))
            }
            _ => {}
        }
        self.finish_update(
            rt,
            key,
            old,
            Candidate {
                object: body,
                apply_entries: None,
            },
            sub,
            opts,
        )
    }

    /// PATCH with a merge, JSON or strategic merge patch; `apply` for server-side apply.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        patch: &super::patch::PatchBody,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        use super::patch::PatchBody;
        if let PatchBody::Apply(applied) = patch {
            return self.apply(rt, namespace, name, sub, applied, opts);
        }
        let key = Self::key(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .map(|o| Self::to_view(rt, o))
            .ok_or_else(|| ApiError::not_found(&Self::target(rt, name)))?;
        let mut new = super::patch::apply_patch(rt, &old, patch)?;
        Self::check_type(rt, &new)?;
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&new, "name").unwrap_or_default()
            )));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion") {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(&Self::target(rt, name)));
            }
        }
        if new.get("metadata").is_none() {
            new["metadata"] = json!({});
        }
        self.finish_update(
            rt,
            key,
            old,
            Candidate {
                object: new,
                apply_entries: None,
            },
            sub,
            opts,
        )
    }

    fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        applied: &Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let existing = self
            .objects
            .get(&Self::key(rt, namespace, name))
            .map(|o| Self::to_view(rt, o));
        if !opts.manager_given {
            return Err(ApiError::bad_request(
                "PATCH requests with apply content type must have fieldManager parameter",
            ));
        }
        Self::check_type(rt, applied)?;
        if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind are required for apply patch",
            ));
        }
        self.check_namespace(rt, namespace, applied)?;
        if let Some(n) = meta_str(applied, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let mut applied = applied.clone();
        // The endpoint decides which part of the applied configuration counts.
        if let Some(m) = applied.as_object_mut() {
            match sub {
                Some("status") => m.retain(|k, _| {
                    k == "status" || k == "apiVersion" || k == "kind" || k == "metadata"
                }),
                _ if rt.status_subresource => {
                    m.remove("status");
                }
                _ => {}
            }
            if sub == Some("status") {
                if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                    md.retain(|k, _| k == "name" || k == "namespace");
                }
            }
        }
        let now = now_micro();
        let schema = rt.schema.as_deref();
        match existing {
            None => {
                if sub.is_some() {
                    return Err(ApiError::not_found(&Self::target(rt, name)));
                }
                let mut body = applied.clone();
                meta_mut(&mut body).insert("name".into(), json!(name));
                let mut create_opts = opts.clone();
                create_opts.dry_run = true;
                // Validate and default exactly as a create would, then record the Apply ownership.
                let mut probe = self.create(rt, namespace, body, &create_opts)?;
                let api_version = rt.api_version();
                let who = managed::Applier {
                    manager: &opts.manager,
                    subresource: None,
                    api_version: &api_version,
                    now: &now,
                    force: true,
                };
                let outcome =
                    managed::apply(&json!({"metadata": {}}), &applied, schema, Vec::new(), &who)
                        .map_err(|c| {
                            ApiError::conflict(
                                &Self::target(rt, name),
                                &managed::conflict_message(&c),
                            )
                        })?;
                managed::write_entries(&mut probe.object, &outcome.entries);
                for f in ["uid", "creationTimestamp", "generation"] {
                    meta_mut(&mut probe.object).remove(f);
                }
                if opts.dry_run {
                    return Ok(probe);
                }
                let key = Self::key(rt, namespace, name);
                self.finish_create(rt, key, probe.object, opts, probe.warnings)
            }
            Some(old) => {
                if let Some(rv) = meta_str(&applied, "resourceVersion") {
                    if Some(rv) != meta_str(&old, "resourceVersion") {
                        return Err(ApiError::stale(&Self::target(rt, name)));
                    }
                }
                let entries = managed::read_entries(&old);
                let api_version = rt.api_version();
                let who = managed::Applier {
                    manager: &opts.manager,
                    subresource: sub,
                    api_version: &api_version,
                    now: &now,
                    force: opts.force,
                };
                let outcome = managed::apply(&old, &applied, schema, entries, &who).map_err(|conflicts| {
                    let mut e = ApiError::conflict(&Self::target(rt, name), "");
                    e.message = managed::conflict_message(&conflicts);
                    e.details = Some(json!({
                        "name": name, "group": rt.group, "kind": rt.plural,
                        "causes": conflicts.iter().map(|c| json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                            "field": managed::display_path(&c.path),
                        })).collect::<Vec<_>>(),
                    }));
                    e
                })?;
                let key = Self::key(rt, namespace, name);
                let candidate = Candidate {
                    object: outcome.object,
                    apply_entries: Some(outcome.entries),
                };
                self.finish_update(rt, key, old, candidate, sub, opts)
            }
        }
    }

    /// The common tail of PUT and PATCH: endpoint split, server-owned metadata, validation, generation,
    /// managedFields, no-op detection, finalizer completion.
    fn finish_update(
        &mut self,
        rt: &ResourceType,
        key: StoreKey,
        old: Value,
        candidate: Candidate,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let Candidate {
            object: candidate,
            apply_entries,
        } = candidate;
        let name = key.name.clone();
        let mut new = match sub {
            Some("status") => {
                let mut n = old.clone();
                match candidate.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
            Some(other) => {
                return Err(ApiError::path_not_found().with_message(format!(
                    "the server could not find the requested resource ({other})"
                )))
            }
            None => {
                let mut n = candidate;
                if rt.status_subresource {
                    match old.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                n
            }
        };
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        {
            let old_meta = meta(&old).clone();
            let m = meta_mut(&mut new);
            for f in SERVER_OWNED_METADATA {
                match old_meta.get(*f) {
                    Some(v) => m.insert(f.to_string(), v.clone()),
                    None => m.remove(*f),
                };
            }
            m.insert(
                "resourceVersion".into(),
                old_meta
                    .get("resourceVersion")
                    .cloned()
                    .unwrap_or(json!("")),
            );
        }
        if meta(&old).contains_key("deletionTimestamp") {
            let before = finalizers(&old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(&rt.kind, &rt.group, &name, vec![Cause {
                    reason: "FieldValueForbidden",
                    message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}"),
                    field: "metadata.finalizers".into(),
                }]));
            }
        }
        if rt.group.is_empty() && rt.kind == "Secret" {
            merge_string_data(&mut new);
        }
        let mut warnings = Vec::new();
        self.admit(rt, &mut new, Some(&old), opts, &mut warnings)?;
        if rt.tracks_generation && spec_part(rt, &new) != spec_part(rt, &old) {
            let g = meta(&old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let now = now_micro();
        let entries = match apply_entries {
            Some(e) => e,
            None => {
                let schema = rt.schema.as_deref();
                let mut entries = managed::read_entries(&old);
                let changed = managed::changed_paths(&old, &new, schema);
                let present = managed::field_set(&new, schema);
                managed::record_update(
                    &mut entries,
                    &opts.manager,
                    sub,
                    &rt.api_version(),
                    &now,
                    &changed,
                    &present,
                );
                entries
            }
        };
        managed::write_entries(&mut new, &entries);
        if comparable(&new) == comparable(&old) {
            return Ok(Written {
                object: old,
                created: false,
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object: new,
                created: false,
                warnings,
            });
        }
        if rt.kind == "CustomResourceDefinition" {
            let n = now_rfc3339();
            new["status"] = resources::crd_status(&new, &n);
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = Self::from_view(rt, new);
        let old_stored = self.objects.insert(key.clone(), stored.clone());
        self.commit(
            ChangeType::Modified,
            key.clone(),
            stored.clone(),
            old_stored,
        );
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&stored);
        }
        if meta(&stored).contains_key("deletionTimestamp") && finalizers(&stored).is_empty() {
            self.remove(rt, &key);
        }
        Ok(Written {
            object: Self::to_view(rt, &stored),
            created: false,
            warnings,
        })
    }

    /// Removes an object for good and tells watchers; namespaces take their contents with them.
    fn remove(&mut self, rt: &ResourceType, key: &StoreKey) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.commit(ChangeType::Deleted, key.clone(), obj.clone(), None);
        if rt.kind == "CustomResourceDefinition" {
            self.unregister_crd(&obj);
        }
        if !key.namespace.is_empty() {
            self.finish_namespace_if_empty(&key.namespace);
        }
        Some(obj)
    }

    fn namespace_key(ns: &str) -> StoreKey {
        StoreKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.to_string(),
        }
    }

    fn namespace_terminating(&self, ns: &str) -> bool {
        self.objects
            .get(&Self::namespace_key(ns))
            .is_some_and(|n| meta(n).contains_key("deletionTimestamp"))
    }

    /// The namespace controller's last step: a terminating namespace goes once nothing is left in it.
    fn finish_namespace_if_empty(&mut self, ns: &str) {
        if self.namespace_terminating(ns) && !self.objects.keys().any(|k| k.namespace == ns) {
            let key = Self::namespace_key(ns);
            if let Some(mut obj) = self.objects.remove(&key) {
                let rv = self.next_rv();
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                self.commit(ChangeType::Deleted, key, obj, None);
            }
        }
    }

    /// Deleting a namespace marks it Terminating and deletes its contents (finalizers are honoured: the
    /// namespace stays until the last object is gone), as the namespace controller does.
    fn delete_namespace(&mut self, rt: &ResourceType, name: &str) -> Result<Value, ApiError> {
        let key = Self::namespace_key(name);
        let stored = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&Self::target(rt, name)))?;
        if !meta(&stored).contains_key("deletionTimestamp") {
            let mut marked = stored.clone();
            meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
            marked["status"] = json!({"phase": "Terminating"});
            let rv = self.next_rv();
            meta_mut(&mut marked).insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects.insert(key.clone(), marked.clone());
            self.commit(
                ChangeType::Modified,
                key.clone(),
                marked,
                Some(stored.clone()),
            );
        }
        let contents: Vec<StoreKey> = self
            .objects
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        for k in contents {
            let Some(content_type) = self
                .registry
                .iter()
                .find(|r| {
                    r.storage_group == k.group && r.storage_plural == k.plural && r.group == k.group
                })
                .cloned()
            else {
                continue;
            };
            self.delete(&content_type, Some(name), &k.name, &json!({}), false)?;
        }
        let view = self.objects.get(&key).map(|o| Self::to_view(rt, o));
        self.finish_namespace_if_empty(name);
        Ok(view.unwrap_or_else(|| Self::to_view(rt, &stored)))
    }

    /// DELETE: with finalizers only marks the object (deletionTimestamp); removes it otherwise.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if rt.kind == "Namespace" && rt.group.is_empty() && !dry_run {
            return self.delete_namespace(rt, name);
        }
        let key = Self::key(rt, namespace, name);
        let stored = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&Self::target(rt, name)))?;
        if let Some(pre) = options.get("preconditions") {
            if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
                if Some(uid) != meta_str(&stored, "uid") {
                    return Err(ApiError::conflict(
                        &Self::target(rt, name),
                        &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta_str(&stored, "uid").unwrap_or_default()),
                    ));
                }
            }
            if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
                if Some(rv) != meta_str(&stored, "resourceVersion") {
                    return Err(ApiError::conflict(
                        &Self::target(rt, name),
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            meta_str(&stored, "resourceVersion").unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        if dry_run {
            return Ok(Self::to_view(rt, &stored));
        }
        if !finalizers(&stored).is_empty() {
            if meta(&stored).contains_key("deletionTimestamp") {
                return Ok(Self::to_view(rt, &stored));
            }
            let mut marked = stored.clone();
            {
                let m = meta_mut(&mut marked);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if let Some(g) = m.get("generation").and_then(Value::as_i64) {
                    if g > 0 {
                        m.insert("generation".into(), json!(g + 1));
                    }
                }
            }
            if rt.kind == "Namespace" {
                marked["status"] = json!({"phase": "Terminating"});
            }
            let rv = self.next_rv();
            meta_mut(&mut marked).insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects.insert(key.clone(), marked.clone());
            self.commit(ChangeType::Modified, key, marked.clone(), Some(stored));
            return Ok(Self::to_view(rt, &marked));
        }
        let removed = self.remove(rt, &key).unwrap_or(stored);
        Ok(Self::to_view(rt, &removed))
    }
}

impl ApiError {
    fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

/// Defaults the apiserver fills in for built-in kinds.
fn builtin_defaults(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "Secret") => {
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
            merge_string_data(obj);
        }
        _ => {}
    }
}

/// Secret `stringData` is write-only: merged into `data`, never stored.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(m) = obj.as_object_mut() else { return };
    let data = m.entry("data").or_insert_with(|| json!({}));
    for (k, v) in sd {
        let s = v.as_str().unwrap_or_default();
        data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
    }
}

/// The apiserver's checks on Events that clients most often get wrong: events.k8s.io/v1 requires the
/// reporting fields, and the regarded object must live in the Event's namespace.
fn event_causes(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let required = |field: &str| Cause {
        reason: "FieldValueRequired",
        message: "Required value".into(),
        field: field.to_string(),
    };
    let (regarding, fields): (&str, &[&str]) = if rt.is_events_v1() {
        (
            "regarding",
            &[
                "eventTime",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
            ],
        )
    } else {
        ("involvedObject", &[])
    };
    for f in fields {
        if obj.get(*f).is_none_or(|v| v.is_null() || v == "") {
            causes.push(required(f));
        }
    }
    if rt.is_events_v1() {
        // events.k8s.io/v1 length limits (NoteLengthLimit, ReasonLengthLimit, ActionLengthLimit, ...).
        for (f, limit) in [
            ("note", 1024),
            ("reason", 128),
            ("action", 128),
            ("reportingInstance", 128),
            ("reportingController", 253),
        ] {
            if obj
                .get(f)
                .and_then(Value::as_str)
                .is_some_and(|v| v.len() > limit)
            {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    message: format!("Too long: may not be more than {limit} bytes"),
                    field: f.to_string(),
                });
            }
        }
    }
    let event_ns = meta_str(obj, "namespace").unwrap_or_default();
    if let Some(ns) = obj
        .get(regarding)
        .and_then(|r| r.get("namespace"))
        .and_then(Value::as_str)
    {
        if !ns.is_empty() && ns != event_ns {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: \"{ns}\": does not match event.namespace"),
                field: format!("{regarding}.namespace"),
            });
        }
    }
    causes
}

const LABEL_KEY_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// The apiserver's limit on the total size of annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// ObjectMeta validation every kind gets: label keys and values, annotation keys and total size.
fn metadata_causes(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let m = meta(obj);
    for (field, check_values) in [("labels", true), ("annotations", false)] {
        let Some(map) = m.get(field) else { continue };
        let Some(map) = map.as_object() else {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                message: "Invalid value: must be a map of strings".into(),
                field: format!("metadata.{field}"),
            });
            continue;
        };
        let mut total = 0;
        for (k, v) in map {
            if !super::selectors::valid_label_key(k) {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: \"{k}\": {LABEL_KEY_MSG}"),
                    field: format!("metadata.{field}"),
                });
            }
            let Some(v) = v.as_str() else {
                causes.push(Cause {
                    reason: "FieldValueTypeInvalid",
                    message: format!("Invalid value: {v}: must be a string"),
                    field: format!("metadata.{field}.{k}"),
                });
                continue;
            };
            total += k.len() + v.len();
            if check_values && !super::selectors::valid_label_value(v) {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: \"{v}\": {LABEL_VALUE_MSG}"),
                    field: format!("metadata.{field}"),
                });
            }
        }
        if !check_values && total > MAX_ANNOTATIONS_BYTES {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
                field: "metadata.annotations".into(),
            });
        }
    }
    causes
}

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Secret and ConfigMap keys must be config keys; Secret data (and ConfigMap binaryData) must be base64,
/// which the apiserver already checks while decoding (400).
fn config_key_causes(obj: &Value) -> Result<Vec<Cause>, ApiError> {
    use base64::Engine as _;
    let mut causes = Vec::new();
    let binary_fields: &[&str] = if obj.get("kind").and_then(Value::as_str) == Some("Secret") {
        &["data"]
    } else {
        &["binaryData"]
    };
    for field in ["data", "binaryData"] {
        let Some(map) = obj.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            let key_ok = !k.is_empty()
                && k.len() <= 253
                && k != "."
                && k != ".."
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !key_ok {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: \"{k}\": {CONFIG_KEY_MSG}"),
                    field: format!("{field}[{k}]"),
                });
            }
            if binary_fields.contains(&field) {
                let text = v.as_str().unwrap_or_default();
                if let Err(e) = base64::engine::general_purpose::STANDARD.decode(text) {
                    return Err(ApiError::bad_request(format!(
                        "illegal base64 data in {field}[{k}]: {e}"
                    )));
                }
            }
        }
    }
    Ok(causes)
}
