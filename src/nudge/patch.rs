//! The nudge requests. Each is a JSON merge patch of one annotation, the same change the agents' own CLIs
//! make, so Flux and Argo CD treat it exactly like a human's "reconcile now".

use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::config::NudgeConfig;
use super::targets::{self, Target, TargetWhy};
use crate::crd::{NudgeKind, PipelineGate};

/// Flux's "reconcile now": the controller reconciles when the value differs from the
/// `status.lastHandledReconcileAt` it recorded (fluxcd/pkg `apis/meta/annotations.go`; `flux reconcile`
/// writes `time.Now().Format(time.RFC3339Nano)`).
pub const FLUX_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";
/// Argo CD's refresh request: the application controller refreshes and removes it
/// (argo-cd `pkg/apis/application/v1alpha1/types.go`, `AnnotationKeyRefresh`; values `normal`/`hard`).
pub const ARGOCD_REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";
/// Field manager of nudge patches, so `managedFields` shows who asked.
pub const NUDGE_FIELD_MANAGER: &str = "lockstep-nudge";

/// One request may take this long; a slow API server delays the Event, never the gate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Patches in flight at once for one gate.
const CONCURRENCY: usize = 8;
/// Kustomizations read per page when looking for dependents, and at most this many pages.
const LIST_PAGE: u32 = 500;
const MAX_LIST_PAGES: usize = 20;
/// Error texts in Events stay short: the API server caps the note, and one line per target is enough.
const MAX_ERROR_CHARS: usize = 160;

/// What a nudge did: the objects asked to reconcile, and those that could not be (with why).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NudgeReport {
    pub nudged: Vec<Target>,
    /// Also "retried the failed sync of": Applications whose failed operation was started again.
    pub retried: Vec<Target>,
    pub failed: Vec<(String, String)>,
}

impl NudgeReport {
    pub fn is_empty(&self) -> bool {
        self.nudged.is_empty() && self.failed.is_empty()
    }

    /// The note of the Normal Event: every object nudged, and why.
    pub fn nudged_note(&self) -> Option<String> {
        if self.nudged.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .nudged
            .iter()
            .map(|t| {
                let why = match t.why {
                    TargetWhy::AppliedGate => "applied this gate",
                    TargetWhy::DependsOn => "depends on it",
                    TargetWhy::ManagesGate => "manages this gate",
                    TargetWhy::Explicit => "spec.nudge.targets",
                };
                let retried = if self.retried.contains(t) {
                    ", failed sync retried"
                } else {
                    ""
                };
                format!("{t} ({why}{retried})")
            })
            .collect();
        Some(format!(
            "Gate opened; requested a reconcile of {}",
            parts.join(", ")
        ))
    }

    /// The note of the Warning Event: every object that could not be nudged.
    pub fn failed_note(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .failed
            .iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect();
        Some(format!(
            "Could not nudge {} (the gate is open regardless; grant lockstep patch on these kinds or set spec.nudge.enabled: false)",
            parts.join("; ")
        ))
    }
}

/// Nudge everything waiting on `gate`. Never fails: problems are in the report.
pub async fn nudge_gate(
    client: &kube::Client,
    config: &NudgeConfig,
    gate: &PipelineGate,
) -> NudgeReport {
    let spec = gate.spec.nudge.as_ref();
    let mut report = NudgeReport::default();
    if !targets::enabled(config, spec) {
        return report;
    }
    let namespace = gate.namespace().unwrap_or_default();
    let mut all =
        targets::direct_targets(config, &namespace, gate.labels(), gate.annotations(), spec);
    if config.flux {
        if let Some(parent) = targets::applying_kustomization(gate.labels()) {
            match list_kustomizations(client, config).await {
                Ok(list) => all.extend(targets::dependents_of(&parent, &list)),
                Err(e) => report
                    .failed
                    .push(("dependents (Kustomizations)".to_string(), e)),
            }
        }
    }
    let all = targets::finish(config, all);
    let retry = spec.is_some_and(|s| s.retry_failed_sync);
    let results: Vec<(Target, Result<bool, String>)> = futures::stream::iter(all)
        .map(|t| async move {
            let result = nudge_one(client, &t, retry).await;
            (t, result)
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    for (target, result) in results {
        match result {
            Ok(retried) => {
                debug!(target = %target, retried, "nudged");
                if retried {
                    report.retried.push(target.clone());
                }
                report.nudged.push(target);
            }
            Err(e) => {
                warn!(target = %target, error = %e, "nudge refused");
                report.failed.push((target.to_string(), e));
            }
        }
    }
    report
}

fn api(client: &kube::Client, kind: NudgeKind, namespace: &str) -> Api<DynamicObject> {
    let resource = resource(kind);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The API of each kind lockstep nudges (the versions the ServiceTrace reader uses too).
pub fn resource(kind: NudgeKind) -> kube::api::ApiResource {
    use kube::api::{ApiResource, GroupVersionKind};
    match kind {
        NudgeKind::Kustomization => ApiResource::from_gvk(&GroupVersionKind::gvk(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
        )),
        NudgeKind::Application => ApiResource::from_gvk(&GroupVersionKind::gvk(
            "argoproj.io",
            "v1alpha1",
            "Application",
        )),
    }
}

/// Nudge one object; `Ok(true)` when a failed Argo CD sync was also retried.
async fn nudge_one(client: &kube::Client, target: &Target, retry: bool) -> Result<bool, String> {
    let api = api(client, target.kind, &target.namespace);
    let params = PatchParams {
        field_manager: Some(NUDGE_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let annotation = match target.kind {
        NudgeKind::Kustomization => {
            json!({ FLUX_REQUESTED_AT_ANNOTATION: Timestamp::now().to_string() })
        }
        NudgeKind::Application => json!({ ARGOCD_REFRESH_ANNOTATION: "normal" }),
    };
    let patch = json!({ "metadata": { "annotations": annotation } });
    let patched = bounded(api.patch(&target.name, &params, &Patch::Merge(&patch))).await?;
    if target.kind != NudgeKind::Application || !retry {
        return Ok(false);
    }
    match retry_operation(&patched.data) {
        None => Ok(false),
        Some(operation) => {
            let patch = json!({ "operation": operation });
            bounded(api.patch(&target.name, &params, &Patch::Merge(&patch))).await?;
            Ok(true)
        }
    }
}

/// The operation that starts a failed sync again, when the Application's last operation failed and none
/// runs now: the same sync (revision, options, retry strategy), initiated by lockstep. This is what
/// `argocd app sync` does with the last operation's parameters (argo-cd `server/application`'s Sync sets
/// `operation`; the application controller runs and then clears it).
pub fn retry_operation(app: &Value) -> Option<Value> {
    if !app["operation"].is_null() {
        return None;
    }
    let state = &app["status"]["operationState"];
    let phase = state["phase"].as_str()?;
    if phase != "Failed" && phase != "Error" {
        return None;
    }
    let last = &state["operation"];
    let sync = last.get("sync").filter(|s| s.is_object())?;
    let mut op = json!({
        "sync": sync,
        "initiatedBy": {"username": "lockstep", "automated": true},
    });
    if let Some(retry) = last.get("retry").filter(|r| r.is_object()) {
        op["retry"] = retry.clone();
    }
    Some(op)
}

async fn bounded<T>(
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(short_error(&e)),
        Err(_) => Err(format!(
            "no answer from the API server within {}s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

/// `403 Forbidden: ...` for API refusals, else the client error; cut to [`MAX_ERROR_CHARS`].
fn short_error(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    };
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// Every Kustomization in scope (JSON), page by page, at most [`MAX_LIST_PAGES`] pages.
async fn list_kustomizations(
    client: &kube::Client,
    config: &NudgeConfig,
) -> Result<Vec<Value>, String> {
    let resource = resource(NudgeKind::Kustomization);
    let api: Api<DynamicObject> = match &config.watch_namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(LIST_PAGE);
    for _ in 0..MAX_LIST_PAGES {
        let page = bounded(api.list(&params)).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        // Only what `targets::dependents_of` reads: a page of whole Kustomizations (inventories of
        // every object they apply) must not stay in memory while the rest is listed.
        out.extend(page.items.into_iter().map(|k| {
            json!({
                "metadata": {"namespace": k.metadata.namespace, "name": k.metadata.name},
                "spec": {"dependsOn": k.data.get("spec").and_then(|s| s.get("dependsOn"))},
            })
        }));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
    warn!(
        pages = MAX_LIST_PAGES,
        "more Kustomizations than one nudge reads; dependents beyond them are not nudged"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_is_retried_with_its_own_parameters_only_when_nothing_runs() {
        let app = json!({"status": {"operationState": {"phase": "Failed",
            "operation": {"sync": {"revision": "abc", "syncOptions": ["CreateNamespace=true"]},
                          "retry": {"limit": 2}, "initiatedBy": {"automated": true}}}}});
        let op = retry_operation(&app).expect("a retry");
        assert_eq!(op["sync"]["revision"], "abc");
        assert_eq!(op["retry"]["limit"], 2);
        assert_eq!(op["initiatedBy"]["username"], "lockstep");

        let running = json!({"operation": {"sync": {}}, "status": app["status"].clone()});
        assert_eq!(retry_operation(&running), None);
        let succeeded = json!({"status": {"operationState": {"phase": "Succeeded",
            "operation": {"sync": {"revision": "abc"}}}}});
        assert_eq!(retry_operation(&succeeded), None);
        assert_eq!(retry_operation(&json!({})), None);
    }

    #[test]
    fn notes_name_every_target_and_reason() {
        let t = Target {
            kind: NudgeKind::Kustomization,
            namespace: "flux-system".into(),
            name: "apps".into(),
            why: TargetWhy::DependsOn,
        };
        let report = NudgeReport {
            nudged: vec![t],
            retried: vec![],
            failed: vec![("Application argocd/web".into(), "403 Forbidden: no".into())],
        };
        assert_eq!(
            report.nudged_note().unwrap(),
            "Gate opened; requested a reconcile of Kustomization flux-system/apps (depends on it)"
        );
        assert!(report
            .failed_note()
            .unwrap()
            .starts_with("Could not nudge Application argocd/web: 403 Forbidden: no"));
    }
}
