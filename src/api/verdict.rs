//! The verdict of one PipelineGate, in the shape gaters ask for: always a 200 with `open` true or false,
//! so a closed gate is an answer and not a failure to ask.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::crd::{PipelineGate, RunSummary};

/// `reason` of a gate lockstep has not evaluated yet (no status, or no Ready condition).
pub const NOT_EVALUATED: &str = "NotEvaluated";
/// `reason` of a gate whose spec changed since lockstep last evaluated it: the verdict on record is
/// about a spec that no longer exists, so it must not open anything.
pub const SPEC_CHANGED: &str = "SpecChanged";

/// `GET .../pipelinegates/{name}/verdict`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// True only when Ready is True for the gate's current generation.
    pub open: bool,
    /// The Ready condition's reason (`Succeeded`, `RunInProgress`, `RunFailed`, ...), or
    /// [`NOT_EVALUATED`] / [`SPEC_CHANGED`].
    pub reason: String,
    /// One human line.
    pub message: String,
    /// The run the verdict is about: the accepted run when open, else the newest run (in flight or not).
    pub run: Option<Arc<RunSummary>>,
    /// The generation the verdict was computed for.
    pub observed_generation: Option<i64>,
    /// When lockstep last read Azure DevOps for this gate.
    pub checked_at: Option<Time>,
}

impl Verdict {
    pub fn of(gate: &PipelineGate) -> Self {
        let generation = gate.metadata.generation;
        let Some(status) = gate.status.as_ref() else {
            return Self::closed(
                NOT_EVALUATED,
                "lockstep has not evaluated this gate yet".to_string(),
                None,
                None,
                None,
            );
        };
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let observed = ready
            .and_then(|c| c.observed_generation)
            .or(status.observed_generation);
        let fallback_run = status
            .latest_run
            .clone()
            .or_else(|| status.last_completed_run.clone());
        let Some(ready) = ready else {
            return Self::closed(
                NOT_EVALUATED,
                "lockstep has not evaluated this gate yet".to_string(),
                fallback_run,
                status.observed_generation,
                status.last_checked_time.clone(),
            );
        };
        if let (Some(generation), Some(observed)) = (generation, observed) {
            if observed < generation {
                return Self::closed(
                    SPEC_CHANGED,
                    format!(
                        "the gate's spec changed (generation {generation}); lockstep has evaluated generation {observed} only"
                    ),
                    fallback_run,
                    Some(observed),
                    status.last_checked_time.clone(),
                );
            }
        }
        let open = ready.status == "True";
        let run = if open {
            status
                .last_completed_run
                .clone()
                .or_else(|| status.last_succeeded_run.clone())
                .or_else(|| status.latest_run.clone())
        } else {
            fallback_run
        };
        Self {
            open,
            reason: ready.reason.clone(),
            message: ready.message.clone(),
            run,
            observed_generation: observed,
            checked_at: status.last_checked_time.clone(),
        }
    }

    fn closed(
        reason: &str,
        message: String,
        run: Option<Arc<RunSummary>>,
        observed_generation: Option<i64>,
        checked_at: Option<Time>,
    ) -> Self {
        Self {
            open: false,
            reason: reason.to_string(),
            message,
            run,
            observed_generation,
            checked_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(generation: i64, status: serde_json::Value) -> PipelineGate {
        serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1",
            "kind": "PipelineGate",
            "metadata": {"name": "g", "namespace": "ns", "generation": generation},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            },
            "status": status,
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str, observed: i64) -> serde_json::Value {
        json!({"type": "Ready", "status": status, "reason": reason, "message": format!("{reason} message"),
               "observedGeneration": observed, "lastTransitionTime": "2026-11-29T10:00:00Z"})
    }

    #[test]
    fn a_gate_without_status_is_closed_and_not_evaluated() {
        let mut g = gate(1, json!(null));
        g.status = None;
        let v = Verdict::of(&g);
        assert!(!v.open);
        assert_eq!(v.reason, NOT_EVALUATED);
        assert_eq!(v.run, None);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"open": false, "reason": "NotEvaluated",
                   "message": "lockstep has not evaluated this gate yet",
                   "run": null, "observedGeneration": null, "checkedAt": null})
        );
    }

    #[test]
    fn ready_true_for_the_current_generation_is_open_with_the_accepted_run() {
        let v = Verdict::of(&gate(
            3,
            json!({
                "observedGeneration": 3,
                "conditions": [ready("True", "Succeeded", 3)],
                "latestRun": {"id": 12, "status": "completed", "result": "canceled"},
                "lastCompletedRun": {"id": 11, "status": "completed", "result": "succeeded"},
                "lastCheckedTime": "2026-11-29T10:01:00Z"
            }),
        ));
        assert!(v.open);
        assert_eq!(v.reason, "Succeeded");
        assert_eq!(v.message, "Succeeded message");
        assert_eq!(v.run.as_ref().map(|r| r.id), Some(11));
        assert_eq!(v.observed_generation, Some(3));
        assert_eq!(
            serde_json::to_value(&v).unwrap()["checkedAt"],
            json!("2026-11-29T10:01:00Z")
        );
    }

    #[test]
    fn a_waiting_gate_is_closed_and_names_the_run_in_flight() {
        let v = Verdict::of(&gate(
            1,
            json!({
                "observedGeneration": 1,
                "conditions": [ready("False", "RunInProgress", 1)],
                "latestRun": {"id": 12, "status": "inProgress"},
                "lastCompletedRun": {"id": 11, "status": "completed", "result": "succeeded"}
            }),
        ));
        assert!(!v.open);
        assert_eq!(v.reason, "RunInProgress");
        assert_eq!(v.run.map(|r| r.id), Some(12));
    }

    #[test]
    fn a_verdict_for_an_older_generation_does_not_open() {
        let v = Verdict::of(&gate(
            4,
            json!({"observedGeneration": 3, "conditions": [ready("True", "Succeeded", 3)]}),
        ));
        assert!(!v.open);
        assert_eq!(v.reason, SPEC_CHANGED);
        assert!(v.message.contains("generation 4"), "{}", v.message);
    }

    #[test]
    fn unknown_ready_is_closed() {
        let v = Verdict::of(&gate(
            1,
            json!({"conditions": [ready("Unknown", "ApiUnavailable", 1)]}),
        ));
        assert!(!v.open);
        assert_eq!(v.reason, "ApiUnavailable");
    }
}
