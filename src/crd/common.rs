//! Spec and status pieces shared by PipelineGate and ServiceTrace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go `time.ParseDuration` syntax as Flux uses it, so `1m`, `30s`, `1h30m` all validate at apply time.
/// Bounded (at most 4 parts of at most 7 digits each) so that no value the schema admits overflows a
/// parse: `9999999999999999h` does not fit a `std::time::Duration` of nanoseconds.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,7}(\.[0-9]{1,9})?(ms|s|m|h)){1,4}$";

/// The longest duration any spec field takes; longer values are refused at `kubectl apply` (CEL) and
/// clamped by [`duration_or`] wherever the API server did not check (an older CRD in the cluster).
pub const MAX_SPEC_DURATION: std::time::Duration = std::time::Duration::from_secs(8760 * 3600);
/// The same bound, spelled for the CRD's CEL rule.
const MAX_SPEC_DURATION_GO: &str = "8760h";

/// Schema of a duration field: pattern, length and a CEL bound with a message that names the limit.
fn duration_schema(min: &str, what: &str) -> schemars::Schema {
    let rule = if min == "0s" {
        format!("duration(self) <= duration('{MAX_SPEC_DURATION_GO}')")
    } else {
        format!(
            "duration(self) >= duration('{min}') && duration(self) <= duration('{MAX_SPEC_DURATION_GO}')"
        )
    };
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "pattern": DURATION_PATTERN,
        "maxLength": 80,
        "x-kubernetes-validations": [{
            "rule": rule,
            "message": format!(
                "{what} must be a Go duration between {min} and {MAX_SPEC_DURATION_GO} (one year), e.g. 1m or 1h30m"
            ),
        }],
    })
}

/// `interval`: at least a second (a zero period would poll in a loop), at most a year.
pub fn interval_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_schema("1s", "interval")
}

/// `policy.timeout`: zero (time out at once) up to a year.
pub fn timeout_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_schema("0s", "timeout")
}

/// `policy.staleAfter`: zero (Unknown at the first failed read) up to a year.
pub fn stale_after_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_schema("0s", "staleAfter")
}

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

/// The length of a Go duration in seconds, computed in floating point so nothing can overflow (a sum
/// may be infinite); `None` when it is not Go syntax. kube's own parser panics when a part does not fit
/// a `std::time::Duration` (`9999999999999999h`), so every parse goes through this first.
fn go_duration_seconds(s: &str) -> Option<f64> {
    let mut rest = s.trim_start_matches(['+', '-']);
    if rest == "0" {
        return Some(0.0);
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let unit_start = rest.find(|c: char| c.is_alphabetic())?;
        let (number, tail) = rest.split_at(unit_start);
        let value: f64 = number.parse().ok()?;
        let unit_end = tail
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{00b5}s" | "\u{03bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Some(total)
}

/// Parse a Go duration that cannot panic: longer than [`MAX_SPEC_DURATION`] saturates to it.
pub fn parse_duration_saturating(s: &str) -> Result<Duration, String> {
    match go_duration_seconds(s) {
        None => Err(format!(
            "{s:?} is not a Go duration such as 30s, 1m or 1h30m"
        )),
        Some(secs) if secs > MAX_SPEC_DURATION.as_secs_f64() => {
            Ok(Duration::from(MAX_SPEC_DURATION))
        }
        // Every part is at most the total, so kube's parser stays within range.
        Some(_) => s.parse().map_err(|e| format!("{s:?}: {e}")),
    }
}

/// A duration flag (clap `value_parser`): Go syntax, at most [`MAX_SPEC_DURATION`], refused otherwise.
pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    match go_duration_seconds(s) {
        Some(secs) if secs <= MAX_SPEC_DURATION.as_secs_f64() => {
            s.parse().map_err(|e| format!("{s:?}: {e}"))
        }
        Some(_) => Err(format!(
            "{s:?} is longer than {MAX_SPEC_DURATION_GO} (one year)"
        )),
        None => Err(format!(
            "{s:?} is not a Go duration such as 30s, 1m or 1h30m"
        )),
    }
}

/// Serde `deserialize_with` for the spec's duration fields: a value stored under an older CRD (without
/// this schema's bounds) saturates instead of panicking inside the watcher, where one object would stop
/// the whole list and with it every object of the kind.
pub fn deserialize_duration<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<String> = Option::deserialize(deserializer)?;
    raw.map(|s| parse_duration_saturating(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Parse an optional Go duration, falling back to a default; used for `interval`, `timeout`, `staleAfter`.
/// Clamped to [`MAX_SPEC_DURATION`]: the schema refuses longer values, but an object stored under an
/// older CRD may still hold one, and every later sum (deadlines, requeues) must stay finite.
pub fn duration_or(d: &Option<Duration>, default: std::time::Duration) -> std::time::Duration {
    d.map(std::time::Duration::from)
        .unwrap_or(default)
        .min(MAX_SPEC_DURATION)
}

/// Short form of a commit SHA, the way `git log --oneline` and Flux print it.
pub fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_duration_string_panics_and_long_ones_saturate() {
        // Why this parser exists: kube's own panics on a value the old schema admitted.
        let kube_parse = std::panic::catch_unwind(|| "9999999999999999h".parse::<Duration>());
        assert!(
            kube_parse.is_err(),
            "kube-core's Duration parser no longer panics"
        );
        for s in [
            "9999999999999999h",
            "9999999h9999999h9999999h9999999h",
            "99999999999999999999999999999999999999s",
        ] {
            let d = parse_duration_saturating(s).unwrap();
            assert_eq!(std::time::Duration::from(d), MAX_SPEC_DURATION, "{s}");
            assert!(
                parse_duration_flag(s).unwrap_err().contains("one year"),
                "{s}"
            );
            assert_eq!(
                duration_or(&Some(d), std::time::Duration::ZERO),
                MAX_SPEC_DURATION
            );
        }
        assert_eq!(
            std::time::Duration::from(parse_duration_saturating("1h30m").unwrap()),
            std::time::Duration::from_secs(5400)
        );
        assert_eq!(
            std::time::Duration::from(parse_duration_flag("8760h").unwrap()),
            MAX_SPEC_DURATION
        );
        assert!(parse_duration_saturating("soon").is_err());
        assert!(parse_duration_flag("5").is_err());
    }

    #[test]
    fn a_gate_with_an_unbounded_duration_deserializes_saturated() {
        // As an object stored under an older CRD (no bounds) reaches the watcher.
        let gate: crate::crd::PipelineGate = serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": "g", "namespace": "ns"},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": "P",
                                "credentials": {"secretRef": {"name": "s", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"},
                "interval": "9999999999999999h",
                "policy": {"timeout": "9999999999999999h", "staleAfter": "9999999999999999h"}
            }
        }))
        .unwrap();
        for d in [
            gate.spec.interval,
            gate.spec.policy.timeout,
            gate.spec.policy.stale_after,
        ] {
            assert_eq!(
                duration_or(&d, std::time::Duration::ZERO),
                MAX_SPEC_DURATION
            );
        }
        let trace: Result<crate::crd::ServiceTraceSpec, _> =
            serde_json::from_value(serde_json::json!({
                "interval": "9999999999999999h"
            }));
        // Other fields are missing, but not because of the duration.
        assert!(!trace.unwrap_err().to_string().contains("duration"));
    }

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
