//! ServiceTrace: "where is my change?", from source commit to the revision the cluster runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AzureDevOpsSpec, HookCoverage, PipelineRef, RunSummary};

/// Default and upper bound of `spec.historyLimit`: 20 builds, at most 50 (Spektate's page size), which
/// keeps a full status far below etcd's object size limit (see `MAX_STATUS_BYTES`).
pub const DEFAULT_HISTORY_LIMIT: u32 = 20;
pub const MAX_HISTORY_LIMIT: u32 = 50;
/// At most this many environments per trace.
pub const MAX_ENVIRONMENTS: usize = 10;
/// A status never exceeds this many bytes of JSON (a test fills every bounded field to prove it).
pub const MAX_STATUS_BYTES: usize = 64 * 1024;
/// Free text copied from Azure DevOps or the cluster (messages, PR titles, author names) is cut to this.
pub const MAX_MESSAGE_CHARS: usize = 512;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 100;

/// Follows one service from CI build through HLD and manifest repositories to what each environment runs.
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
    doc = "ServiceTrace follows one service from source commit to CI build, HLD commit, manifest commit and the revision each environment runs, and keeps the recent builds' arrivals in status.history.",
    printcolumn(name = "Build", type_ = "string", json_path = ".status.imageTag"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.summary"),
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
        name = "Manifest",
        type_ = "string",
        priority = 1,
        json_path = ".status.manifestCommitShort"
    ),
    printcolumn(
        name = "Deployed",
        type_ = "string",
        priority = 1,
        json_path = ".status.deployedRevisionShort"
    ),
    printcolumn(
        name = "Hooks",
        type_ = "string",
        json_path = ".status.hooks.state",
        description = "Whether enabled Azure DevOps service hooks cover the CI pipeline and the repositories",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.deployed) != has(self.environments)",
    "message": "set exactly one of deployed (one environment) and environments"
}]))]
pub struct ServiceTraceSpec {
    #[serde(rename = "azureDevOps")]
    pub azure_devops: AzureDevOpsSpec,
    /// The CI pipeline: its source commit is the start of the trace, its buildNumber the image tag.
    pub build: PipelineRef,
    /// The high-level definition repository, when the service uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hld: Option<HldRef>,
    /// The manifest repository the GitOps agents sync from (an environment may name its own branch or
    /// path in it).
    pub manifest: ManifestRef,
    /// The environments in promotion order (dev, staging, prod …). Set this or `deployed`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub environments: Option<Vec<EnvironmentSpec>>,
    /// Shorthand for one environment: `deployed: X` means `environments: [{name: default, X}]`.
    /// Kept from the first v1alpha1 shape; set this or `environments`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<DeployedRef>,
    /// How many builds `status.history` keeps, newest first (default 20, at most 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub history_limit: Option<u32>,
    /// When the flow counts as stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TracePolicy>,
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

/// When a stage that has not advanced counts as stuck: the trace goes Stalled naming the step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracePolicy {
    /// How long any stage may take after the previous one finished (default 30m).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::timeout_schema")]
    pub timeout: Option<Duration>,
    /// Overrides `timeout` for writing the image tag into the HLD repository after the build.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::timeout_schema")]
    pub hld_timeout: Option<Duration>,
    /// Overrides `timeout` for generating the manifests after the HLD commit (or the build).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::timeout_schema")]
    pub manifest_timeout: Option<Duration>,
}

/// One environment ("ring"): what runs it, and optionally where in the manifest repository it reads.
/// Exactly one of `fluxKustomization`, `argoApplication`, `workload`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.fluxKustomization) ? 1 : 0) + (has(self.argoApplication) ? 1 : 0) + (has(self.workload) ? 1 : 0) == 1",
    "message": "set exactly one of fluxKustomization, argoApplication, workload"
}]))]
pub struct EnvironmentSpec {
    /// Environment name, unique in the trace (a DNS label: `dev`, `staging`, `prod-eu`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A Flux Kustomization; its `status.lastAppliedRevision` is the manifest commit it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux_kustomization: Option<ObjectRef>,
    /// An Argo CD Application, also one in a hub instance whose destination is another cluster
    /// (lockstep reads the Application where it lives; status names the destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo_application: Option<ObjectRef>,
    /// A workload whose container image tag is the build number it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// This environment's manifests, when they differ from `spec.manifest` (own branch or folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<EnvironmentManifest>,
    /// How long this environment may take to run the change after the previous stage (the manifest
    /// commit, or the previous environment) got it; overrides `policy.timeout`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::common::deserialize_duration"
    )]
    #[schemars(schema_with = "super::common::timeout_schema")]
    pub timeout: Option<Duration>,
}

/// Where in the manifest repository one environment's manifests are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentManifest {
    /// Branch of `spec.manifest.repository` (default `spec.manifest.branch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 250))]
    pub branch: Option<String>,
    /// Folder this environment reads (`/prod`); only commits touching it count as manifest commits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 250))]
    pub path: Option<String>,
}

impl ServiceTraceSpec {
    /// The environments in promotion order, with the `deployed` shorthand expanded to one named
    /// `default`. Empty only for an object the API server's validation would have refused.
    pub fn environment_list(&self) -> Vec<EnvironmentSpec> {
        if let Some(envs) = &self.environments {
            return envs.iter().take(MAX_ENVIRONMENTS).cloned().collect();
        }
        self.deployed
            .as_ref()
            .map(|d| {
                vec![EnvironmentSpec {
                    name: "default".to_string(),
                    flux_kustomization: d.flux_kustomization.clone(),
                    argo_application: d.argo_application.clone(),
                    workload: d.workload.clone(),
                    manifest: None,
                    timeout: None,
                }]
            })
            .unwrap_or_default()
    }

    /// `historyLimit` clamped to 1..=50 (the schema already refuses anything else).
    pub fn history_limit(&self) -> usize {
        self.history_limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .clamp(1, MAX_HISTORY_LIMIT) as usize
    }
}

impl EnvironmentSpec {
    /// What runs this environment, in the shape `spec.deployed` uses.
    pub fn deployed(&self) -> DeployedRef {
        DeployedRef {
            flux_kustomization: self.flux_kustomization.clone(),
            argo_application: self.argo_application.clone(),
            workload: self.workload.clone(),
        }
    }
}

/// The HLD repository, and optionally the pipeline that writes the image tag into it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HldRef {
    /// Repository name or id.
    #[schemars(length(min = 1))]
    pub repository: String,
    #[schemars(length(min = 1))]
    pub branch: String,
    /// The pipeline that writes the image tag into the HLD repository, when it is not the CI pipeline
    /// itself (a stage of the CI build, as Bedrock's templates do, needs no id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub definition_id: Option<i64>,
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
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
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
    /// How far the newest build has got, for the printer column: `dev ✓ staging ✓ prod …`
    /// (✓ arrived, … on its way, ✗ failed, ⏸ suspended, ? unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The newest build's path through every stage, each tied to that same change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<TracedChange>,
    /// The last `spec.historyLimit` builds, newest first, with per-environment arrivals.
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub history: Vec<HistoryEntry>,
    /// One entry per configured stage, in flow order: build, hld, manifest, then one `deployed` entry
    /// per environment (named `deployed` for the shorthand, `deployed/<env>` otherwise).
    #[serde(default)]
    pub stages: Vec<TraceStage>,
    /// Head commit of the manifest branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit_short: Option<String>,
    /// The manifest commit the last environment runs.
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
    /// Whether Azure DevOps service hooks cover this trace's CI pipeline and the repositories it reads,
    /// from the hook-health check (`--hook-health-interval`); the reconciler's status writes leave it
    /// alone.
    #[serde(default, skip_serializing)]
    pub hooks: Option<HookCoverage>,
}

/// One step of the flow from commit to cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceStage {
    /// `build`, `hld`, `manifest`, `deployed` or `deployed/<environment>`.
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

/// A change's whole path: the CI build, the HLD update, the manifest generation, every environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracedChange {
    pub build: BuildInfo,
    /// The run that wrote the image tag into the HLD repository, and the HLD commit it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hld_update: Option<StepInfo>,
    /// The manifest-generation run built from that HLD commit, and the manifest commit it pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_generation: Option<StepInfo>,
    /// Per environment, in promotion order.
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub environments: Vec<EnvironmentProgress>,
}

/// The CI build that starts a change.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// Build (= run) id.
    pub id: i64,
    /// Build number, which is the image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `succeeded`, `failed`, `canceled`, `partiallySucceeded`, or the status while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Full source commit SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// Author of the source commit (display name), when the Commits API named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
}

/// The pull request that brought the source commit in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestInfo {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One pipeline step of a change (HLD update, manifest generation): its run, the commit it produced, and
/// how lockstep knows both belong to this change.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepInfo {
    /// `Waiting` (previous step not done), `InProgress`, `Succeeded`, `Failed`, `Stalled`, `Unknown`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunLink>,
    /// The commit the step produced (HLD commit, manifest commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_url: Option<String>,
    /// The rule that tied this step to the build (see docs/servicetrace.md): `triggeredByBuild`,
    /// `resourceTrigger`, `sourceVersion`, `commitMessage`, `sameRun`, `commitTime`, `queueTime` or
    /// `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A run, as far as a history row needs it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunLink {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
}

/// Where the newest build stands in one environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentProgress {
    pub name: String,
    /// `Arrived`, `Progressing`, `Waiting` (upstream not there yet), `Failed`, `Suspended`, `Stalled`,
    /// `Unknown`.
    pub state: String,
    /// What runs it: `Kustomization flux-system/orders`, `Application argocd/orders-prod`, `Deployment shop/orders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For an Argo CD Application, its destination cluster (`spec.destination.name` or `.server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The revision the environment runs now (manifest commit, or image tag for a workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The manifest commit that carries the newest build for this environment (its branch and path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit: Option<String>,
    /// When lockstep first saw this build running there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<Time>,
    /// From the source commit's push (build queue time) to `arrivedAt`, as a Go duration (`1h4m10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One build in `status.history`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub build_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestInfo>,
    /// When the build was queued (≈ the push that triggered it): lead times count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_queue_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_finish_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hld_run: Option<RunLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hld_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_run: Option<RunLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit: Option<String>,
    /// Per environment name (a map, so `@.environments.prod.arrivedAt` works in kubectl jsonpath filters).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 10))]
    pub environments: std::collections::BTreeMap<String, HistoryArrival>,
}

/// What became of one build in one environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryArrival {
    /// `Arrived`, `Superseded` (a newer build got there first), `Failed`, or `Pending`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time: Option<String>,
    /// This environment's manifest commit for the build, when the environment has its own manifest
    /// branch or path (otherwise it is the entry's `manifestCommit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
