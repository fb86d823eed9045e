//! Built-in kinds decoded the way the apiserver decodes them: through their typed API structs, so
//! unknown fields are dropped (or rejected under `fieldValidation=Strict`) and malformed values fail.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use k8s_openapi::api::{apps, coordination, core, events};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::resources::ResourceType;

fn round_trip<K: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Paths (`spec.foo`) present in `original` but gone from `decoded`.
fn dropped(original: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(o), Value::Object(d)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match d.get(k) {
                    Some(dv) => dropped(v, dv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(d)) => {
            for (i, (ov, dv)) in o.iter().zip(d).enumerate() {
                dropped(ov, dv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The object as the apiserver would store it, and the unknown fields it dropped. Err: why it does not
/// decode (a 400 on a real server).
pub(crate) fn decode(rt: &ResourceType, obj: &Value) -> Result<(Value, Vec<String>), String> {
    let decoded = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(obj)?,
        ("", "Secret") => round_trip::<core::v1::Secret>(obj)?,
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>(obj)?,
        ("", "Event") => round_trip::<core::v1::Event>(obj)?,
        ("events.k8s.io", "Event") => round_trip::<events::v1::Event>(obj)?,
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(obj)?,
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(obj)?,
        ("apps", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(obj)?,
        ("apps", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(obj)?,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(obj)?
        }
        _ => obj.clone(),
    };
    let mut unknown = Vec::new();
    dropped(obj, &decoded, "", &mut unknown);
    Ok((decoded, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease() -> ResourceType {
        super::super::resources::builtins()
            .into_iter()
            .find(|r| r.kind == "Lease")
            .expect("lease type")
    }

    #[test]
    fn unknown_fields_are_dropped_and_reported() {
        let obj = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "holderIdentiy": "typo", "leaseDurationSeconds": 15}});
        let (decoded, unknown) = decode(&lease(), &obj).unwrap();
        assert_eq!(unknown, vec!["spec.holderIdentiy"]);
        assert_eq!(
            decoded["spec"],
            json!({"holderIdentity": "a", "leaseDurationSeconds": 15})
        );
    }

    #[test]
    fn malformed_values_do_not_decode() {
        let obj = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": "fifteen"}});
        assert!(decode(&lease(), &obj).is_err());
    }
}
