//! Azure DevOps service-hook payloads → routing hints.
//!
//! Pure: bytes in, [`WebhookEvent`] out. The payload is never trusted for a verdict; all we take from it is
//! *which* pipeline or repository changed, so the reconcile that follows re-reads Azure DevOps. That is why
//! the parser is tolerant (every field optional, unknown event types are not errors) and why, when a
//! payload names a pipeline in two different ways, both are returned: notifying one object too many costs
//! one extra read, missing one costs a polling interval.
//!
//! Shapes handled (see `tests/fixtures/azure-devops/hook-*.json` and docs/ado-api.md §8):
//! - `build.complete` resourceVersion 2.0 (a Build) and 1.0 (legacy: `sourceGetVersion: "LG:<ref>:<sha>"`);
//! - `ms.vss-pipelines.{run,stage,job}-state-changed-event`, 2019 shape (no `runId`, stage events carry
//!   only `run{id,name}`) and 2025 shape;
//! - `git.push`: one hint per updated branch.

use serde_json::Value;

use crate::pipeline_key::{full_branch_ref, OrgKey};

pub const BUILD_COMPLETE: &str = "build.complete";
pub const RUN_STATE_CHANGED: &str = "ms.vss-pipelines.run-state-changed-event";
pub const STAGE_STATE_CHANGED: &str = "ms.vss-pipelines.stage-state-changed-event";
pub const JOB_STATE_CHANGED: &str = "ms.vss-pipelines.job-state-changed-event";
pub const GIT_PUSH: &str = "git.push";

/// The event types lockstep routes; everything else is accepted and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    BuildComplete,
    RunStateChanged,
    StageStateChanged,
    JobStateChanged,
    GitPush,
    Unknown,
}

impl EventKind {
    pub fn from_event_type(event_type: &str) -> Self {
        match event_type {
            BUILD_COMPLETE => Self::BuildComplete,
            RUN_STATE_CHANGED => Self::RunStateChanged,
            STAGE_STATE_CHANGED => Self::StageStateChanged,
            JOB_STATE_CHANGED => Self::JobStateChanged,
            GIT_PUSH => Self::GitPush,
            _ => Self::Unknown,
        }
    }

    /// Bounded label for metrics: the sender chooses `eventType`, so unknown values collapse to `other`.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::BuildComplete => BUILD_COMPLETE,
            Self::RunStateChanged => RUN_STATE_CHANGED,
            Self::StageStateChanged => STAGE_STATE_CHANGED,
            Self::JobStateChanged => JOB_STATE_CHANGED,
            Self::GitPush => GIT_PUSH,
            Self::Unknown => "other",
        }
    }
}

/// Something in Azure DevOps that changed, as far as routing is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HintTarget {
    /// A run of a pipeline (build definition) changed state.
    Pipeline {
        organization: OrgKey,
        /// Project name when the payload carries it, else the project id; informational only.
        project: Option<String>,
        definition_id: i64,
        /// Full ref (`refs/heads/main`) of the run, when the payload says.
        branch: Option<String>,
    },
    /// A branch of a Git repository moved.
    Repository {
        organization: OrgKey,
        project: Option<String>,
        repository_id: Option<String>,
        repository_name: Option<String>,
        /// Full ref, `refs/heads/...`.
        branch: String,
    },
}

/// One delivery, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    /// Event id; retries of one event repeat it, so it is the idempotency key.
    pub id: Option<String>,
    pub event_type: String,
    pub kind: EventKind,
    pub subscription_id: Option<String>,
    /// The "Test" button in Azure DevOps sends a sample payload with an all-zero `subscriptionId`.
    pub is_test: bool,
    /// Empty for unknown event types and for payloads that name nothing lockstep can route.
    pub targets: Vec<HintTarget>,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON at all, or cut off; the message carries serde's line/column, never the body.
    #[error("the body is not valid JSON ({0}); send the service-hook payload unchanged")]
    Malformed(#[source] serde_json::Error),
    #[error("the body is JSON but not an Azure DevOps service-hook event: {0}")]
    NotAnEvent(&'static str),
}

/// Parse a service-hook body. A UTF-8 byte-order mark is skipped (Azure DevOps sometimes sends one).
pub fn parse_event(body: &[u8]) -> Result<WebhookEvent, PayloadError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).map_err(PayloadError::Malformed)?;
    let envelope = value.as_object().ok_or(PayloadError::NotAnEvent(
        "the top level is not a JSON object",
    ))?;
    let event_type = envelope
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or(PayloadError::NotAnEvent(
            "`eventType` is missing or not a string",
        ))?
        .to_string();
    let kind = EventKind::from_event_type(&event_type);
    let subscription_id = str_at(&value, &["subscriptionId"]).map(str::to_string);
    let is_test = subscription_id.as_deref().is_some_and(is_all_zero_guid);
    let targets = match kind {
        EventKind::BuildComplete => build_complete_targets(&value),
        EventKind::RunStateChanged | EventKind::StageStateChanged | EventKind::JobStateChanged => {
            pipeline_event_targets(&value)
        }
        EventKind::GitPush => git_push_targets(&value),
        EventKind::Unknown => Vec::new(),
    };
    Ok(WebhookEvent {
        id: str_at(&value, &["id"]).map(str::to_string),
        event_type,
        kind,
        subscription_id,
        is_test,
        targets: dedup_in_order(targets),
    })
}

fn is_all_zero_guid(s: &str) -> bool {
    let digits: Vec<char> = s.chars().filter(|c| *c != '-').collect();
    !digits.is_empty() && digits.iter().all(|c| *c == '0')
}

fn build_complete_targets(event: &Value) -> Vec<HintTarget> {
    let resource = &event["resource"];
    let Some(organization) = organization_of(
        event,
        &[
            &["url"],
            &["_links", "web", "href"],
            &["_links", "self", "href"],
            &["definition", "url"],
            &["project", "url"],
        ],
    ) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    push_some(&mut ids, i64_at(resource, &["definition", "id"]));
    push_some(
        &mut ids,
        str_at(resource, &["definition", "url"]).and_then(|u| id_after_segment(u, "definitions")),
    );
    // 2.0 has `sourceBranch`; the 1.0 (XAML-era) shape only has `sourceGetVersion: "LG:<ref>:<sha>"`.
    let branch = str_at(resource, &["sourceBranch"])
        .map(normalise_branch)
        .or_else(|| str_at(resource, &["sourceGetVersion"]).and_then(branch_from_get_version));
    let project = str_at(resource, &["project", "name"])
        .or_else(|| str_at(resource, &["definition", "project", "name"]))
        .or_else(|| str_at(resource, &["project", "id"]))
        .or_else(|| str_at(event, &["resourceContainers", "project", "id"]))
        .map(str::to_string);
    pipeline_targets(organization, project, ids, branch)
}

fn pipeline_event_targets(event: &Value) -> Vec<HintTarget> {
    let resource = &event["resource"];
    let Some(organization) = organization_of(
        event,
        &[
            &["run", "url"],
            &["run", "_links", "self", "href"],
            &["run", "_links", "web", "href"],
            &["pipeline", "url"],
            &["runUrl"],
            &["stage", "_links", "web", "href"],
            &["stage", "_links", "pipeline.web", "href"],
            &["job", "_links", "web", "href"],
            &["job", "_links", "pipeline.web", "href"],
        ],
    ) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    push_some(&mut ids, i64_at(resource, &["pipeline", "id"]));
    push_some(&mut ids, i64_at(resource, &["run", "pipeline", "id"]));
    // Links and URLs name the pipeline too. In real payloads they agree with `pipeline.id`; in Microsoft's
    // documentation sample they do not (`pipeline.id` 11, links `Pipelines/1`), and we cannot tell which
    // one a hand-edited or future payload gets right, so every distinct id is hinted.
    for href in [
        &["pipeline", "url"][..],
        &["run", "pipeline", "url"],
        &["run", "url"],
        &["run", "_links", "self", "href"],
        &["run", "_links", "pipeline", "href"],
        &["runUrl"],
    ] {
        push_some(
            &mut ids,
            str_at(resource, href).and_then(|u| id_after_segment(u, "pipelines")),
        );
    }
    for links in [
        &["run", "_links"][..],
        &["stage", "_links"],
        &["job", "_links"],
    ] {
        push_some(
            &mut ids,
            str_at(resource, &[links, &["pipeline.web", "href"]].concat())
                .and_then(|u| query_param_i64(u, "definitionId")),
        );
    }
    let branch = str_at(
        resource,
        &["run", "resources", "repositories", "self", "refName"],
    )
    .map(normalise_branch);
    let project = str_at(resource, &["projectId"])
        .or_else(|| str_at(event, &["resourceContainers", "project", "id"]))
        .map(str::to_string);
    pipeline_targets(organization, project, ids, branch)
}

fn pipeline_targets(
    organization: OrgKey,
    project: Option<String>,
    ids: Vec<i64>,
    branch: Option<String>,
) -> Vec<HintTarget> {
    ids.into_iter()
        .filter(|id| *id > 0)
        .map(|definition_id| HintTarget::Pipeline {
            organization: organization.clone(),
            project: project.clone(),
            definition_id,
            branch: branch.clone(),
        })
        .collect()
}

fn git_push_targets(event: &Value) -> Vec<HintTarget> {
    let resource = &event["resource"];
    let Some(organization) = organization_of(
        event,
        &[
            &["repository", "remoteUrl"],
            &["repository", "url"],
            &["url"],
            &["_links", "self", "href"],
        ],
    ) else {
        return Vec::new();
    };
    let repository_id = str_at(resource, &["repository", "id"]).map(str::to_string);
    let repository_name = str_at(resource, &["repository", "name"]).map(str::to_string);
    if repository_id.is_none() && repository_name.is_none() {
        return Vec::new();
    }
    let project = str_at(resource, &["repository", "project", "name"])
        .or_else(|| str_at(resource, &["repository", "project", "id"]))
        .or_else(|| str_at(event, &["resourceContainers", "project", "id"]))
        .map(str::to_string);
    let Some(updates) = resource.get("refUpdates").and_then(Value::as_array) else {
        return Vec::new();
    };
    updates
        .iter()
        .filter_map(|u| str_at(u, &["name"]))
        // Tags and other refs never move a followed branch.
        .filter(|name| name.starts_with("refs/heads/") && name.len() > "refs/heads/".len())
        .map(|name| HintTarget::Repository {
            organization: organization.clone(),
            project: project.clone(),
            repository_id: repository_id.clone(),
            repository_name: repository_name.clone(),
            branch: name.to_string(),
        })
        .collect()
}

/// The organization: from `resourceContainers` (built from the org's primary URL, so possibly the
/// `{org}.visualstudio.com` form), else from URLs inside the resource (2019 and Storage-Queue deliveries
/// carry no `resourceContainers`). Collection first: on Azure DevOps Server the account URL is the bare host.
fn organization_of(event: &Value, resource_urls: &[&[&str]]) -> Option<OrgKey> {
    let containers = ["collection", "project", "account"]
        .into_iter()
        .filter_map(|c| str_at(event, &["resourceContainers", c, "baseUrl"]));
    let in_resource = resource_urls
        .iter()
        .filter_map(|path| str_at(&event["resource"], path));
    containers.chain(in_resource).find_map(OrgKey::from_url)
}

/// `LG:refs/heads/master:0ffb2b…` → `refs/heads/master`. Git refs cannot contain `:`, so the last one
/// separates the commit.
fn branch_from_get_version(v: &str) -> Option<String> {
    let rest = v.strip_prefix("LG:")?;
    let (branch, _sha) = rest.rsplit_once(':')?;
    (!branch.is_empty()).then(|| normalise_branch(branch))
}

fn normalise_branch(b: &str) -> String {
    full_branch_ref(b)
}

/// `…/_apis/Pipelines/42/runs/1` with segment `pipelines` → 42 (segment match ignores case).
fn id_after_segment(url: &str, segment: &str) -> Option<i64> {
    let parsed = url::Url::parse(url).ok()?;
    let mut segments = parsed.path_segments()?;
    segments.find(|s| s.eq_ignore_ascii_case(segment))?;
    segments.next()?.parse().ok().filter(|id| *id > 0)
}

fn query_param_i64(url: &str, name: &str) -> Option<i64> {
    let parsed = url::Url::parse(url).ok()?;
    let found = parsed
        .query_pairs()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.parse().ok());
    found.filter(|id: &i64| *id > 0)
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    walk(value, path)?.as_str().filter(|s| !s.trim().is_empty())
}

fn i64_at(value: &Value, path: &[&str]) -> Option<i64> {
    walk(value, path)?.as_i64()
}

fn walk<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_object()?.get(*key))
}

fn push_some<T: PartialEq>(out: &mut Vec<T>, item: Option<T>) {
    if let Some(item) = item {
        if !out.contains(&item) {
            out.push(item);
        }
    }
}

fn dedup_in_order<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgKey {
        OrgKey::from_url(s).unwrap()
    }

    fn pipeline(o: &str, project: Option<&str>, id: i64, branch: Option<&str>) -> HintTarget {
        HintTarget::Pipeline {
            organization: org(o),
            project: project.map(str::to_string),
            definition_id: id,
            branch: branch.map(str::to_string),
        }
    }

    fn repository(o: &str, project: &str, id: &str, name: &str, branch: &str) -> HintTarget {
        HintTarget::Repository {
            organization: org(o),
            project: Some(project.to_string()),
            repository_id: Some(id.to_string()),
            repository_name: Some(name.to_string()),
            branch: branch.to_string(),
        }
    }

    /// Every `hook-*.json` fixture with exactly the hints it must produce. A new fixture without a row
    /// fails the test, so the table cannot silently fall behind the fixtures.
    #[test]
    fn every_hook_fixture_routes_to_exactly_its_targets() {
        struct Row {
            file: &'static str,
            kind: EventKind,
            id: &'static str,
            is_test: bool,
            targets: Vec<HintTarget>,
        }
        let rows = vec![
            Row {
                file: "hook-build-complete-v1.json",
                kind: EventKind::BuildComplete,
                id: "8ba9c9ea-71a8-43b0-93bf-d9d4cb6d9182",
                is_test: false,
                targets: vec![pipeline(
                    "https://dev.azure.com/abrig",
                    Some("efd47cfd-d35f-40ba-b424-e1ab432fdc68"),
                    7,
                    Some("refs/heads/master"),
                )],
            },
            Row {
                file: "hook-build-complete-v2.json",
                kind: EventKind::BuildComplete,
                id: "33433986-7f56-4969-bfd4-3e59774c75ad",
                is_test: false,
                targets: vec![pipeline(
                    "https://dev.azure.com/fabrikamfiber",
                    Some("FabrikamFiberChat"),
                    4658,
                    Some("refs/heads/main"),
                )],
            },
            Row {
                // Microsoft's sample contradicts itself (pipeline.id 11, links Pipelines/1): both are hinted.
                file: "hook-run-state-changed-completed-docs-sample.json",
                kind: EventKind::RunStateChanged,
                id: "62e4351f-1c24-40f9-8510-7af03692ab45",
                is_test: false,
                targets: vec![
                    pipeline(
                        "https://codedev.ms/org",
                        Some("be9b3917-87e6-42a4-a549-2bc06a7a878f"),
                        11,
                        None,
                    ),
                    pipeline(
                        "https://codedev.ms/org",
                        Some("be9b3917-87e6-42a4-a549-2bc06a7a878f"),
                        1,
                        None,
                    ),
                ],
            },
            Row {
                file: "hook-run-state-changed-completed-failed.json",
                kind: EventKind::RunStateChanged,
                id: "a4c1e2f3-0b9d-4e8f-a7c6-5b4d3e2f1a09",
                is_test: false,
                targets: vec![pipeline(
                    "https://dev.azure.com/contoso",
                    Some("3f9a6c2e-5b1d-4e8a-9c7f-2d4b6a8e0c11"),
                    42,
                    Some("refs/heads/main"),
                )],
            },
            Row {
                file: "hook-run-state-changed-inprogress.json",
                kind: EventKind::RunStateChanged,
                id: "d5eb8d4c-dfca-4f91-a942-b45d9489ef0f",
                is_test: false,
                targets: vec![pipeline(
                    "https://dev.azure.com/liatrio",
                    Some("5a9cc47d-2818-4a4a-b99d-db0a28f4e08f"),
                    55,
                    Some("refs/heads/azure-pipelines"),
                )],
            },
            Row {
                file: "hook-run-state-changed-started-2019.json",
                kind: EventKind::RunStateChanged,
                id: "396613fe-0d2d-4e92-b2ef-8070fce07d87",
                is_test: false,
                targets: vec![pipeline(
                    "https://dev.azure.com/abrig",
                    None,
                    7,
                    Some("refs/heads/master"),
                )],
            },
            Row {
                file: "hook-stage-state-changed-completed.json",
                kind: EventKind::StageStateChanged,
                id: "2f7a77d6-bcac-42cd-bae7-9098659a8a32",
                is_test: false,
                targets: vec![pipeline(
                    "https://dev.azure.com/liatrio",
                    Some("5a9cc47d-2818-4a4a-b99d-db0a28f4e08f"),
                    377,
                    Some("refs/heads/master"),
                )],
            },
            Row {
                // 2019 stage events carry only run{id,name}: no branch, so no branch narrowing.
                file: "hook-stage-state-changed-running.json",
                kind: EventKind::StageStateChanged,
                id: "1a2be968-68f7-485a-8bb7-7a948d99210e",
                is_test: false,
                targets: vec![pipeline("https://dev.azure.com/abrig", None, 7, None)],
            },
            Row {
                // Anonymised upstream to an all-zero subscriptionId: parsed fully, flagged as a test delivery.
                file: "hook-job-state-changed-completed.json",
                kind: EventKind::JobStateChanged,
                id: "11111111-1111-1111-1111-111111111111",
                is_test: true,
                targets: vec![pipeline(
                    "https://dev.azure.com/example-org",
                    Some("00000000-0000-0000-0000-000000000000"),
                    1,
                    Some("refs/heads/main"),
                )],
            },
            Row {
                file: "hook-git-push.json",
                kind: EventKind::GitPush,
                id: "56e81d32-b0e8-44e2-a92a-55eb7b6ccdce",
                is_test: false,
                targets: vec![repository(
                    "https://dev.azure.com/dependabot",
                    "Core",
                    "d5bb1147-bd9f-4ae1-8554-aec3d164f94c",
                    "dependabot-sample",
                    "refs/heads/main",
                )],
            },
            Row {
                file: "hook-git-push-new-branch-no-messages.json",
                kind: EventKind::GitPush,
                id: "799c2a17-84d0-4bf8-ac8c-53493eebec3a",
                is_test: false,
                targets: vec![repository(
                    "https://dev.azure.com/dependabot",
                    "Core",
                    "e502622f-ac2b-4635-bec7-5e43d8865f71",
                    "tingle",
                    "refs/heads/dependabot/npm_and_yarn/webpack-merge-5.7.3",
                )],
            },
            Row {
                file: "hook-git-push-docs-sample.json",
                kind: EventKind::GitPush,
                id: "03c164c2-8912-4d5e-8009-3707d5f83734",
                is_test: false,
                targets: vec![repository(
                    "https://dev.azure.com/fabrikam-fiber-inc",
                    "Fabrikam-Fiber-Git",
                    "278d5cd2-584d-4b63-824a-2ba458937249",
                    "Fabrikam-Fiber-Git",
                    "refs/heads/master",
                )],
            },
        ];

        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azure-devops");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hook-") && n.ends_with(".json"))
            .collect();
        on_disk.sort();
        let mut in_table: Vec<String> = rows.iter().map(|r| r.file.to_string()).collect();
        in_table.sort();
        assert_eq!(
            on_disk, in_table,
            "every hook fixture needs a row in this table"
        );

        for row in rows {
            let body = std::fs::read(dir.join(row.file)).unwrap();
            let ev = parse_event(&body).unwrap_or_else(|e| panic!("{}: {e}", row.file));
            assert_eq!(ev.kind, row.kind, "{}", row.file);
            assert_eq!(ev.id.as_deref(), Some(row.id), "{}", row.file);
            assert_eq!(ev.is_test, row.is_test, "{}", row.file);
            assert_eq!(ev.targets, row.targets, "{}", row.file);
            // The same body with a byte-order mark in front routes identically.
            let with_bom = [&b"\xEF\xBB\xBF"[..], &body].concat();
            assert_eq!(parse_event(&with_bom).unwrap(), ev, "{} with BOM", row.file);
        }
    }

    #[test]
    fn legacy_visualstudio_base_url_routes_like_dev_azure() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azure-devops");
        let body = std::fs::read_to_string(dir.join("hook-build-complete-v2.json")).unwrap();
        let legacy = body.replace(
            "https://dev.azure.com/FabrikamFiber/",
            "https://fabrikamfiber.visualstudio.com/",
        );
        assert_ne!(body, legacy);
        assert_eq!(
            parse_event(legacy.as_bytes()).unwrap().targets,
            parse_event(body.as_bytes()).unwrap().targets
        );
    }

    #[test]
    fn bom_is_skipped() {
        let body = b"\xEF\xBB\xBF{\"eventType\":\"something.else\",\"id\":\"e1\"}";
        let ev = parse_event(body).unwrap();
        assert_eq!(ev.kind, EventKind::Unknown);
        assert_eq!(ev.id.as_deref(), Some("e1"));
        assert!(ev.targets.is_empty());
    }

    #[test]
    fn malformed_and_truncated_json_are_errors() {
        assert!(matches!(
            parse_event(b"{not json"),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            parse_event(b"{\"eventType\":\"git.push\",\"resource\":{"),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(parse_event(b""), Err(PayloadError::Malformed(_))));
    }

    #[test]
    fn json_that_is_not_an_event_is_an_error() {
        assert!(matches!(
            parse_event(b"[1,2]"),
            Err(PayloadError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse_event(b"{\"id\":\"x\"}"),
            Err(PayloadError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse_event(b"{\"eventType\":7}"),
            Err(PayloadError::NotAnEvent(_))
        ));
    }

    #[test]
    fn unknown_event_is_ignorable_not_an_error() {
        let ev = parse_event(br#"{"eventType":"workitem.updated","resource":{"id":1}}"#).unwrap();
        assert_eq!(ev.kind, EventKind::Unknown);
        assert_eq!(ev.kind.as_label(), "other");
        assert!(ev.targets.is_empty());
    }

    #[test]
    fn all_zero_subscription_is_a_test_delivery() {
        let ev = parse_event(
            br#"{"eventType":"git.push","subscriptionId":"00000000-0000-0000-0000-000000000000"}"#,
        )
        .unwrap();
        assert!(ev.is_test);
        let ev = parse_event(
            br#"{"eventType":"git.push","subscriptionId":"00000000-0000-0000-0000-000000000001"}"#,
        )
        .unwrap();
        assert!(!ev.is_test);
        let ev = parse_event(br#"{"eventType":"git.push"}"#).unwrap();
        assert!(!ev.is_test);
    }

    #[test]
    fn legacy_get_version_gives_the_branch() {
        assert_eq!(
            branch_from_get_version(
                "LG:refs/heads/feature/x:0ffb2ba5cefa3facdbb2c30df42fdb40afd294d8"
            )
            .as_deref(),
            Some("refs/heads/feature/x")
        );
        assert_eq!(branch_from_get_version("C123"), None);
        assert_eq!(branch_from_get_version("LG::abc"), None);
    }

    #[test]
    fn visualstudio_host_and_dev_azure_are_one_org() {
        let body = br#"{"eventType":"build.complete",
            "resource":{"definition":{"id":5},"sourceBranch":"refs/heads/main"},
            "resourceContainers":{"collection":{"baseUrl":"https://Contoso.visualstudio.com/"}}}"#;
        let ev = parse_event(body).unwrap();
        assert_eq!(
            ev.targets,
            vec![pipeline(
                "https://dev.azure.com/contoso",
                None,
                5,
                Some("refs/heads/main")
            )]
        );
    }

    #[test]
    fn server_collection_is_preferred_to_bare_account_url() {
        let body = br#"{"eventType":"build.complete","resource":{"definition":{"id":5}},
            "resourceContainers":{"account":{"baseUrl":"https://tfs.corp/"},
                                  "collection":{"baseUrl":"https://tfs.corp/DefaultCollection/"}}}"#;
        let ev = parse_event(body).unwrap();
        assert_eq!(
            ev.targets,
            vec![pipeline(
                "https://tfs.corp/DefaultCollection",
                None,
                5,
                None
            )]
        );
    }

    #[test]
    fn known_event_without_an_organization_has_no_targets() {
        let ev =
            parse_event(br#"{"eventType":"build.complete","resource":{"definition":{"id":5}}}"#)
                .unwrap();
        assert_eq!(ev.kind, EventKind::BuildComplete);
        assert!(ev.targets.is_empty());
    }

    #[test]
    fn pipeline_id_falls_back_to_links() {
        let body = br#"{"eventType":"ms.vss-pipelines.stage-state-changed-event",
            "resource":{"stage":{"_links":{"pipeline.web":{"href":"https://dev.azure.com/acme/p/_build/definition?definitionId=31"}}},
                        "run":{"id":9}}}"#;
        let ev = parse_event(body).unwrap();
        assert_eq!(
            ev.targets,
            vec![pipeline("https://dev.azure.com/acme", None, 31, None)]
        );
    }

    #[test]
    fn git_push_skips_tags_and_keeps_every_branch() {
        let body = br#"{"eventType":"git.push","resource":{
            "repository":{"id":"r1","name":"manifests","url":"https://dev.azure.com/acme/_apis/git/repositories/r1"},
            "refUpdates":[{"name":"refs/tags/v1"},{"name":"refs/heads/main"},{"name":"refs/heads/dev"},{"name":"refs/heads/"}]}}"#;
        let ev = parse_event(body).unwrap();
        let branches: Vec<_> = ev
            .targets
            .iter()
            .map(|t| match t {
                HintTarget::Repository { branch, .. } => branch.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(branches, vec!["refs/heads/main", "refs/heads/dev"]);
    }

    #[test]
    fn wrong_types_inside_a_known_event_are_tolerated() {
        let body =
            br#"{"eventType":"git.push","id":5,"resource":{"repository":7,"refUpdates":"x"}}"#;
        let ev = parse_event(body).unwrap();
        assert_eq!(ev.id, None);
        assert!(ev.targets.is_empty());
        let body = br#"{"eventType":"build.complete","resource":[1],"resourceContainers":{"collection":{"baseUrl":5}}}"#;
        assert!(parse_event(body).unwrap().targets.is_empty());
    }

    #[test]
    fn nonpositive_ids_are_not_hints() {
        let body = br#"{"eventType":"build.complete","resource":{"definition":{"id":0},"url":"https://dev.azure.com/a/p/_apis/build/Builds/1"}}"#;
        assert!(parse_event(body).unwrap().targets.is_empty());
    }
}

/// Property tests: whatever arrives, the parser answers Ok or Err and never panics. Bounded to 256 cases
/// per property so they run in every `cargo test`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn fixtures() -> &'static Vec<Vec<u8>> {
        static FIXTURES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/azure-devops");
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("hook-"))
                })
                .collect();
            files.sort();
            files
                .into_iter()
                .map(|p| std::fs::read(p).unwrap())
                .collect()
        })
    }

    fn check_invariants(result: Result<WebhookEvent, PayloadError>) {
        if let Ok(ev) = result {
            for t in &ev.targets {
                match t {
                    HintTarget::Pipeline {
                        definition_id,
                        branch,
                        ..
                    } => {
                        assert!(*definition_id > 0);
                        assert!(branch.as_deref().is_none_or(|b| b.starts_with("refs/")));
                    }
                    HintTarget::Repository {
                        branch,
                        repository_id,
                        repository_name,
                        ..
                    } => {
                        assert!(branch.starts_with("refs/heads/"));
                        assert!(repository_id.is_some() || repository_name.is_some());
                    }
                }
            }
            if ev.kind == EventKind::Unknown {
                assert!(ev.targets.is_empty());
            }
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::collection::vec(any::<char>(), 0..12)
                .prop_map(|c| Value::String(c.into_iter().collect())),
            Just(Value::String(
                "https://x.visualstudio.com/p/_apis/pipelines/-3/runs/1".into()
            )),
            Just(Value::String("LG:refs/heads/a:b:c".into())),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Keys the parser looks at, so replacements build plausible-but-wrong shapes.
    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "id",
            "url",
            "href",
            "pipeline",
            "run",
            "definition",
            "refName",
            "name",
            "resources",
            "repositories",
            "self",
            "_links",
            "pipeline.web",
            "refUpdates",
            "repository",
            "baseUrl",
        ])
        .prop_map(str::to_string)
    }

    /// Every node of a JSON document, as a path of object keys / array indices.
    fn node_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(prefix.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    node_paths(child, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    prefix.push(i.to_string());
                    node_paths(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }

    fn replace_at(root: &mut Value, path: &[String], new: Value) {
        let mut node = root;
        for key in path {
            node = match node {
                Value::Object(m) => m.get_mut(key).unwrap(),
                Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        *node = new;
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            check_invariants(parse_event(&body));
        }

        #[test]
        fn byte_mutated_fixtures_never_panic(
            which in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            junk in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let original = which.get(fixtures().as_slice());
            // Truncated anywhere.
            check_invariants(parse_event(&original[..cut.index(original.len() + 1)]));
            // Bytes overwritten in the middle.
            let mut overwritten = original.clone();
            let start = at.index(original.len());
            for (i, b) in junk.iter().enumerate() {
                if let Some(slot) = overwritten.get_mut(start + i) {
                    *slot = *b;
                }
            }
            check_invariants(parse_event(&overwritten));
        }

        #[test]
        fn structurally_mutated_fixtures_never_panic(
            which in any::<prop::sample::Index>(),
            node in any::<prop::sample::Index>(),
            replacement in arbitrary_json(),
        ) {
            let original: &Vec<u8> = which.get(fixtures());
            let mut doc: Value = serde_json::from_slice(original).unwrap();
            let mut paths = Vec::new();
            node_paths(&doc, &mut Vec::new(), &mut paths);
            let path = node.get(&paths).clone();
            replace_at(&mut doc, &path, replacement);
            check_invariants(parse_event(&serde_json::to_vec(&doc).unwrap()));
        }
    }
}
