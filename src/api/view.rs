//! The JSON the API serves for one object: the Kubernetes object as `kubectl get -o json` shows it, minus
//! `managedFields` and the `last-applied-configuration` annotation (bookkeeping, and a second copy of
//! the spec), plus `state` (the summary the dashboard colours) and, for gates, `verdict`.

use serde_json::{json, Value};

use super::query::{state_of_gate, state_of_trace};
use super::verdict::Verdict;
use crate::crd::{PipelineGate, ServiceTrace};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn trimmed(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(LAST_APPLIED);
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    object
}

pub fn gate(gate: &PipelineGate) -> Value {
    let mut object = trimmed(serde_json::to_value(gate).unwrap_or(Value::Null));
    if let Some(map) = object.as_object_mut() {
        map.insert("state".into(), json!(state_of_gate(gate)));
        map.insert(
            "verdict".into(),
            serde_json::to_value(Verdict::of(gate)).unwrap_or(Value::Null),
        );
    }
    object
}

pub fn trace(trace: &ServiceTrace) -> Value {
    let mut object = trimmed(serde_json::to_value(trace).unwrap_or(Value::Null));
    if let Some(map) = object.as_object_mut() {
        map.insert("state".into(), json!(state_of_trace(trace)));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_is_dropped_and_the_verdict_added() {
        let g: PipelineGate = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": "g", "namespace": "ns",
                         "annotations": {LAST_APPLIED: "{...}"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            }
        }))
        .unwrap();
        let v = gate(&g);
        assert_eq!(v["metadata"].get("managedFields"), None);
        assert_eq!(v["metadata"].get("annotations"), None);
        assert_eq!(v["state"], "Unknown");
        assert_eq!(v["verdict"]["open"], false);
        assert_eq!(v["verdict"]["reason"], "NotEvaluated");
        assert_eq!(v["spec"]["pipeline"]["definitionId"], 1);
    }
}
