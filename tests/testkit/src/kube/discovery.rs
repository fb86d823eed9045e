//! Legacy discovery documents (`/api`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`). Requests for
//! aggregated discovery get the legacy form with a plain `application/json` content type, which clients
//! (client-go, kube-rs) treat as "aggregated discovery unsupported" and fall back on.

use serde_json::{json, Value};

use super::resources::ResourceType;

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T13:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Groups in first-registration order, each with its versions in registration order.
fn groups(registry: &[ResourceType]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for rt in registry.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == rt.group) {
            Some((_, vs)) => {
                if !vs.contains(&rt.version) {
                    vs.push(rt.version.clone());
                }
            }
            None => out.push((rt.group.clone(), vec![rt.version.clone()])),
        }
    }
    out
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub(crate) fn group_list(registry: &[ResourceType]) -> Value {
    let gs: Vec<Value> = groups(registry)
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub(crate) fn group(registry: &[ResourceType], name: &str) -> Option<Value> {
    groups(registry)
        .iter()
        .find(|(g, _)| g == name)
        .map(|(g, vs)| {
            let mut d = group_doc(g, vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

pub(crate) fn resource_list(
    registry: &[ResourceType],
    group: &str,
    version: &str,
) -> Option<Value> {
    let types: Vec<&ResourceType> = registry
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in types {
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        resources.push(r);
        if rt.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_versions(registry: &[ResourceType]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for rt in registry {
        let gv = (rt.group.clone(), rt.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group version's document lives. kubectl reads it to learn that the server
/// supports `fieldValidation` (server-side validation) instead of validating on the client.
pub(crate) fn openapi_v3_root(registry: &[ResourceType], generation: u64) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions(registry) {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={generation:016X}")}),
        );
    }
    json!({"paths": paths})
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

/// `/openapi/v3/{api|apis/group}/{version}`: the operations of one group version, with the
/// `x-kubernetes-group-version-kind` extension and query parameters clients look for, and the schemas of
/// custom resources.
pub(crate) fn openapi_v3_group_version(registry: &[ResourceType], path: &str) -> Option<Value> {
    let (group, version) = group_versions(registry)
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path)?;
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for rt in registry
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
        let base = if rt.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("/{path}/{}", rt.plural)
        };
        let write_params = vec![
            query_param("dryRun", "When present, indicates that modifications should not be persisted."),
            query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
            query_param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."),
        ];
        let mut patch_params = write_params.clone();
        patch_params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        let op = |action: &str, params: &Vec<Value>| {
            json!({"operationId": format!("{action}{}", rt.kind), "parameters": params, "responses": {"200": {"description": "OK"}},
                   "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk})
        };
        if rt.create_only {
            paths.insert(base.clone(), json!({"post": op("post", &write_params)}));
            continue;
        }
        paths.insert(
            base.clone(),
            json!({"get": op("list", &Vec::new()), "post": op("post", &write_params)}),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get", &Vec::new()), "put": op("put", &write_params), "patch": op("patch", &patch_params), "delete": op("delete", &Vec::new())}),
        );
        if rt.status_subresource {
            paths.insert(format!("{base}/{{name}}/status"), json!({"get": op("get", &Vec::new()), "put": op("put", &write_params), "patch": op("patch", &patch_params)}));
        }
        if rt.custom {
            if let Some(schema) = rt.schema.as_deref() {
                let mut s = schema.clone();
                s["x-kubernetes-group-version-kind"] = json!([gvk]);
                let id = format!(
                    "{}.{}.{}",
                    rt.group.split('.').rev().collect::<Vec<_>>().join("."),
                    rt.version,
                    rt.kind
                );
                schemas.insert(id, s);
            }
        }
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}

/// The content type of aggregated discovery (apidiscovery.k8s.io/v2, GA since Kubernetes 1.30).
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery v2 (as kubectl and kube's `run_aggregated` do).
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|m| {
        m.contains("g=apidiscovery.k8s.io")
            && m.contains("v=v2")
            && !m.contains("v=v2beta1")
            && m.contains("as=APIGroupDiscoveryList")
    })
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let kind = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": kind,
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": rt.verbs(),
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        r["categories"] = json!(rt.categories);
    }
    if rt.status_subresource {
        r["subresources"] = json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}]);
    }
    r
}

/// `/api` (core) or `/apis` (named groups) as an APIGroupDiscoveryList.
pub(crate) fn aggregated(registry: &[ResourceType], core: bool) -> Value {
    let mut items = Vec::new();
    let names: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        groups(registry)
    };
    for (g, versions) in names {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> = registry
                    .iter()
                    .filter(|r| r.group == g && &r.version == v)
                    .map(aggregated_resource)
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let metadata = if g.is_empty() {
            json!({"creationTimestamp": null})
        } else {
            json!({"name": g, "creationTimestamp": null})
        };
        items.push(json!({"metadata": metadata, "versions": vs}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
