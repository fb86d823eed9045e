//! PipelineGate: "may this deployment proceed?", answered from the newest run of one pipeline on one branch.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AzureDevOpsSpec, HookCoverage, NudgeSpec, PipelineRef, RunSummary};

/// Holds deployments until the newest run of an Azure DevOps pipeline on a branch has succeeded.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "PipelineGate",
    plural = "pipelinegates",
    shortname = "pgate",
    category = "lockstep",
    namespaced,
    status = "PipelineGateStatus",
    doc = "PipelineGate follows the newest run of one Azure DevOps pipeline on one branch and is Ready when it succeeded.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Run",
        type_ = "string",
        json_path = ".status.latestRun.buildNumber"
    ),
    printcolumn(
        name = "Commit",
        type_ = "string",
        json_path = ".status.latestRun.commit"
    ),
    printcolumn(
        name = "Hooks",
        type_ = "string",
        json_path = ".status.hooks.state",
        description = "Whether an enabled Azure DevOps service hook covers the pipeline",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineGateSpec {
    #[serde(rename = "azureDevOps")]
    pub azure_devops: AzureDevOpsSpec,
    pub pipeline: PipelineRef,
    #[serde(default)]
    pub policy: GatePolicy,
    /// Polling period while no run is in flight (default 1m); lockstep polls every 10s while one is.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::interval_schema")]
    pub interval: Option<Duration>,
    /// Stop polling and leave the verdict as it is.
    #[serde(default)]
    pub suspend: bool,
    /// Request an immediate reconcile of the Flux Kustomizations and Argo CD Applications waiting on this
    /// gate when it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nudge: Option<NudgeSpec>,
}

/// What counts as open, what is skipped, and how long to wait.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatePolicy {
    /// Results that open the gate. Default `[succeeded]`.
    #[serde(default = "default_accepted")]
    pub accepted_results: Vec<AcceptableResult>,
    /// Results skipped when looking for the newest completed run, e.g. `[canceled]`.
    #[serde(default)]
    pub ignored_results: Vec<IgnorableResult>,
    /// How long a queued or running run may keep the gate waiting before it is Stalled (default 30m).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::timeout_schema")]
    pub timeout: Option<Duration>,
    /// How long Azure DevOps may be unreachable before Ready becomes Unknown (default 10m).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::stale_after_schema")]
    pub stale_after: Option<Duration>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            accepted_results: default_accepted(),
            ignored_results: Vec::new(),
            timeout: None,
            stale_after: None,
        }
    }
}

fn default_accepted() -> Vec<AcceptableResult> {
    vec![AcceptableResult::Succeeded]
}

/// A completed-run result that may open the gate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AcceptableResult {
    Succeeded,
    PartiallySucceeded,
}

/// A completed-run result that may be skipped when finding the newest completed run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IgnorableResult {
    Canceled,
    Failed,
    PartiallySucceeded,
}

// The three runs are shared pointers: an open gate's newest, newest completed and newest succeeded run
// are usually one run, and the controller's cache holds every gate for the life of the process, so equal
// summaries share one allocation (`share_equal_runs`); the JSON is unchanged. (A `//` comment: a doc
// comment here would become the CRD's description.)
/// Observed state, in kstatus form.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineGateStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The newest run on the branch, whatever its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<Arc<RunSummary>>,
    /// The newest completed run that was not ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_run: Option<Arc<RunSummary>>,
    /// The newest run with an accepted result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_succeeded_run: Option<Arc<RunSummary>>,
    /// When the gate started waiting on the run in flight; the timeout counts from here, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// When the verdict was last confirmed (a read that answered, runs or not); `staleAfter` counts from
    /// here, so Ready turns Unknown only after that long without one, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
    /// The last transient error, cleared by the next successful read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether Azure DevOps service hooks cover this gate's pipeline, from the hook-health check
    /// (`--hook-health-interval`); the reconciler's status writes leave it alone.
    #[serde(default, skip_serializing)]
    pub hooks: Option<HookCoverage>,
}

impl PipelineGateStatus {
    /// Make equal run summaries one allocation (see the type's docs). A status decoded from JSON has
    /// three separate copies; this keeps one.
    pub fn share_equal_runs(&mut self) {
        let latest = self.latest_run.clone();
        share_with(&mut self.last_completed_run, latest.as_ref());
        share_with(&mut self.last_succeeded_run, latest.as_ref());
        let completed = self.last_completed_run.clone();
        share_with(&mut self.last_succeeded_run, completed.as_ref());
    }
}

fn share_with(slot: &mut Option<Arc<RunSummary>>, with: Option<&Arc<RunSummary>>) {
    if let (Some(run), Some(with)) = (slot.as_mut(), with) {
        if !Arc::ptr_eq(run, with) && **run == **with {
            *run = with.clone();
        }
    }
}
