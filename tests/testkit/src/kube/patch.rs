//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (built-in kinds
//! only, as on a real apiserver) and server-side apply configurations.

use serde_json::{Map, Value};

use super::managed::child_schema;
use super::resources::ResourceType;
use super::status::ApiError;

pub(crate) const MERGE: &str = "application/merge-patch+json";
pub(crate) const JSON: &str = "application/json-patch+json";
pub(crate) const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub(crate) const APPLY: &str = "application/apply-patch+yaml";

#[derive(Clone, Debug)]
pub(crate) enum PatchBody {
    Merge(Value),
    Json(json_patch::Patch),
    Strategic(Value),
    Apply(Value),
}

/// Parses a request body as YAML or JSON (JSON is YAML, but a JSON parser gives better errors for it).
pub(crate) fn parse_document(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(json_err) => {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|yaml_err| format!("{json_err}; as YAML: {yaml_err}"))
        }
    }
}

impl PatchBody {
    pub fn parse(rt: &ResourceType, content_type: &str, bytes: &[u8]) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let accepted: &[&str] = if rt.custom {
            &[JSON, MERGE, APPLY]
        } else {
            &[JSON, MERGE, STRATEGIC, APPLY]
        };
        if !accepted.contains(&media) {
            return Err(ApiError::unsupported_media_type(accepted));
        }
        let bad = |e: String| ApiError::bad_request(format!("error decoding patch: {e}"));
        Ok(match media {
            MERGE => {
                PatchBody::Merge(serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?)
            }
            STRATEGIC => {
                PatchBody::Strategic(serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?)
            }
            JSON => PatchBody::Json(serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?),
            _ => PatchBody::Apply(parse_document(bytes).map_err(bad)?),
        })
    }
}

/// Applies a non-apply patch to the current object (as the client sees it).
pub(crate) fn apply_patch(
    rt: &ResourceType,
    current: &Value,
    patch: &PatchBody,
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match patch {
        PatchBody::Merge(p) => {
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            json_patch::merge(&mut doc, p);
        }
        PatchBody::Json(p) => {
            json_patch::patch(&mut doc, p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchBody::Strategic(p) => {
            doc = strategic_merge(&doc, p, rt.schema.as_deref(), true);
        }
        PatchBody::Apply(_) => {
            return Err(ApiError::bad_request(
                "apply patches are handled by server-side apply",
            ))
        }
    }
    Ok(doc)
}

fn list_keys(schema: Option<&Value>) -> Option<Vec<String>> {
    let s = schema?;
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => Some(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|ks| {
                    ks.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

fn is_set(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("x-kubernetes-list-type"))
        .and_then(Value::as_str)
        == Some("set")
}

/// The subset of strategic merge patch the emulator knows: maps merge, `null` deletes, lists with merge keys
/// merge by key (`$patch: delete` removes an item), sets union, `$patch: replace` replaces, other lists replace.
fn strategic_merge(current: &Value, patch: &Value, schema: Option<&Value>, at_root: bool) -> Value {
    match (current, patch) {
        (Value::Object(cur), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replaced = p.clone();
                replaced.remove("$patch");
                return Value::Object(replaced);
            }
            let mut out: Map<String, Value> = cur.clone();
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(existing)), Value::Array(remove)) =
                        (out.get_mut(field), v)
                    {
                        existing.retain(|e| !remove.contains(e));
                    }
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let child = child_schema(schema, k, at_root);
                let merged = match cur.get(k) {
                    Some(c) => strategic_merge(c, v, child, false),
                    None => strip_directives(v),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(cur), Value::Array(p)) => {
            if let Some(keys) = list_keys(schema) {
                let item_schema = schema.and_then(|s| s.get("items"));
                let key_of = |v: &Value| keys.iter().map(|k| v.get(k).cloned()).collect::<Vec<_>>();
                let mut out = cur.clone();
                for item in p {
                    let k = key_of(item);
                    let pos = out.iter().position(|o| key_of(o) == k);
                    if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                        if let Some(pos) = pos {
                            out.remove(pos);
                        }
                        continue;
                    }
                    match pos {
                        Some(pos) => {
                            out[pos] = strategic_merge(&out[pos], item, item_schema, false)
                        }
                        None => out.push(strip_directives(item)),
                    }
                }
                Value::Array(out)
            } else if is_set(schema) {
                let mut out = cur.clone();
                for item in p {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            } else {
                patch.clone()
            }
        }
        _ => strip_directives(patch),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_deletes_items() {
        let schema = json!({"properties": {"spec": {"properties": {"containers": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}}}}});
        let cur = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "a", "image": "z"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "w"}]}});
        let out = strategic_merge(&cur, &p, Some(&schema), true);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "z"}, {"name": "c", "image": "w"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn parse_document_accepts_yaml_and_json() {
        assert_eq!(parse_document(b"{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(
            parse_document(b"a: 1\nb: [x]\n").unwrap(),
            json!({"a": 1, "b": ["x"]})
        );
        assert!(parse_document(b"a: [").is_err());
    }
}
