//! The resource types the emulator serves: built-in kinds lockstep and kubectl use, plus every registered CRD.

use std::sync::Arc;

use serde_json::{json, Value};

/// One `additionalPrinterColumns` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub json_path: String,
    pub priority: i64,
}

/// A served (group, version, resource).
#[derive(Clone, Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Whether `metadata.generation` exists for this kind (CRDs and workloads; not Secrets, Leases, ...).
    pub tracks_generation: bool,
    /// Served from a CustomResourceDefinition: validated against its schema, pruned, no strategic merge.
    pub custom: bool,
    /// For CRDs: `openAPIV3Schema`. For built-ins: a structural hint (list types) used by server-side apply.
    pub schema: Option<Arc<Value>>,
    /// The schema's `x-kubernetes-validations` rules, compiled once when the CRD is registered, as
    /// apiextensions-apiserver compiles them once per CRD version into the serving info it caches
    /// (`pkg/apiserver/customresource_handler.go` `getOrCreateServingInfoFor` →
    /// `pkg/apiserver/schema/cel.NewValidator`), not per request. `None` when the schema has no rules.
    pub cel_rules: Option<Arc<kube_cel::CompiledSchema>>,
    pub printer_columns: Vec<PrinterColumn>,
    /// Objects live under (storage_group, storage_plural): `events.k8s.io` events share core events' storage.
    pub storage_group: String,
    pub storage_plural: String,
    /// Name of the owning CRD, for unregistering.
    pub crd_name: Option<String>,
    /// TokenReview and SubjectAccessReview: only `create` on the collection, nothing stored.
    pub create_only: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether objects of this type are stored in the core Event representation but served as events.k8s.io.
    pub fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    pub fn verbs(&self) -> Value {
        if self.create_only {
            return json!(["create"]);
        }
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    namespaced: bool,
    status: bool,
    generation: bool,
}

const BUILTINS: &[Builtin] = &[
    // Create-only review kinds (pkg/registry/authentication/tokenreview, pkg/registry/authorization/
    // subjectaccessreview): answered, never stored.
    Builtin {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "TokenReview",
        plural: "tokenreviews",
        short: &[],
        categories: &[],
        namespaced: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
        short: &[],
        categories: &[],
        namespaced: false,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        short: &["ns"],
        categories: &[],
        namespaced: false,
        status: true,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        short: &[],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        short: &["cm"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        short: &["ev"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        short: &["ev"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        short: &[],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        short: &["deploy"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        short: &["sts"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        short: &["ds"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: true,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        short: &["crd", "crds"],
        categories: &["api-extensions"],
        namespaced: false,
        status: true,
        generation: true,
    },
];

fn list_map(keys: &[&str], items: Value) -> Value {
    json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys, "items": items})
}

/// List-type hints for the built-in workloads, enough for server-side apply to merge containers by name.
fn workload_hint() -> Value {
    let container = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
        "env": list_map(&["name"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        "ports": list_map(&["containerPort", "protocol"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        "volumeMounts": list_map(&["mountPath"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
    }});
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
            "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                    "containers": list_map(&["name"], container.clone()),
                    "initContainers": list_map(&["name"], container),
                    "volumes": list_map(&["name"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
                }}
            }}
        }},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
            "conditions": list_map(&["type"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        }}
    }})
}

fn builtin_hint(kind: &str) -> Value {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" => workload_hint(),
        "CustomResourceDefinition" => {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                    "versions": list_map(&["name"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
                }},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                    "conditions": list_map(&["type"], json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
                }}
            }})
        }
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    }
}

/// The built-in kinds served from start.
pub(crate) fn builtins() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|b| ResourceType {
            group: b.group.to_string(),
            version: b.version.to_string(),
            kind: b.kind.to_string(),
            plural: b.plural.to_string(),
            singular: b.kind.to_lowercase(),
            short_names: b.short.iter().map(|s| s.to_string()).collect(),
            categories: b.categories.iter().map(|s| s.to_string()).collect(),
            namespaced: b.namespaced,
            status_subresource: b.status,
            tracks_generation: b.generation,
            custom: false,
            schema: Some(Arc::new(builtin_hint(b.kind))),
            cel_rules: None,
            printer_columns: Vec::new(),
            storage_group: if b.group == "events.k8s.io" {
                String::new()
            } else {
                b.group.to_string()
            },
            storage_plural: b.plural.to_string(),
            crd_name: None,
            create_only: b.kind.ends_with("Review"),
        })
        .collect()
}

/// Reads the served versions of a CustomResourceDefinition object. Err: what is wrong with it.
pub(crate) fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("metadata.name is missing")?;
    let spec = crd.get("spec").ok_or("spec is missing")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group is missing")?;
    let names = spec.get("names").ok_or("spec.names is missing")?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .ok_or("spec.names.plural is missing")?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("spec.names.kind is missing")?;
    if name != format!("{plural}.{group}") {
        return Err(format!("metadata.name must be spec.names.plural+\".\"+spec.group ({plural}.{group}), not {name}"));
    }
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strings(names.get("shortNames"));
    let categories = strings(names.get("categories"));
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope must be Namespaced or Cluster, not {other:?}"
            ))
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions is missing")?;
    if versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count()
        != 1
    {
        return Err("exactly one of spec.versions must have storage: true".into());
    }
    let mut out = Vec::new();
    for v in versions {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name is missing")?;
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .ok_or_else(|| format!("spec.versions[{vname}].schema.openAPIV3Schema is missing"))?;
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_string(),
                        format: c
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                vec![PrinterColumn {
                    name: "Age".into(),
                    type_: "date".into(),
                    format: String::new(),
                    description: String::new(),
                    json_path: ".metadata.creationTimestamp".into(),
                    priority: 0,
                }]
            });
        out.push(ResourceType {
            group: group.to_string(),
            version: vname.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            short_names: short_names.clone(),
            categories: categories.clone(),
            namespaced,
            status_subresource: v.pointer("/subresources/status").is_some(),
            tracks_generation: true,
            custom: true,
            cel_rules: super::cel::compile(&schema),
            schema: Some(Arc::new(schema)),
            printer_columns,
            storage_group: group.to_string(),
            storage_plural: plural.to_string(),
            crd_name: Some(name.to_string()),
            create_only: false,
        });
    }
    if out.is_empty() {
        return Err("no version is served".into());
    }
    Ok(out)
}

/// The status the apiextensions controller would write once the CRD's names are accepted.
pub(crate) fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": stored,
    })
}

/// The structural-schema rules the apiextensions apiserver enforces on a CRD's schemas (the most common
/// way a generated CRD fails to install): every field has a type unless it is int-or-string or keeps
/// unknown fields, the root is an object, and `properties` excludes `additionalProperties`.
pub(crate) fn structural_causes(crd: &Value) -> Vec<super::status::Cause> {
    let mut causes = Vec::new();
    for (i, v) in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(schema) = v.pointer("/schema/openAPIV3Schema") else {
            continue;
        };
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            causes.push(super::status::Cause {
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {}: must be object at the root",
                    schema
                        .get("type")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "\"\"".into())
                ),
                field: format!("{path}.type"),
            });
        }
        structural_node(schema, &path, true, &mut causes);
    }
    causes
}

fn structural_node(s: &Value, path: &str, root: bool, causes: &mut Vec<super::status::Cause>) {
    use super::status::Cause;
    let flag = |k: &str| s.get(k).and_then(Value::as_bool) == Some(true);
    if !root
        && s.get("type").is_none()
        && !flag("x-kubernetes-int-or-string")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must not be empty for specified object fields".into(),
            field: format!("{path}.type"),
        });
    }
    if s.get("properties").is_some()
        && s.get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            message: "Forbidden: additionalProperties and properties are mutual exclusive".into(),
            field: format!("{path}.additionalProperties"),
        });
    }
    for (k, child) in s
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if root && k == "metadata" {
            continue;
        }
        structural_node(child, &format!("{path}.properties[{k}]"), false, causes);
    }
    if let Some(items) = s.get("items") {
        structural_node(items, &format!("{path}.items"), false, causes);
    } else if s.get("type").and_then(Value::as_str) == Some("array") {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must be specified".into(),
            field: format!("{path}.items"),
        });
    }
    if let Some(ap @ Value::Object(_)) = s.get("additionalProperties") {
        structural_node(ap, &format!("{path}.additionalProperties"), false, causes);
    }
}
