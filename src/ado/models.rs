//! Azure DevOps REST shapes, as tolerant as the real service requires: keys are often absent rather than
//! null (unfinished builds have no `result`/`finishTime`), and enums grow, so every optional field is an
//! `Option` and every enum has an `Unknown` catch-all. Only fields lockstep reads are modelled; serde
//! ignores the rest.

use serde::{Deserialize, Serialize};

/// The `{count, value}` wrapper every list endpoint returns.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct ListResponse<T> {
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
}

/// Build status. Note ADO spells it `cancelling` here, but `canceling` for Pipelines run state.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum BuildStatus {
    None,
    NotStarted,
    Postponed,
    InProgress,
    #[serde(alias = "canceling")]
    Cancelling,
    Completed,
    All,
    #[serde(other)]
    Unknown,
}

/// Build result, present only once a build completed. `canceled` has a single l.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum BuildResult {
    None,
    Succeeded,
    PartiallySucceeded,
    Failed,
    #[serde(alias = "cancelled")]
    Canceled,
    #[serde(other)]
    Unknown,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::NotStarted => "notStarted",
            Self::Postponed => "postponed",
            Self::InProgress => "inProgress",
            Self::Cancelling => "cancelling",
            Self::Completed => "completed",
            Self::All => "all",
            Self::Unknown => "unknown",
        }
    }
}

impl BuildResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Succeeded => "succeeded",
            Self::PartiallySucceeded => "partiallySucceeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
pub struct Href {
    #[serde(default)]
    pub href: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
pub struct BuildLinks {
    #[serde(default)]
    pub web: Option<Href>,
    #[serde(default)]
    pub timeline: Option<Href>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionRef {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub project: Option<ProjectRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BuildRepository {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// One build (= one Pipelines run). Timestamps stay strings on the wire (up to 7 fractional digits);
/// parse them with [`parse_ado_time`].
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    pub id: i64,
    #[serde(default)]
    pub build_number: Option<String>,
    #[serde(default)]
    pub status: Option<BuildStatus>,
    #[serde(default)]
    pub result: Option<BuildResult>,
    #[serde(default)]
    pub queue_time: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub finish_time: Option<String>,
    #[serde(default)]
    pub source_branch: Option<String>,
    #[serde(default)]
    pub source_version: Option<String>,
    #[serde(default)]
    pub definition: Option<DefinitionRef>,
    #[serde(default)]
    pub project: Option<ProjectRef>,
    #[serde(default)]
    pub repository: Option<BuildRepository>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, rename = "_links")]
    pub links: Option<BuildLinks>,
    /// Why the build was queued (`individualCI`, `buildCompletion`, `resourceTrigger`, `manual` …).
    #[serde(default)]
    pub reason: Option<String>,
    /// Source-provider details of the trigger (`ci.sourceSha`, `ci.message` …). Documented as a map of
    /// strings; kept as JSON values so an unexpected value type cannot make the whole build unreadable.
    #[serde(default)]
    pub trigger_info: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// The build whose completion queued this one (classic build-completion triggers).
    #[serde(default)]
    pub triggered_by_build: Option<BuildRef>,
}

/// A reference to another build, as `triggeredByBuild` carries it; every field optional on purpose.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BuildRef {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub build_number: Option<String>,
    #[serde(default)]
    pub definition: Option<DefinitionRef>,
}

impl Build {
    pub fn web_url(&self) -> Option<&str> {
        self.links.as_ref()?.web.as_ref()?.href.as_deref()
    }
    pub fn definition_name(&self) -> Option<&str> {
        self.definition.as_ref()?.name.as_deref()
    }
}

/// Parse an ADO timestamp (`2026-04-01T10:46:36.7230431Z`).
pub fn parse_ado_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// A Git ref from Refs - List.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    pub name: String,
    #[serde(default)]
    pub object_id: Option<String>,
    /// Present with `peelTags=true` on annotated tags: the commit the tag points at.
    #[serde(default)]
    pub peeled_object_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GitUserDate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
}

/// A commit from Commits - Get / Get Commits.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitCommitRef {
    pub commit_id: String,
    #[serde(default)]
    pub author: Option<GitUserDate>,
    #[serde(default)]
    pub committer: Option<GitUserDate>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub remote_url: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRepository {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub remote_url: Option<String>,
    #[serde(default)]
    pub project: Option<ProjectRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitObjectRef {
    pub object_id: String,
    #[serde(default)]
    pub object_type: Option<String>,
}

/// Annotated Tags - Get: the tag object and the object it points at.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitAnnotatedTag {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub object_id: Option<String>,
    pub tagged_object: GitObjectRef,
}

/// The JSON body of an ADO error response (`TF…` messages).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub type_key: Option<String>,
    #[serde(default)]
    pub type_name: Option<String>,
}

/// Pipelines run state. Note ADO spells it `canceling` here, but `cancelling` for build status.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    InProgress,
    #[serde(alias = "cancelling")]
    Canceling,
    Completed,
    /// `unknown` on the wire, and any state this version does not know.
    #[serde(other)]
    Unknown,
}

/// Pipelines run result. The documented enum has no `partiallySucceeded`; what ADO sends for such a run
/// is unverified, so it is accepted here and anything else lands in `Unknown`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RunResult {
    Succeeded,
    PartiallySucceeded,
    Failed,
    #[serde(alias = "cancelled")]
    Canceled,
    /// `unknown` on the wire, and any result this version does not know.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunPipelineRef {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub revision: Option<i64>,
}

/// `resources.repositories.self` of a run: the only place the Runs API names the source.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunRepositoryResource {
    #[serde(default)]
    pub ref_name: Option<String>,
    /// Commit SHA.
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunResources {
    #[serde(default)]
    pub repositories: Option<std::collections::BTreeMap<String, RunRepositoryResource>>,
    /// Pipeline resources (`resources.pipelines` in YAML), keyed by alias: which run of which pipeline
    /// this run consumed (and, for a pipeline-completion trigger, was triggered by).
    #[serde(default)]
    pub pipelines: Option<std::collections::BTreeMap<String, RunPipelineResource>>,
}

/// One pipeline resource of a run: the pipeline and the run name (build number) consumed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunPipelineResource {
    #[serde(default)]
    pub pipeline: Option<RunPipelineRef>,
    #[serde(default)]
    pub version: Option<String>,
}

/// A Pipelines run (`_apis/pipelines/{id}/runs`, and `resource.run` in run-state-changed hooks).
/// Run id == build id, pipeline id == definition id; lockstep gates on the Builds API, which can filter.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRun {
    pub id: i64,
    /// The run name, i.e. the build number.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub state: Option<RunState>,
    #[serde(default)]
    pub result: Option<RunResult>,
    #[serde(default)]
    pub created_date: Option<String>,
    #[serde(default)]
    pub finished_date: Option<String>,
    #[serde(default)]
    pub pipeline: Option<RunPipelineRef>,
    #[serde(default)]
    pub resources: Option<RunResources>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, rename = "_links")]
    pub links: Option<BuildLinks>,
}

impl PipelineRun {
    pub fn web_url(&self) -> Option<&str> {
        self.links.as_ref()?.web.as_ref()?.href.as_deref()
    }
    /// The `self` repository resource (the repository the pipeline's YAML lives in).
    pub fn self_repository(&self) -> Option<&RunRepositoryResource> {
        self.resources.as_ref()?.repositories.as_ref()?.get("self")
    }
}

/// Build timeline (`_apis/build/builds/{id}/timeline`): stages, phases, jobs and tasks of one build.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub records: Vec<TimelineRecord>,
}

/// One timeline record. `state`/`result` use the timeline vocabulary (`pending`, `skipped`,
/// `succeededWithIssues`, …), different from Build's, so they stay strings. Records are unordered:
/// sort by `order` within a `parentId`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRecord {
    pub id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub order: Option<i64>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub finish_time: Option<String>,
}

/// A pull request (Pull Requests - Get, and the values of Pull Request Query results).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitPullRequest {
    pub pull_request_id: i64,
    #[serde(default)]
    pub title: Option<String>,
    /// `active`, `abandoned`, `completed`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub source_ref_name: Option<String>,
    #[serde(default)]
    pub target_ref_name: Option<String>,
    #[serde(default)]
    pub last_merge_commit: Option<GitCommitRef>,
    #[serde(default)]
    pub repository: Option<PullRequestRepository>,
    /// The REST URL (`…/_apis/git/repositories/{id}/pullRequests/{n}`), not the web page.
    #[serde(default)]
    pub url: Option<String>,
}

/// The repository a pull request belongs to, as far as building its web link needs it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRepository {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub remote_url: Option<String>,
}

/// Pull Request Query (`POST …/pullrequestquery`): `results[n]` maps each commit of `queries[n]` to the
/// pull requests found for it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GitPullRequestQuery {
    #[serde(default)]
    pub results: Vec<std::collections::BTreeMap<String, Vec<GitPullRequest>>>,
}
