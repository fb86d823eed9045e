//! core/v1 Event <-> events.k8s.io/v1 Event, which share one storage on a real apiserver: an event published
//! through events.k8s.io shows up in `kubectl describe`, which reads core events.

use serde_json::{Map, Value};

/// (core field, events.k8s.io field) pairs that differ only in name.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &Value, from_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = RENAMES
            .iter()
            .find(|(core, v1)| if from_core { k == core } else { k == v1 })
            .map(|(core, v1)| if from_core { *v1 } else { *core })
            .unwrap_or(k.as_str());
        out.insert(renamed.to_string(), v.clone());
    }
    Value::Object(out)
}

pub(crate) fn core_to_v1(core: &Value) -> Value {
    rename(core, true)
}

pub(crate) fn v1_to_core(v1: &Value) -> Value {
    rename(v1, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_every_field() {
        let v1 = json!({"regarding": {"kind": "PipelineGate", "name": "g"}, "note": "opened", "reason": "GateOpened", "reportingController": "lockstep", "deprecatedCount": 2, "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = v1_to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "g");
        assert_eq!(core["message"], "opened");
        assert_eq!(core["count"], 2);
        assert_eq!(core_to_v1(&core), v1);
    }
}
