//! Spec and status pieces shared by PipelineGate and ServiceTrace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go `time.ParseDuration` syntax as Flux uses it, so `1m`, `30s`, `1h30m` all validate at apply time.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Where the Azure DevOps organization lives and how to authenticate to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureDevOpsSpec {
    /// Organization or collection URL: `https://dev.azure.com/contoso`, `https://contoso.visualstudio.com`
    /// or an Azure DevOps Server collection such as `https://tfs.corp/DefaultCollection`.
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/[^\s]*)?$"))]
    pub organization_url: String,
    /// Project name or id.
    #[schemars(length(min = 1))]
    pub project: String,
    /// How lockstep authenticates: exactly one of `secretRef` (a PAT, also for Azure DevOps Server),
    /// `workloadIdentity`, `servicePrincipal`, `managedIdentity` (Microsoft Entra ID, Azure DevOps
    /// Services only).
    pub credentials: super::Credentials,
}

/// One pipeline definition on one branch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRef {
    /// Build/pipeline definition id (the `definitionId=` in the pipeline's URL).
    #[schemars(range(min = 1))]
    pub definition_id: i64,
    /// Branch name; `refs/heads/` is added when missing.
    #[schemars(length(min = 1))]
    pub branch: String,
}

/// A run (build) as status reports it. Status and result keep Azure DevOps' own spellings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Build id (equals the Pipelines run id).
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_number: Option<String>,
    /// Pipeline (definition) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_branch: Option<String>,
    /// Full commit SHA the run built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// First 7 characters of `sourceVersion`, for printer columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

impl RunSummary {
    /// The status summary of an Azure DevOps build (= Pipelines run); unparseable times are left out.
    pub fn from_build(build: &crate::ado::Build) -> Self {
        let time = |t: &Option<String>| t.as_deref().and_then(crate::ado::parse_ado_time).map(Time);
        Self {
            id: build.id,
            build_number: build.build_number.clone(),
            pipeline: build.definition_name().map(str::to_string),
            status: build.status.map(|s| s.as_str().to_string()),
            result: build.result.map(|r| r.as_str().to_string()),
            source_branch: build.source_branch.clone(),
            source_version: build.source_version.clone(),
            commit: build.source_version.as_deref().map(short_sha),
            queue_time: time(&build.queue_time),
            start_time: time(&build.start_time),
            finish_time: time(&build.finish_time),
            web_url: build.web_url().map(str::to_string),
        }
    }
}

/// Parse an optional Go duration, falling back to a default; used for `interval`, `timeout`, `staleAfter`.
pub fn duration_or(d: &Option<Duration>, default: std::time::Duration) -> std::time::Duration {
    d.map(std::time::Duration::from).unwrap_or(default)
}

/// Short form of a commit SHA, the way `git log --oneline` and Flux print it.
pub fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_summary_from_a_build_in_flight() {
        let build: crate::ado::Build = serde_json::from_value(serde_json::json!({
            "id": 1207,
            "buildNumber": "20260302.5",
            "status": "inProgress",
            "queueTime": "2026-03-02T10:15:00.1230000Z",
            "startTime": "not a time",
            "sourceBranch": "refs/heads/main",
            "sourceVersion": "b7e4d2c19a0f3e5d6c8b7a9f0e1d2c3b4a596877",
            "definition": {"id": 42, "name": "base-ci"},
            "_links": {"web": {"href": "https://dev.azure.com/contoso/Shop/_build/results?buildId=1207"}}
        }))
        .unwrap();
        let s = RunSummary::from_build(&build);
        assert_eq!(s.id, 1207);
        assert_eq!(s.build_number.as_deref(), Some("20260302.5"));
        assert_eq!(s.pipeline.as_deref(), Some("base-ci"));
        assert_eq!(s.status.as_deref(), Some("inProgress"));
        assert_eq!(s.result, None);
        assert_eq!(s.commit.as_deref(), Some("b7e4d2c"));
        assert_eq!(
            s.queue_time.map(|t| t.0.to_string()).as_deref(),
            Some("2026-03-02T10:15:00.123Z")
        );
        assert_eq!(s.start_time, None);
        assert_eq!(s.finish_time, None);
        assert!(s.web_url.unwrap().ends_with("buildId=1207"));
    }
}
