//! What the object a ServiceTrace points at says about the cluster: the revision it runs and whether its
//! agent (Flux, Argo CD, the workload controller) has settled, is still working, or has given up.
//!
//! These functions read the object's JSON (a `DynamicObject` for Flux and Argo CD, a serialised typed
//! workload) so that the Kubernetes-facing shell only fetches and the rules live here, unit-tested.
//! Field paths follow the agents' own APIs: `kustomize.toolkit.fluxcd.io/v1` Kustomization,
//! `argoproj.io/v1alpha1` Application, and `kubectl rollout status` for Deployments, StatefulSets and
//! DaemonSets.

use std::fmt;

use serde_json::Value;

use super::revision::{
    parse_argo_revision, parse_flux_revision, parse_image_tag, DeployedRevision, RevisionError,
};
use crate::crd::WorkloadKind;

/// The object a trace reads its deployed revision from, for messages and for watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedTarget {
    pub kind: DeployedKind,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployedKind {
    FluxKustomization,
    ArgoApplication,
    Workload(WorkloadKind),
}

impl DeployedKind {
    /// The Kubernetes kind, as users see it in `kubectl get`.
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::FluxKustomization => "Kustomization",
            Self::ArgoApplication => "Application",
            Self::Workload(WorkloadKind::Deployment) => "Deployment",
            Self::Workload(WorkloadKind::StatefulSet) => "StatefulSet",
            Self::Workload(WorkloadKind::DaemonSet) => "DaemonSet",
        }
    }
}

impl fmt::Display for DeployedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind.kind_name(),
            self.namespace,
            self.name
        )
    }
}

/// Where the agent responsible for the object stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Applied and healthy (Flux Ready=True, Argo CD Synced+Healthy, rollout complete).
    Settled,
    /// Still working; the text says on what.
    Progressing(String),
    /// Gave up or reports a failure that needs a person; the text is the agent's own message.
    Failed(String),
    /// Reconciliation is switched off (Flux `spec.suspend`, a paused Deployment): nothing will change
    /// until someone resumes it.
    Suspended,
}

/// What the deployed object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedObservation {
    /// `None` until the agent has applied anything.
    pub revision: Option<DeployedRevision>,
    /// What the agent last tried to apply, when it says: Flux `status.lastAttemptedRevision`, Argo CD
    /// `status.operationState.syncResult.revision` (else the operation's own `sync.revision`), a
    /// workload's template tag. When an apply of a *new* revision fails, this is the new one while
    /// `revision` still names the old: it tells which build the failure belongs to.
    pub attempted: Option<DeployedRevision>,
    pub agent: AgentState,
}

/// The object exists but cannot be read as a deployment of the trace's manifests.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeployedError {
    #[error("{0}")]
    Revision(#[from] RevisionError),
    #[error("has no container named '{container}': set spec.deployed.workload.container to one of [{available}]")]
    ContainerNotFound {
        container: String,
        available: String,
    },
    #[error("has no containers in its pod template")]
    NoContainers,
    #[error("container '{container}' runs image '{image}', which has no tag to compare with the build number: tag images with the CI buildNumber")]
    ImageWithoutTag { container: String, image: String },
}

/// Read a Flux `Kustomization` (`kustomize.toolkit.fluxcd.io/v1`).
pub fn observe_flux_kustomization(obj: &Value) -> Result<DeployedObservation, DeployedError> {
    let revision = match str_at(obj, &["status", "lastAppliedRevision"]) {
        None | Some("") => None,
        Some(value) => Some(DeployedRevision::Commit(parse_flux_revision(value)?)),
    };
    // An attempted revision that cannot be parsed only loses the failure's attribution, not the read.
    let attempted = str_at(obj, &["status", "lastAttemptedRevision"])
        .filter(|v| !v.is_empty())
        .and_then(|v| parse_flux_revision(v).ok())
        .map(DeployedRevision::Commit);
    Ok(DeployedObservation {
        revision,
        attempted,
        agent: flux_agent_state(obj),
    })
}

fn flux_agent_state(obj: &Value) -> AgentState {
    if obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return AgentState::Suspended;
    }
    if let Some(stalled) = condition(obj, "Stalled").filter(|c| c.status == "True") {
        return AgentState::Failed(stalled.describe());
    }
    if generation_not_observed(obj) {
        return AgentState::Progressing(
            "the latest spec change has not been reconciled yet".into(),
        );
    }
    match condition(obj, "Ready") {
        None => AgentState::Progressing("not reconciled yet".into()),
        Some(ready) if ready.status == "True" => AgentState::Settled,
        // Flux reports a dependency that is not ready yet as Ready=False, but it resolves on its own.
        Some(ready) if ready.status == "False" && ready.reason != "DependencyNotReady" => {
            AgentState::Failed(ready.describe())
        }
        Some(ready) => AgentState::Progressing(ready.describe()),
    }
}

/// Read an Argo CD `Application` (`argoproj.io/v1alpha1`). A multi-source Application reports
/// `status.sync.revisions`; the first one is used, so list the manifest repository first.
pub fn observe_argo_application(obj: &Value) -> Result<DeployedObservation, DeployedError> {
    let value = str_at(obj, &["status", "sync", "revision"]).or_else(|| {
        obj.pointer("/status/sync/revisions")
            .and_then(Value::as_array)?
            .first()?
            .as_str()
    });
    let revision = match value {
        None | Some("") => None,
        Some(value) => Some(DeployedRevision::Commit(parse_argo_revision(value)?)),
    };
    Ok(DeployedObservation {
        revision,
        attempted: argo_attempted(obj),
        agent: argo_agent_state(obj),
    })
}

/// The revision of the last sync operation: `syncResult.revision` (multi-source: the first of
/// `syncResult.revisions`), else, for an operation that failed before it produced a result, the
/// revision it was asked to sync (`operation.sync.revision`). Argo CD's `status.sync.revision` is the
/// revision it *compared* against, not the one it applied, so it cannot say this.
fn argo_attempted(obj: &Value) -> Option<DeployedRevision> {
    let first = |pointer: &str| {
        obj.pointer(pointer)
            .and_then(Value::as_array)?
            .first()?
            .as_str()
    };
    let value = str_at(obj, &["status", "operationState", "syncResult", "revision"])
        .filter(|v| !v.is_empty())
        .or_else(|| first("/status/operationState/syncResult/revisions"))
        .or_else(|| {
            str_at(
                obj,
                &["status", "operationState", "operation", "sync", "revision"],
            )
        })
        .or_else(|| first("/status/operationState/operation/sync/revisions"))
        .filter(|v| !v.is_empty())?;
    parse_argo_revision(value)
        .ok()
        .map(DeployedRevision::Commit)
}

fn argo_agent_state(obj: &Value) -> AgentState {
    let operation_phase = str_at(obj, &["status", "operationState", "phase"]);
    let operation_message = str_at(obj, &["status", "operationState", "message"]).unwrap_or("");
    if let Some(phase @ ("Failed" | "Error")) = operation_phase {
        return AgentState::Failed(join_nonempty(&format!("sync {phase}"), operation_message));
    }
    let health = str_at(obj, &["status", "health", "status"]).unwrap_or("Unknown");
    let health_message = str_at(obj, &["status", "health", "message"]).unwrap_or("");
    if health == "Degraded" {
        return AgentState::Failed(join_nonempty("health Degraded", health_message));
    }
    if let Some(phase @ ("Running" | "Terminating")) = operation_phase {
        return AgentState::Progressing(join_nonempty(&format!("sync {phase}"), operation_message));
    }
    let sync = str_at(obj, &["status", "sync", "status"]).unwrap_or("Unknown");
    match (sync, health) {
        ("Synced", "Healthy") => AgentState::Settled,
        (sync, health) => AgentState::Progressing(join_nonempty(
            &format!("{sync}, health {health}"),
            health_message,
        )),
    }
}

/// Read a Deployment, StatefulSet or DaemonSet: the tag of `container` (the first container when `None`)
/// in its pod template, and whether the rollout of that template has finished, by the rules of
/// `kubectl rollout status`.
pub fn observe_workload(
    kind: WorkloadKind,
    obj: &Value,
    container: Option<&str>,
) -> Result<DeployedObservation, DeployedError> {
    let containers = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let chosen = match container {
        None => containers.first().ok_or(DeployedError::NoContainers)?,
        Some(wanted) => containers
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(wanted))
            .ok_or_else(|| DeployedError::ContainerNotFound {
                container: wanted.to_string(),
                available: containers
                    .iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    let name = chosen
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let image = chosen
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let tag = parse_image_tag(image).ok_or_else(|| DeployedError::ImageWithoutTag {
        container: name,
        image: image.to_string(),
    })?;
    // The template is what the controller is rolling out: a failed rollout failed on this tag.
    let revision = Some(DeployedRevision::ImageTag(tag));
    Ok(DeployedObservation {
        attempted: revision.clone(),
        revision,
        agent: rollout_state(kind, obj),
    })
}

fn rollout_state(kind: WorkloadKind, obj: &Value) -> AgentState {
    if generation_not_observed(obj) {
        return AgentState::Progressing(
            "the latest spec change has not been observed by its controller yet".into(),
        );
    }
    let replicas = int_at(obj, "/spec/replicas").unwrap_or(1);
    match kind {
        WorkloadKind::Deployment => {
            if obj.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
                return AgentState::Suspended;
            }
            if let Some(progressing) = condition(obj, "Progressing") {
                if progressing.reason == "ProgressDeadlineExceeded" {
                    return AgentState::Failed(progressing.describe());
                }
            }
            let updated = int_at(obj, "/status/updatedReplicas").unwrap_or(0);
            let total = int_at(obj, "/status/replicas").unwrap_or(0);
            let available = int_at(obj, "/status/availableReplicas").unwrap_or(0);
            if updated < replicas {
                AgentState::Progressing(format!("{updated} of {replicas} replicas updated"))
            } else if total > updated {
                AgentState::Progressing(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < updated {
                AgentState::Progressing(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                AgentState::Settled
            }
        }
        WorkloadKind::StatefulSet => {
            let ready = int_at(obj, "/status/readyReplicas").unwrap_or(0);
            let updated = int_at(obj, "/status/updatedReplicas").unwrap_or(0);
            let current = str_at(obj, &["status", "currentRevision"]);
            let update = str_at(obj, &["status", "updateRevision"]);
            if ready < replicas {
                AgentState::Progressing(format!("{ready} of {replicas} pods ready"))
            } else if updated < replicas && current != update {
                AgentState::Progressing(format!("{updated} of {replicas} pods updated"))
            } else {
                AgentState::Settled
            }
        }
        WorkloadKind::DaemonSet => {
            let desired = int_at(obj, "/status/desiredNumberScheduled").unwrap_or(0);
            let updated = int_at(obj, "/status/updatedNumberScheduled").unwrap_or(0);
            let available = int_at(obj, "/status/numberAvailable").unwrap_or(0);
            if updated < desired {
                AgentState::Progressing(format!("{updated} of {desired} pods updated"))
            } else if available < desired {
                AgentState::Progressing(format!("{available} of {desired} updated pods available"))
            } else {
                AgentState::Settled
            }
        }
    }
}

struct ConditionView<'a> {
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl ConditionView<'_> {
    fn describe(&self) -> String {
        join_nonempty(self.reason, self.message)
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<ConditionView<'a>> {
    let found = obj
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?;
    let field = |k: &str| found.get(k).and_then(Value::as_str).unwrap_or("");
    Some(ConditionView {
        status: field("status"),
        reason: field("reason"),
        message: field("message"),
    })
}

fn generation_not_observed(obj: &Value) -> bool {
    match (
        int_at(obj, "/metadata/generation"),
        int_at(obj, "/status/observedGeneration"),
    ) {
        (Some(generation), Some(observed)) => observed < generation,
        _ => false,
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(obj, |v, k| v.get(*k))?.as_str()
}

fn int_at(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer)?.as_i64()
}

fn join_nonempty(head: &str, detail: &str) -> String {
    match (head.is_empty(), detail.is_empty()) {
        (_, true) => head.to_string(),
        (true, false) => detail.to_string(),
        (false, false) => format!("{head}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_trace::revision::GitRevision;
    use serde_json::json;

    const SHA: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";

    fn commit(sha: &str) -> Option<DeployedRevision> {
        Some(DeployedRevision::Commit(GitRevision {
            reference: None,
            commit: sha.into(),
        }))
    }

    fn kustomization(status: Value) -> Value {
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "orders", "namespace": "flux-system", "generation": 2},
            "spec": {"interval": "5m", "path": "./", "prune": true},
            "status": status
        })
    }

    #[test]
    fn target_names_read_like_kubectl() {
        let t = DeployedTarget {
            kind: DeployedKind::FluxKustomization,
            namespace: "flux-system".into(),
            name: "orders".into(),
        };
        assert_eq!(t.to_string(), "Kustomization flux-system/orders");
        let t = DeployedTarget {
            kind: DeployedKind::Workload(WorkloadKind::StatefulSet),
            namespace: "shop".into(),
            name: "db".into(),
        };
        assert_eq!(t.to_string(), "StatefulSet shop/db");
        assert_eq!(DeployedKind::ArgoApplication.kind_name(), "Application");
    }

    #[test]
    fn flux_ready_with_revision() {
        let obj = kustomization(json!({
            "observedGeneration": 2,
            "lastAppliedRevision": format!("main@sha1:{SHA}"),
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision: main@sha1:9f8e7d6"}]
        }));
        let seen = observe_flux_kustomization(&obj).expect("readable");
        assert_eq!(seen.agent, AgentState::Settled);
        assert_eq!(
            seen.revision,
            Some(DeployedRevision::Commit(GitRevision {
                reference: Some("main".into()),
                commit: SHA.into()
            }))
        );
    }

    #[test]
    fn flux_without_status_has_not_applied_anything() {
        let obj = json!({"kind": "Kustomization", "metadata": {"name": "orders"}, "spec": {}});
        let seen = observe_flux_kustomization(&obj).expect("readable");
        assert_eq!(seen.revision, None);
        assert_eq!(
            seen.agent,
            AgentState::Progressing("not reconciled yet".into())
        );
    }

    #[test]
    fn flux_empty_revision_is_none() {
        let obj = kustomization(json!({"lastAppliedRevision": ""}));
        assert_eq!(
            observe_flux_kustomization(&obj).expect("readable").revision,
            None
        );
    }

    #[test]
    fn flux_failed_apply_is_failed_with_its_message() {
        let obj = kustomization(json!({
            "observedGeneration": 2,
            "lastAppliedRevision": format!("main@sha1:{SHA}"),
            "lastAttemptedRevision": "main@sha1:a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ReconciliationFailed", "message": "Deployment/orders dry-run failed"}]
        }));
        let seen = observe_flux_kustomization(&obj).expect("readable");
        assert_eq!(
            seen.revision,
            Some(DeployedRevision::Commit(GitRevision {
                reference: Some("main".into()),
                commit: SHA.into()
            }))
        );
        assert_eq!(
            seen.agent,
            AgentState::Failed("ReconciliationFailed: Deployment/orders dry-run failed".into())
        );
    }

    #[test]
    fn flux_failed_apply_of_a_new_revision_names_it_as_attempted() {
        // Flux keeps lastAppliedRevision at the old revision and records the one that failed in
        // lastAttemptedRevision (kustomize-controller `status.lastAttemptedRevision`).
        let obj = kustomization(json!({
            "observedGeneration": 2,
            "lastAppliedRevision": format!("main@sha1:{SHA}"),
            "lastAttemptedRevision": "main@sha1:a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ReconciliationFailed", "message": "apply failed"}]
        }));
        let seen = observe_flux_kustomization(&obj).expect("readable");
        assert_eq!(seen.revision.as_ref().map(|r| r.value()), Some(SHA));
        assert_eq!(
            seen.attempted.as_ref().map(|r| r.value()),
            Some("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678")
        );
        assert!(matches!(seen.agent, AgentState::Failed(_)));
        // Without it (older Flux, or nothing attempted yet) there is no attribution, and no error.
        let obj = kustomization(json!({"lastAppliedRevision": format!("main@sha1:{SHA}")}));
        assert_eq!(
            observe_flux_kustomization(&obj)
                .expect("readable")
                .attempted,
            None
        );
        let obj = kustomization(json!({"lastAppliedRevision": format!("main@sha1:{SHA}"),
                                       "lastAttemptedRevision": "not a revision"}));
        assert_eq!(
            observe_flux_kustomization(&obj)
                .expect("readable")
                .attempted,
            None
        );
    }

    #[test]
    fn argo_failed_sync_names_the_revision_it_tried() {
        let new = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
        // `sync.revision` is what Argo CD compared against; the operation's result says what it synced.
        let obj = application(json!({
            "sync": {"status": "OutOfSync", "revision": new},
            "health": {"status": "Healthy"},
            "operationState": {"phase": "Failed", "message": "one or more objects failed to apply",
                               "syncResult": {"revision": new}}
        }));
        let seen = observe_argo_application(&obj).expect("readable");
        assert_eq!(seen.attempted.as_ref().map(|r| r.value()), Some(new));
        assert!(matches!(seen.agent, AgentState::Failed(_)));
        // Multi-source: the first of syncResult.revisions.
        let obj = application(json!({
            "sync": {"status": "Synced", "revisions": [SHA]},
            "operationState": {"phase": "Error", "syncResult": {"revisions": [new, "1.2.3"]}}
        }));
        assert_eq!(
            observe_argo_application(&obj)
                .expect("readable")
                .attempted
                .map(|r| r.value().to_string()),
            Some(new.to_string())
        );
        // An operation that failed before producing a result: the revision it was asked to sync.
        let obj = application(json!({
            "sync": {"status": "OutOfSync", "revision": SHA},
            "operationState": {"phase": "Error", "operation": {"sync": {"revision": new}}}
        }));
        assert_eq!(
            observe_argo_application(&obj)
                .expect("readable")
                .attempted
                .map(|r| r.value().to_string()),
            Some(new.to_string())
        );
        let obj = application(json!({"sync": {"status": "Synced", "revision": SHA}}));
        assert_eq!(
            observe_argo_application(&obj).expect("readable").attempted,
            None
        );
    }

    #[test]
    fn flux_dependency_not_ready_is_progressing() {
        let obj = kustomization(json!({
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "False", "reason": "DependencyNotReady", "message": "dependency 'flux-system/orders-gate' is not ready"}]
        }));
        assert_eq!(
            observe_flux_kustomization(&obj).expect("readable").agent,
            AgentState::Progressing(
                "DependencyNotReady: dependency 'flux-system/orders-gate' is not ready".into()
            )
        );
    }

    #[test]
    fn flux_reconciling_is_progressing() {
        let obj = kustomization(json!({
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Reconciliation in progress"}]
        }));
        assert_eq!(
            observe_flux_kustomization(&obj).expect("readable").agent,
            AgentState::Progressing("Progressing: Reconciliation in progress".into())
        );
    }

    #[test]
    fn flux_stalled_wins_over_ready() {
        let obj = kustomization(json!({
            "observedGeneration": 2,
            "conditions": [
                {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": ""},
                {"type": "Stalled", "status": "True", "reason": "InvalidPath", "message": "path './x' not found"}
            ]
        }));
        assert_eq!(
            observe_flux_kustomization(&obj).expect("readable").agent,
            AgentState::Failed("InvalidPath: path './x' not found".into())
        );
    }

    #[test]
    fn flux_unobserved_generation_is_progressing() {
        let obj = kustomization(json!({
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": ""}]
        }));
        assert!(matches!(
            observe_flux_kustomization(&obj).expect("readable").agent,
            AgentState::Progressing(_)
        ));
    }

    #[test]
    fn flux_suspended() {
        let mut obj = kustomization(json!({"observedGeneration": 2, "lastAppliedRevision": SHA}));
        obj["spec"]["suspend"] = json!(true);
        let seen = observe_flux_kustomization(&obj).expect("readable");
        assert_eq!(seen.agent, AgentState::Suspended);
        assert_eq!(seen.revision, commit(SHA));
    }

    #[test]
    fn flux_unparseable_revision_is_an_error() {
        let obj = kustomization(json!({"lastAppliedRevision": "latest@md5:abc"}));
        let err = observe_flux_kustomization(&obj).expect_err("md5 is not a Git object id");
        assert!(matches!(
            err,
            DeployedError::Revision(RevisionError::UnsupportedAlgorithm { .. })
        ));
    }

    fn application(status: Value) -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "orders", "namespace": "argocd"}, "status": status})
    }

    #[test]
    fn argo_synced_and_healthy() {
        let obj = application(
            json!({"sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Healthy"}}),
        );
        let seen = observe_argo_application(&obj).expect("readable");
        assert_eq!(seen.revision, commit(SHA));
        assert_eq!(seen.agent, AgentState::Settled);
    }

    #[test]
    fn argo_out_of_sync_is_progressing() {
        let obj = application(
            json!({"sync": {"status": "OutOfSync", "revision": SHA}, "health": {"status": "Healthy"}}),
        );
        assert_eq!(
            observe_argo_application(&obj).expect("readable").agent,
            AgentState::Progressing("OutOfSync, health Healthy".into())
        );
    }

    #[test]
    fn argo_progressing_health_with_message() {
        let obj = application(
            json!({"sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Progressing", "message": "Waiting for rollout to finish"}}),
        );
        assert_eq!(
            observe_argo_application(&obj).expect("readable").agent,
            AgentState::Progressing(
                "Synced, health Progressing: Waiting for rollout to finish".into()
            )
        );
    }

    #[test]
    fn argo_degraded_is_failed() {
        let obj = application(
            json!({"sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Degraded", "message": "Deployment exceeded its progress deadline"}}),
        );
        assert_eq!(
            observe_argo_application(&obj).expect("readable").agent,
            AgentState::Failed("health Degraded: Deployment exceeded its progress deadline".into())
        );
    }

    #[test]
    fn argo_failed_sync_operation_is_failed() {
        let obj = application(json!({
            "sync": {"status": "OutOfSync", "revision": SHA},
            "health": {"status": "Healthy"},
            "operationState": {"phase": "Failed", "message": "one or more objects failed to apply"}
        }));
        assert_eq!(
            observe_argo_application(&obj).expect("readable").agent,
            AgentState::Failed("sync Failed: one or more objects failed to apply".into())
        );
    }

    #[test]
    fn argo_running_sync_operation_is_progressing() {
        let obj = application(json!({
            "sync": {"status": "OutOfSync", "revision": SHA},
            "health": {"status": "Healthy"},
            "operationState": {"phase": "Running", "message": "waiting for completion of hook"}
        }));
        assert_eq!(
            observe_argo_application(&obj).expect("readable").agent,
            AgentState::Progressing("sync Running: waiting for completion of hook".into())
        );
    }

    #[test]
    fn argo_multi_source_uses_the_first_revision() {
        let obj = application(
            json!({"sync": {"status": "Synced", "revisions": [SHA, "6.7.1"]}, "health": {"status": "Healthy"}}),
        );
        assert_eq!(
            observe_argo_application(&obj).expect("readable").revision,
            commit(SHA)
        );
    }

    #[test]
    fn argo_never_synced_has_no_revision() {
        let obj = application(json!({}));
        let seen = observe_argo_application(&obj).expect("readable");
        assert_eq!(seen.revision, None);
        assert_eq!(
            seen.agent,
            AgentState::Progressing("Unknown, health Unknown".into())
        );
    }

    #[test]
    fn argo_helm_version_is_an_error() {
        let obj = application(json!({"sync": {"status": "Synced", "revision": "6.7.1"}}));
        assert!(matches!(
            observe_argo_application(&obj),
            Err(DeployedError::Revision(RevisionError::NotACommit { .. }))
        ));
    }

    fn deployment(spec_extra: Value, status: Value) -> Value {
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "orders", "namespace": "shop", "generation": 3},
            "spec": {
                "replicas": 2,
                "template": {"spec": {"containers": [
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0"},
                    {"name": "app", "image": "contoso.azurecr.io/orders:20261122.4"}
                ]}}
            },
            "status": status
        });
        if let (Some(spec), Some(extra)) = (obj["spec"].as_object_mut(), spec_extra.as_object()) {
            spec.extend(extra.clone());
        }
        obj
    }

    fn rolled_out() -> Value {
        json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2})
    }

    #[test]
    fn workload_named_container_tag_and_finished_rollout() {
        let seen = observe_workload(
            WorkloadKind::Deployment,
            &deployment(json!({}), rolled_out()),
            Some("app"),
        )
        .expect("readable");
        assert_eq!(
            seen.revision,
            Some(DeployedRevision::ImageTag("20261122.4".into()))
        );
        assert_eq!(seen.agent, AgentState::Settled);
    }

    #[test]
    fn workload_first_container_by_default() {
        let seen = observe_workload(
            WorkloadKind::Deployment,
            &deployment(json!({}), rolled_out()),
            None,
        )
        .expect("readable");
        assert_eq!(
            seen.revision,
            Some(DeployedRevision::ImageTag("1.24.0".into()))
        );
    }

    #[test]
    fn workload_missing_container_lists_the_others() {
        let err = observe_workload(
            WorkloadKind::Deployment,
            &deployment(json!({}), rolled_out()),
            Some("web"),
        )
        .expect_err("no such container");
        assert_eq!(
            err,
            DeployedError::ContainerNotFound {
                container: "web".into(),
                available: "istio-proxy, app".into()
            }
        );
        assert!(err.to_string().contains("spec.deployed.workload.container"));
    }

    #[test]
    fn workload_without_containers() {
        let obj = json!({"spec": {"template": {"spec": {"containers": []}}}});
        assert_eq!(
            observe_workload(WorkloadKind::Deployment, &obj, None),
            Err(DeployedError::NoContainers)
        );
    }

    #[test]
    fn workload_digest_only_image_is_an_error() {
        let mut obj = deployment(json!({}), rolled_out());
        obj["spec"]["template"]["spec"]["containers"][1]["image"] = json!("contoso.azurecr.io/orders@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        assert!(matches!(
            observe_workload(WorkloadKind::Deployment, &obj, Some("app")),
            Err(DeployedError::ImageWithoutTag { .. })
        ));
    }

    #[test]
    fn deployment_rollout_steps() {
        let cases = [
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                "the latest spec change has not been observed by its controller yet",
            ),
            (
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
                "1 of 2 replicas updated",
            ),
            (
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                "1 old replicas pending termination",
            ),
            (
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                "1 of 2 updated replicas available",
            ),
        ];
        for (status, expected) in cases {
            let seen = observe_workload(
                WorkloadKind::Deployment,
                &deployment(json!({}), status.clone()),
                Some("app"),
            )
            .expect("readable");
            assert_eq!(
                seen.agent,
                AgentState::Progressing(expected.into()),
                "status {status}"
            );
        }
    }

    #[test]
    fn deployment_progress_deadline_is_failed() {
        let mut status = rolled_out();
        status["updatedReplicas"] = json!(1);
        status["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"orders-7d9\" has timed out progressing."}]);
        let seen = observe_workload(
            WorkloadKind::Deployment,
            &deployment(json!({}), status),
            Some("app"),
        )
        .expect("readable");
        assert_eq!(
            seen.agent,
            AgentState::Failed(
                "ProgressDeadlineExceeded: ReplicaSet \"orders-7d9\" has timed out progressing."
                    .into()
            )
        );
    }

    #[test]
    fn paused_deployment_is_suspended() {
        let seen = observe_workload(
            WorkloadKind::Deployment,
            &deployment(json!({"paused": true}), rolled_out()),
            Some("app"),
        )
        .expect("readable");
        assert_eq!(seen.agent, AgentState::Suspended);
    }

    #[test]
    fn deployment_replicas_default_to_one() {
        let mut obj = deployment(
            json!({}),
            json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        obj["spec"].as_object_mut().map(|s| s.remove("replicas"));
        assert_eq!(
            observe_workload(WorkloadKind::Deployment, &obj, Some("app"))
                .expect("readable")
                .agent,
            AgentState::Settled
        );
    }

    fn statefulset(status: Value) -> Value {
        json!({
            "metadata": {"generation": 1},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "db", "image": "registry:5000/db:20261122.4"}]}}},
            "status": status
        })
    }

    #[test]
    fn statefulset_rollout() {
        let done = statefulset(
            json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 3, "currentRevision": "db-2", "updateRevision": "db-2"}),
        );
        let seen = observe_workload(WorkloadKind::StatefulSet, &done, None).expect("readable");
        assert_eq!(
            seen.revision,
            Some(DeployedRevision::ImageTag("20261122.4".into()))
        );
        assert_eq!(seen.agent, AgentState::Settled);

        let not_ready =
            statefulset(json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 3}));
        assert_eq!(
            observe_workload(WorkloadKind::StatefulSet, &not_ready, None)
                .expect("readable")
                .agent,
            AgentState::Progressing("2 of 3 pods ready".into())
        );

        let updating = statefulset(
            json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(
            observe_workload(WorkloadKind::StatefulSet, &updating, None)
                .expect("readable")
                .agent,
            AgentState::Progressing("1 of 3 pods updated".into())
        );
    }

    fn daemonset(status: Value) -> Value {
        json!({
            "metadata": {"generation": 4},
            "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:20261122.4"}]}}},
            "status": status
        })
    }

    #[test]
    fn daemonset_rollout() {
        let done = daemonset(
            json!({"observedGeneration": 4, "desiredNumberScheduled": 5, "updatedNumberScheduled": 5, "numberAvailable": 5}),
        );
        assert_eq!(
            observe_workload(WorkloadKind::DaemonSet, &done, None)
                .expect("readable")
                .agent,
            AgentState::Settled
        );
        let updating = daemonset(
            json!({"observedGeneration": 4, "desiredNumberScheduled": 5, "updatedNumberScheduled": 3, "numberAvailable": 5}),
        );
        assert_eq!(
            observe_workload(WorkloadKind::DaemonSet, &updating, None)
                .expect("readable")
                .agent,
            AgentState::Progressing("3 of 5 pods updated".into())
        );
        let unavailable = daemonset(
            json!({"observedGeneration": 4, "desiredNumberScheduled": 5, "updatedNumberScheduled": 5, "numberAvailable": 4}),
        );
        assert_eq!(
            observe_workload(WorkloadKind::DaemonSet, &unavailable, None)
                .expect("readable")
                .agent,
            AgentState::Progressing("4 of 5 updated pods available".into())
        );
    }
}
