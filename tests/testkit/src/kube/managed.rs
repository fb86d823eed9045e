//! Field ownership for server-side apply: field sets in the FieldsV1 encoding, apply merges, conflicts.
//!
//! A path is a list of FieldsV1 keys (`f:spec`, `k:{"type":"Ready"}`, `v:"x"`); a field set holds the paths
//! a manager owns: scalars, atomic lists, members of set lists and items of map lists.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

pub(crate) type Path = Vec<String>;
pub(crate) type FieldSet = BTreeSet<Path>;

/// Metadata fields the apiserver never tracks in managedFields.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
];

fn metadata_schema() -> &'static Value {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        json!({"type": "object", "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"], "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        }})
    })
}

/// The schema of field `name` inside an object schema; the root's `metadata` gets the ObjectMeta shape.
pub(crate) fn child_schema<'a>(
    schema: Option<&'a Value>,
    name: &str,
    at_root: bool,
) -> Option<&'a Value> {
    if at_root && name == "metadata" {
        return Some(metadata_schema());
    }
    let s = schema?;
    if let Some(p) = s.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    match s.get("additionalProperties") {
        Some(ap @ Value::Object(_)) => Some(ap),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum ListKind<'a> {
    Map(Vec<&'a str>),
    Set,
    Atomic,
}

fn list_kind(schema: Option<&Value>) -> ListKind<'_> {
    let Some(s) = schema else {
        return ListKind::Atomic;
    };
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => ListKind::Map(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|ks| ks.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
        ),
        Some("set") => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

fn key_element(item: &Value, keys: &[&str]) -> String {
    let mut k = BTreeMap::new();
    for key in keys {
        if let Some(v) = item.get(*key) {
            k.insert(key.to_string(), v.clone());
        }
    }
    format!("k:{}", serde_json::to_string(&k).unwrap_or_default())
}

fn value_element(v: &Value) -> String {
    format!("v:{v}")
}

/// Every owned path in `obj` (an applied configuration or a whole object).
pub(crate) fn field_set(obj: &Value, schema: Option<&Value>) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            prefix.push(format!("f:{k}"));
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta {
                        if UNTRACKED_METADATA.contains(&mk.as_str()) {
                            continue;
                        }
                        prefix.push(format!("f:{mk}"));
                        walk(
                            mv,
                            child_schema(Some(metadata_schema()), mk, false),
                            &mut prefix,
                            &mut out,
                        );
                        prefix.pop();
                    }
                }
            } else {
                walk(v, child_schema(schema, k, true), &mut prefix, &mut out);
            }
            prefix.pop();
        }
    }
    out
}

fn walk(v: &Value, schema: Option<&Value>, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(format!("f:{k}"));
                walk(child, child_schema(schema, k, false), prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => match list_kind(schema) {
            ListKind::Map(keys) => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for item in items {
                    prefix.push(key_element(item, &keys));
                    out.insert(prefix.clone());
                    walk(item, item_schema, prefix, out);
                    prefix.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    prefix.push(value_element(item));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListKind::Atomic => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at `path`, if present.
pub(crate) fn get_at<'a>(
    obj: &'a Value,
    path: &[String],
    schema: Option<&Value>,
) -> Option<&'a Value> {
    let mut cur = obj;
    let mut sch = schema;
    for (i, el) in path.iter().enumerate() {
        if let Some(name) = el.strip_prefix("f:") {
            sch = child_schema(sch, name, i == 0);
            cur = cur.get(name)?;
        } else if el.starts_with("k:") {
            let keys = match list_kind(sch) {
                ListKind::Map(k) => k,
                _ => return None,
            };
            let found = cur
                .as_array()?
                .iter()
                .find(|it| key_element(it, &keys) == *el)?;
            sch = sch.and_then(|s| s.get("items"));
            cur = found;
        } else if el.starts_with("v:") {
            return cur.as_array()?.iter().find(|it| value_element(it) == *el);
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the field, list item or set member at `path`, if present.
pub(crate) fn remove_at(obj: &mut Value, path: &[String], schema: Option<&Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut sch = schema;
    let mut cur = obj;
    for (i, el) in parents.iter().enumerate() {
        if let Some(name) = el.strip_prefix("f:") {
            sch = child_schema(sch, name, i == 0);
            match cur.get_mut(name) {
                Some(next) => cur = next,
                None => return,
            }
        } else if el.starts_with("k:") {
            let keys = match list_kind(sch) {
                ListKind::Map(k) => k,
                _ => return,
            };
            let Some(arr) = cur.as_array_mut() else {
                return;
            };
            match arr.iter_mut().find(|it| key_element(it, &keys) == *el) {
                Some(next) => cur = next,
                None => return,
            }
            sch = sch.and_then(|s| s.get("items"));
        } else {
            return;
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
    } else if last.starts_with("k:") {
        if let ListKind::Map(keys) = list_kind(sch) {
            if let Some(arr) = cur.as_array_mut() {
                arr.retain(|it| key_element(it, &keys) != *last);
            }
        }
    } else if last.starts_with("v:") {
        if let Some(arr) = cur.as_array_mut() {
            arr.retain(|it| value_element(it) != *last);
        }
    }
}

/// Merges an applied configuration into the live object: maps deep, map lists by key, sets by value,
/// everything else replaced.
pub(crate) fn merge_applied(
    live: &Value,
    applied: &Value,
    schema: Option<&Value>,
    at_root: bool,
) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, av) in a {
                let merged = match l.get(k) {
                    Some(lv) => merge_applied(lv, av, child_schema(schema, k, at_root), false),
                    None => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match list_kind(schema) {
            ListKind::Map(keys) => {
                let item_schema = schema.and_then(|s| s.get("items"));
                let mut out = l.clone();
                for item in a {
                    let k = key_element(item, &keys);
                    match out.iter().position(|it| key_element(it, &keys) == k) {
                        Some(pos) => out[pos] = merge_applied(&out[pos], item, item_schema, false),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
            ListKind::Set => {
                let mut out = l.clone();
                for item in a {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListKind::Atomic => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// Paths whose value differs between `old` and `new` (added, changed or removed).
pub(crate) fn changed_paths(old: &Value, new: &Value, schema: Option<&Value>) -> FieldSet {
    let old_set = field_set(old, schema);
    let new_set = field_set(new, schema);
    let mut out = FieldSet::new();
    for p in new_set.iter() {
        let is_item = p.last().is_some_and(|e| e.starts_with("k:"));
        if !old_set.contains(p) || (!is_item && get_at(old, p, schema) != get_at(new, p, schema)) {
            out.insert(p.clone());
        }
    }
    for p in old_set.difference(&new_set) {
        out.insert(p.clone());
    }
    out
}

/// FieldsV1 JSON for a set.
pub(crate) fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    'paths: for path in set {
        let mut node = &mut root;
        for el in path {
            let entry = node.entry(el.clone()).or_insert_with(|| json!({}));
            let Value::Object(m) = entry else {
                continue 'paths;
            };
            node = m;
        }
        // Mark the path itself as a member when it also has children (or will get them later).
        node.insert(".".into(), json!({}));
    }
    Value::Object(strip_lone_dots(root))
}

/// `{".": {}}` alone means a leaf, which FieldsV1 writes as `{}`.
fn strip_lone_dots(mut m: Map<String, Value>) -> Map<String, Value> {
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if let Some(Value::Object(child)) = m.remove(&k) {
            let mut child = strip_lone_dots(child);
            if child.len() == 1 && child.contains_key(".") {
                child.clear();
            }
            m.insert(k, Value::Object(child));
        } else if k == "." {
            m.insert(k, json!({}));
        }
    }
    m
}

/// The set a FieldsV1 JSON encodes.
pub(crate) fn decode(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn rec(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if !prefix.is_empty() && (m.is_empty() || m.contains_key(".")) {
            out.insert(prefix.clone());
        }
        for (k, child) in m {
            if k == "." {
                continue;
            }
            prefix.push(k.clone());
            rec(child, prefix, out);
            prefix.pop();
        }
    }
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// A path as the apiserver prints it in conflicts: `.spec.conditions[type="Ready"].status`.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parsed: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .map(|e| Entry {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    fields: e.get("fieldsV1").map(decode).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who changed what in a non-apply write: `changed` moves to `manager`'s Update entry.
pub(crate) fn record_update(
    entries: &mut Vec<Entry>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    changed: &FieldSet,
    still_present: &FieldSet,
) {
    if changed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && still_present.contains(p));
    }
    let mine: FieldSet = changed.intersection(still_present).cloned().collect();
    match entries.iter_mut().find(|e| {
        e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == subresource
    }) {
        Some(e) => {
            e.fields.extend(mine);
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.map(str::to_string),
            fields: mine,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// A field owned by another manager with a different value than the applied configuration.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

pub(crate) struct ApplyOutcome {
    pub object: Value,
    pub entries: Vec<Entry>,
}

/// Who applies, where, and how.
pub(crate) struct Applier<'a> {
    pub manager: &'a str,
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    pub now: &'a str,
    pub force: bool,
}

/// Server-side apply of `applied` by `who` onto `live` (already stripped of the parts this endpoint may
/// not change). Conflicts are returned unless `who.force`.
pub(crate) fn apply(
    live: &Value,
    applied: &Value,
    schema: Option<&Value>,
    mut entries: Vec<Entry>,
    who: &Applier,
) -> Result<ApplyOutcome, Vec<Conflict>> {
    let Applier {
        manager,
        subresource,
        api_version,
        now,
        force,
    } = *who;
    let applied_set = field_set(applied, schema);
    let mut conflicts = Vec::new();
    // Managers are identified by name, operation and subresource, as in structured-merge-diff: fields the
    // same name changed by a non-apply write can conflict with its own apply.
    let is_me = |e: &Entry| {
        e.manager == manager && e.operation == "Apply" && e.subresource.as_deref() == subresource
    };
    for e in entries.iter() {
        if is_me(e) {
            continue;
        }
        for p in e.fields.intersection(&applied_set) {
            if p.last()
                .is_some_and(|el| el.starts_with("k:") || el.starts_with("v:"))
            {
                continue;
            }
            if get_at(live, p, schema) != get_at(applied, p, schema) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let conflicting: FieldSet = conflicts.iter().map(|c| c.path.clone()).collect();
    for e in entries.iter_mut() {
        if !is_me(e) {
            e.fields.retain(|p| !conflicting.contains(p));
        }
    }
    let mut object = merge_applied(live, applied, schema, true);
    let previous: FieldSet = entries
        .iter()
        .find(|e| is_me(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // Pruning as structured-merge-diff's `Updater.prune` does (merge/update.go): remove what this manager
    // applied last time, with named (struct) fields counted as members when anything under them is
    // (`EnsureNamedFieldsAreMembers`), except what any manager, this one's new configuration included,
    // still owns (`addBackOwnedItems`). Removing a path removes everything under it, so a struct whose
    // fields were all dropped goes as a whole instead of staying behind as `{}`.
    let mut still_owned: FieldSet = entries
        .iter()
        .filter(|e| !is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    still_owned.extend(applied_set.iter().cloned());
    let still_owned = with_named_parents(&still_owned, schema);
    let mut dropped: Vec<Path> = with_named_parents(&previous, schema)
        .difference(&still_owned)
        .cloned()
        .collect();
    // Shallowest first: a dropped list item or struct goes as a whole (removing its key fields first
    // would make a list item unfindable).
    dropped.sort_by_key(Vec::len);
    for p in dropped {
        remove_at(&mut object, &p, schema);
    }
    match entries.iter_mut().find(|e| {
        e.manager == manager && e.operation == "Apply" && e.subresource.as_deref() == subresource
    }) {
        Some(e) => {
            e.fields = applied_set;
            e.api_version = api_version.to_string();
            e.time = now.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.map(str::to_string),
            fields: applied_set,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(ApplyOutcome { object, entries })
}

/// `set` plus every struct field above its paths (structured-merge-diff's
/// `Set.EnsureNamedFieldsAreMembers`): a prefix `f:name` counts when the schema declares `name` as a
/// property of its parent. Map entries (`additionalProperties`, unknown fields kept by
/// `x-kubernetes-preserve-unknown-fields`) and list items are not named fields.
fn with_named_parents(set: &FieldSet, schema: Option<&Value>) -> FieldSet {
    let mut out = set.clone();
    for path in set {
        let mut sch = schema;
        for (i, el) in path.iter().enumerate().take(path.len().saturating_sub(1)) {
            if let Some(name) = el.strip_prefix("f:") {
                let named = if i == 0 {
                    name == "metadata"
                        || sch.is_none_or(|s| {
                            s.get("properties").is_some_and(|p| p.get(name).is_some())
                        })
                } else {
                    sch.and_then(|s| s.get("properties"))
                        .is_some_and(|p| p.get(name).is_some())
                };
                if named {
                    out.insert(path[..=i].to_vec());
                }
                sch = child_schema(sch, name, i == 0);
            } else if el.starts_with("k:") {
                sch = sch.and_then(|s| s.get("items"));
            } else {
                break;
            }
        }
    }
    out
}

/// The apiserver's wording for apply conflicts.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let mut by_manager: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry((c.manager.as_str(), c.api_version.as_str()))
            .or_default()
            .push(display_path(&c.path));
    }
    let noun = if n == 1 { "conflict" } else { "conflicts" };
    if n == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            display_path(&c.path)
        );
    }
    let mut s = format!("Apply failed with {n} {noun}:");
    for ((m, v), paths) in by_manager {
        s.push_str(&format!(" conflicts with \"{m}\" using {v}:"));
        for p in paths {
            s.push_str(&format!("\n- {p}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(manager: &str, force: bool) -> Applier<'_> {
        Applier {
            manager,
            subresource: None,
            api_version: "x/v1",
            now: "t",
            force,
        }
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}},
            "status": {"type": "object", "properties": {"conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object"}}}}
        }})
    }

    #[test]
    fn field_set_round_trips_through_fields_v1() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "tags": ["a"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let s = schema();
        let set = field_set(&obj, Some(&s));
        assert!(set.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        assert!(set.contains(&vec![
            "f:metadata".to_string(),
            "f:labels".to_string(),
            "f:app".to_string()
        ]));
        assert!(set.contains(&vec![
            "f:status".to_string(),
            "f:conditions".to_string(),
            "k:{\"type\":\"Ready\"}".to_string()
        ]));
        assert!(!set.iter().any(|p| p.contains(&"f:name".to_string())));
        let encoded = encode(&set);
        assert_eq!(
            encoded["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"]["."],
            json!({})
        );
        assert_eq!(encoded["f:spec"]["f:replicas"], json!({}));
        assert_eq!(decode(&encoded), set);
    }

    #[test]
    fn apply_merges_map_lists_and_detects_conflicts() {
        let s = schema();
        let live = json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}, "status": {"conditions": [{"type": "A", "status": "True"}]}});
        let first = apply(
            &live,
            &json!({"spec": {"replicas": 1}}),
            Some(&s),
            vec![],
            &who("one", false),
        )
        .unwrap();
        let conflict = apply(
            &first.object,
            &json!({"spec": {"replicas": 3}}),
            Some(&s),
            first.entries.clone(),
            &who("two", false),
        );
        let conflicts = conflict.err().unwrap();
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 1 conflict: conflict with \"one\" using x/v1: .spec.replicas"
        );
        // Same value: shared ownership, no conflict.
        assert!(apply(
            &first.object,
            &json!({"spec": {"replicas": 1}}),
            Some(&s),
            first.entries.clone(),
            &who("two", false)
        )
        .is_ok());
        let forced = apply(
            &first.object,
            &json!({"spec": {"replicas": 3}}),
            Some(&s),
            first.entries.clone(),
            &who("two", true),
        )
        .unwrap();
        assert_eq!(forced.object["spec"]["replicas"], 3);
        assert!(!forced.entries.iter().any(|e| e.manager == "one"));
        let merged = apply(
            &live,
            &json!({"status": {"conditions": [{"type": "B", "status": "False"}]}}),
            Some(&s),
            vec![],
            &who("c", false),
        )
        .unwrap();
        assert_eq!(
            merged.object["status"]["conditions"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_managers_own_update_entry_conflicts_with_its_apply() {
        let s = schema();
        let live = json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}});
        let all = field_set(&live, Some(&s));
        let mut entries = Vec::new();
        record_update(&mut entries, "m", None, "x/v1", "t", &all, &all);
        let err = apply(
            &live,
            &json!({"spec": {"replicas": 2}}),
            Some(&s),
            entries.clone(),
            &who("m", false),
        )
        .err()
        .unwrap();
        assert_eq!(err[0].manager, "m");
        assert!(apply(
            &live,
            &json!({"spec": {"replicas": 2}}),
            Some(&s),
            entries,
            &who("m", true)
        )
        .is_ok());
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let s = schema();
        let live = json!({"metadata": {"name": "a"}});
        let a = apply(
            &live,
            &json!({"spec": {"replicas": 1, "tags": ["x"]}}),
            Some(&s),
            vec![],
            &who("m", false),
        )
        .unwrap();
        let b = apply(
            &a.object,
            &json!({"spec": {"replicas": 1}}),
            Some(&s),
            a.entries,
            &who("m", false),
        )
        .unwrap();
        assert_eq!(b.object["spec"], json!({"replicas": 1}));
    }

    #[test]
    fn changed_paths_sees_additions_changes_and_removals() {
        let s = schema();
        let old = json!({"spec": {"replicas": 1, "tags": ["a"]}});
        let new = json!({"spec": {"replicas": 2}, "metadata": {"labels": {"x": "y"}}});
        let c = changed_paths(&old, &new, Some(&s));
        assert!(c.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        assert!(c.contains(&vec!["f:spec".to_string(), "f:tags".to_string()]));
        assert!(c.contains(&vec![
            "f:metadata".to_string(),
            "f:labels".to_string(),
            "f:x".to_string()
        ]));
    }
}
