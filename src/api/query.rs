//! Query parameters of the list routes, and the filters they select with.

use kube::core::{Selector, SelectorExt};
use serde::Deserialize;

use crate::crd::{PipelineGate, ServiceTrace};
use crate::label_selector::{self as selector, SelectorError};

/// Upper bound on a filter value: a commit SHA-256 is 64 characters; anything much longer is a mistake.
const MAX_FILTER_LEN: usize = 256;

/// `?namespace=&labelSelector=&commit=&imageTag=&author=&environment=&state=` as sent.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RawQuery {
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub commit: Option<String>,
    pub image_tag: Option<String>,
    pub author: Option<String>,
    pub environment: Option<String>,
    pub state: Option<String>,
}

/// A request's filters, validated.
#[derive(Debug, Clone)]
pub struct Filters {
    pub namespace: Option<String>,
    pub selector: Selector,
    pub trace: TraceFilter,
    /// Summary state, for both kinds (see [`state_of_gate`], [`state_of_trace`]).
    pub state: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("query parameter {0} is longer than {MAX_FILTER_LEN} characters")]
    TooLong(&'static str),
    #[error("state must be one of Succeeded, InProgress, Failed, Unknown (got {0:?})")]
    State(String),
}

impl Filters {
    pub fn parse(raw: RawQuery) -> Result<Self, QueryError> {
        let short = |name: &'static str, v: Option<String>| -> Result<Option<String>, QueryError> {
            match v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
                Some(v) if v.len() > MAX_FILTER_LEN => Err(QueryError::TooLong(name)),
                other => Ok(other),
            }
        };
        let state = short("state", raw.state)?;
        if let Some(s) = &state {
            if !STATES.contains(&s.as_str()) {
                return Err(QueryError::State(s.clone()));
            }
        }
        Ok(Self {
            namespace: short("namespace", raw.namespace)?,
            selector: selector::parse(raw.label_selector.as_deref().unwrap_or(""))?,
            trace: TraceFilter {
                commit: short("commit", raw.commit)?.map(|c| c.to_ascii_lowercase()),
                image_tag: short("imageTag", raw.image_tag)?,
                author: short("author", raw.author)?.map(|a| a.to_lowercase()),
                environment: short("environment", raw.environment)?,
            },
            state,
        })
    }

    pub fn gate_matches(&self, gate: &PipelineGate) -> bool {
        self.selector
            .matches(gate.metadata.labels.as_ref().unwrap_or(&Default::default()))
            && self
                .state
                .as_deref()
                .is_none_or(|s| state_of_gate(gate) == s)
    }

    pub fn trace_matches(&self, trace: &ServiceTrace) -> bool {
        self.selector.matches(
            trace
                .metadata
                .labels
                .as_ref()
                .unwrap_or(&Default::default()),
        ) && self
            .state
            .as_deref()
            .is_none_or(|s| state_of_trace(trace) == s)
            && self.trace.matches(trace)
    }
}

/// The four summary states the dashboard colours, shared with the stages' own `state` spelling.
pub const STATES: [&str; 4] = ["Succeeded", "InProgress", "Failed", "Unknown"];

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn kstatus_state(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> &'static str {
    if condition(conditions, "Ready") == Some("True") {
        "Succeeded"
    } else if condition(conditions, "Stalled") == Some("True") {
        "Failed"
    } else if condition(conditions, "Reconciling") == Some("True") {
        "InProgress"
    } else {
        "Unknown"
    }
}

/// A gate's summary state: open is `Succeeded`, Stalled `Failed`, waiting `InProgress`.
pub fn state_of_gate(gate: &PipelineGate) -> &'static str {
    gate.status
        .as_ref()
        .map_or("Unknown", |s| kstatus_state(&s.conditions))
}

/// A trace's summary state: Ready (the cluster runs the newest build) is `Succeeded`, and so on.
pub fn state_of_trace(trace: &ServiceTrace) -> &'static str {
    trace
        .status
        .as_ref()
        .map_or("Unknown", |s| kstatus_state(&s.conditions))
}

/// Filters only traces have.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// Lower-case prefix of a commit SHA anywhere in the trace (source, HLD, manifest, deployed).
    pub commit: Option<String>,
    /// The image tag (CI build number), exactly.
    pub image_tag: Option<String>,
    /// Lower-case substring of the source commit's author.
    pub author: Option<String>,
    /// An environment the trace reports.
    pub environment: Option<String>,
}

impl TraceFilter {
    pub fn matches(&self, trace: &ServiceTrace) -> bool {
        let facts = TraceFacts::of(trace);
        self.commit.as_deref().is_none_or(|c| {
            facts
                .commits
                .iter()
                .any(|sha| sha.to_ascii_lowercase().starts_with(c))
        }) && self
            .image_tag
            .as_deref()
            .is_none_or(|t| facts.image_tags.iter().any(|x| x == t))
            && self
                .author
                .as_deref()
                .is_none_or(|a| facts.authors.iter().any(|x| x.to_lowercase().contains(a)))
            && self
                .environment
                .as_deref()
                .is_none_or(|e| facts.environments.iter().any(|x| x == e))
    }
}

/// What the trace filters look at, gathered from wherever the status carries it: the stages, and (with
/// ServiceTrace's environments and history) the newest build's path and every build in the history.
/// Read from the serialized object so the filters follow the status as it grows.
#[derive(Default)]
struct TraceFacts {
    commits: Vec<String>,
    image_tags: Vec<String>,
    authors: Vec<String>,
    environments: Vec<String>,
}

impl TraceFacts {
    fn of(trace: &ServiceTrace) -> Self {
        let mut facts = Self::default();
        let Ok(object) = serde_json::to_value(trace) else {
            return facts;
        };
        let status = &object["status"];
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let each = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
        facts.commits.extend(text(&status["manifestCommitId"]));
        facts.commits.extend(text(&status["deployedRevision"]));
        facts.image_tags.extend(text(&status["imageTag"]));
        for stage in each(&status["stages"]) {
            facts.commits.extend(text(&stage["commit"]));
            facts.commits.extend(text(&stage["run"]["sourceVersion"]));
            if stage["name"] == "build" {
                facts.image_tags.extend(text(&stage["run"]["buildNumber"]));
            }
        }
        let latest = &status["latest"];
        facts.commits.extend(text(&latest["build"]["commit"]));
        facts.commits.extend(text(&latest["hldUpdate"]["commit"]));
        facts
            .commits
            .extend(text(&latest["manifestGeneration"]["commit"]));
        facts.image_tags.extend(text(&latest["build"]["imageTag"]));
        facts.image_tags.extend(text(&latest["build"]["number"]));
        facts.authors.extend(text(&latest["build"]["author"]));
        for env in each(&latest["environments"]) {
            facts.environments.extend(text(&env["name"]));
        }
        for entry in each(&status["history"]) {
            for key in ["commit", "hldCommit", "manifestCommit"] {
                facts.commits.extend(text(&entry[key]));
            }
            facts.image_tags.extend(text(&entry["imageTag"]));
            facts.authors.extend(text(&entry["author"]));
            if let Some(envs) = entry["environments"].as_object() {
                facts.environments.extend(envs.keys().cloned());
            }
        }
        for env in each(&object["spec"]["environments"]) {
            facts.environments.extend(text(&env["name"]));
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trace(labels: serde_json::Value, status: serde_json::Value) -> ServiceTrace {
        serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace",
            "metadata": {"name": "orders", "namespace": "shop", "labels": labels},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "build": {"definitionId": 12, "branch": "main"},
                "manifest": {"repository": "m", "branch": "main"},
                "deployed": {"workload": {"kind": "Deployment", "name": "orders"}}
            },
            "status": status
        }))
        .unwrap()
    }

    fn filters(q: serde_json::Value) -> Filters {
        Filters::parse(serde_json::from_value(q).unwrap()).unwrap()
    }

    fn sample() -> ServiceTrace {
        trace(
            json!({"team": "checkout"}),
            json!({
                "conditions": [{"type": "Reconciling", "status": "True", "reason": "InProgress", "message": "",
                                "lastTransitionTime": "2026-11-29T10:00:00Z"}],
                "imageTag": "20261129.3",
                "stages": [
                    {"name": "build", "state": "Succeeded", "commit": "ABCDEF0123456789abcdef0123456789abcdef01",
                     "run": {"id": 7, "buildNumber": "20261129.3", "sourceVersion": "abcdef0123456789abcdef0123456789abcdef01"}},
                    {"name": "deployed", "state": "InProgress", "commit": "9999999999999999999999999999999999999999"}
                ]
            }),
        )
    }

    #[test]
    fn commit_filters_by_prefix_of_any_stage_case_insensitively() {
        let t = sample();
        assert!(filters(json!({"commit": "abcdef0"})).trace_matches(&t));
        assert!(filters(json!({"commit": "ABCDEF0"})).trace_matches(&t));
        assert!(filters(json!({"commit": "99999"})).trace_matches(&t));
        assert!(!filters(json!({"commit": "1234"})).trace_matches(&t));
    }

    #[test]
    fn image_tag_label_selector_and_state_combine() {
        let t = sample();
        assert!(filters(json!({"imageTag": "20261129.3"})).trace_matches(&t));
        assert!(!filters(json!({"imageTag": "20261129.2"})).trace_matches(&t));
        assert!(
            filters(json!({"labelSelector": "team=checkout", "state": "InProgress"}))
                .trace_matches(&t)
        );
        assert!(!filters(json!({"labelSelector": "team=search"})).trace_matches(&t));
        assert!(!filters(json!({"state": "Succeeded"})).trace_matches(&t));
        assert_eq!(state_of_trace(&t), "InProgress");
    }

    #[test]
    fn a_trace_without_status_matches_no_content_filter() {
        let t = trace(json!({}), json!(null));
        assert!(filters(json!({})).trace_matches(&t));
        assert!(!filters(json!({"commit": "a"})).trace_matches(&t));
        assert!(!filters(json!({"author": "ann"})).trace_matches(&t));
        assert!(!filters(json!({"environment": "prod"})).trace_matches(&t));
        assert!(filters(json!({"state": "Unknown"})).trace_matches(&t));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let parse = |q: serde_json::Value| Filters::parse(serde_json::from_value(q).unwrap());
        assert!(matches!(
            parse(json!({"state": "Open"})),
            Err(QueryError::State(_))
        ));
        assert!(matches!(
            parse(json!({"commit": "a".repeat(300)})),
            Err(QueryError::TooLong("commit"))
        ));
        assert!(matches!(
            parse(json!({"labelSelector": "a in b"})),
            Err(QueryError::Selector(_))
        ));
    }
}
