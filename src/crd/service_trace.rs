//! ServiceTrace: "where is my change?", from source commit to the revision the cluster runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AzureDevOpsSpec, PipelineRef, RunSummary};

/// Follows one service from CI build through HLD and manifest repositories to what the cluster runs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "ServiceTrace",
    plural = "servicetraces",
    shortname = "strace",
    category = "lockstep",
    namespaced,
    status = "ServiceTraceStatus",
    doc = "ServiceTrace follows one service from source commit to CI build, HLD commit, manifest commit and the revision the cluster runs.",
    printcolumn(name = "Build", type_ = "string", json_path = ".status.imageTag"),
    printcolumn(
        name = "Manifest",
        type_ = "string",
        json_path = ".status.manifestCommitShort"
    ),
    printcolumn(
        name = "Deployed",
        type_ = "string",
        json_path = ".status.deployedRevisionShort"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTraceSpec {
    #[serde(rename = "azureDevOps")]
    pub azure_devops: AzureDevOpsSpec,
    /// The CI pipeline: its source commit is the start of the trace, its buildNumber the image tag.
    pub build: PipelineRef,
    /// The high-level definition repository, when the service uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hld: Option<RepositoryRef>,
    /// The manifest repository the GitOps agent syncs from.
    pub manifest: ManifestRef,
    /// What the cluster runs.
    pub deployed: DeployedRef,
    /// Polling period (default 1m).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::interval_schema")]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub suspend: bool,
}

/// A branch of an Azure Repos Git repository in the trace's project.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRef {
    /// Repository name or id.
    #[schemars(length(min = 1))]
    pub repository: String,
    #[schemars(length(min = 1))]
    pub branch: String,
}

/// The manifest repository, and optionally the pipeline that generates it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRef {
    #[schemars(length(min = 1))]
    pub repository: String,
    #[schemars(length(min = 1))]
    pub branch: String,
    /// The manifest-generation pipeline, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub definition_id: Option<i64>,
}

/// Where to read the deployed revision. Exactly one must be set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.fluxKustomization) ? 1 : 0) + (has(self.argoApplication) ? 1 : 0) + (has(self.workload) ? 1 : 0) == 1",
    "message": "set exactly one of fluxKustomization, argoApplication, workload"
}]))]
pub struct DeployedRef {
    /// A Flux Kustomization; its `status.lastAppliedRevision` is the deployed manifest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux_kustomization: Option<ObjectRef>,
    /// An Argo CD Application; its `status.sync.revision` is the deployed manifest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo_application: Option<ObjectRef>,
    /// A workload whose container image tag is the deployed build number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
}

/// A namespaced object; the namespace defaults to the trace's own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A workload and the container whose image tag to read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Container name; the first container when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Observed state of the trace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTraceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One entry per configured stage, in flow order: build, hld, manifest, deployed.
    #[serde(default)]
    pub stages: Vec<TraceStage>,
    /// Head commit of the manifest branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit_short: Option<String>,
    /// The manifest commit the cluster runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_revision_short: Option<String>,
    /// Build number of the newest successful CI build (the image tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One step of the flow from commit to cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceStage {
    /// `build`, `hld`, `manifest` or `deployed`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
    /// `Succeeded`, `InProgress`, `Failed` or `Unknown`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
