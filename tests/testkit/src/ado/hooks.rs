//! Service-hook payloads in the shapes of the `hook-*.json` fixtures, and their delivery over HTTP as
//! the Web Hooks consumer sends them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::ids::{ado_time, fresh_guid, stable_guid};
use super::render::{self, Ctx, JOB_NAME, STAGE_NAME};
use super::state::{Run, RunResult, RunStatus, SimState};
use crate::TestkitError;

/// Which `build.complete` shape a subscription asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildCompleteVersion {
    /// resourceVersion `1.0`: the legacy shape (`resource.status` carries the result,
    /// `sourceGetVersion` = `LG:{ref}:{sha}`).
    #[serde(rename = "1.0")]
    V1,
    /// resourceVersion `2.0`: `resource` is a full Build.
    #[serde(rename = "2.0")]
    V2,
}

/// An event to deliver, naming the run or push it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum HookEvent {
    /// `build.complete` (publisher `tfs`) for a completed run.
    #[serde(rename_all = "camelCase")]
    BuildComplete {
        run_id: i64,
        resource_version: BuildCompleteVersion,
    },
    /// `ms.vss-pipelines.run-state-changed-event` with the run's current state.
    #[serde(rename_all = "camelCase")]
    RunStateChanged { run_id: i64 },
    /// `ms.vss-pipelines.stage-state-changed-event` for the run's one stage (`Build`).
    #[serde(rename_all = "camelCase")]
    StageStateChanged { run_id: i64 },
    /// `ms.vss-pipelines.job-state-changed-event` for the run's one job (`Job`).
    #[serde(rename_all = "camelCase")]
    JobStateChanged { run_id: i64 },
    /// `git.push` (publisher `tfs`) for a push made with `push`.
    #[serde(rename_all = "camelCase")]
    GitPush { push_id: i64 },
}

impl HookEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::BuildComplete { .. } => "build.complete",
            Self::RunStateChanged { .. } => "ms.vss-pipelines.run-state-changed-event",
            Self::StageStateChanged { .. } => "ms.vss-pipelines.stage-state-changed-event",
            Self::JobStateChanged { .. } => "ms.vss-pipelines.job-state-changed-event",
            Self::GitPush { .. } => "git.push",
        }
    }

    fn publisher(&self) -> &'static str {
        match self {
            Self::BuildComplete { .. } | Self::GitPush { .. } => "tfs",
            _ => "pipelines",
        }
    }

    fn resource_version(&self) -> &'static str {
        match self {
            Self::BuildComplete {
                resource_version: BuildCompleteVersion::V1,
                ..
            }
            | Self::GitPush { .. } => "1.0",
            Self::BuildComplete { .. } => "2.0",
            _ => "5.1-preview.1",
        }
    }
}

/// Where and how to deliver: the subscription's consumer inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookDelivery {
    pub url: String,
    /// `basicAuthUsername` / `basicAuthPassword`.
    pub basic_auth: Option<(String, String)>,
    /// `httpHeaders`: extra request headers, e.g. a shared-secret token header.
    pub headers: Vec<(String, String)>,
    /// Subscription id in the envelope; a stable id derived from the URL when unset.
    pub subscription_id: Option<String>,
    /// Reuse an earlier event id to simulate a redelivery; a fresh GUID when unset.
    pub event_id: Option<String>,
    /// `messagesToSend: none`: `message` and `detailedMessage` become null.
    pub without_messages: bool,
    /// `resourceContainers.*.baseUrl` instead of the simulator's org URL, e.g.
    /// `https://contoso.visualstudio.com/` for an organization whose primary URL is the legacy host.
    pub base_url: Option<String>,
}

impl HookDelivery {
    pub fn to(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn subscription_id(mut self, id: impl Into<String>) -> Self {
        self.subscription_id = Some(id.into());
        self
    }

    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    pub fn without_messages(mut self) -> Self {
        self.without_messages = true;
        self
    }

    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
}

/// The receiver's answer to one delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookOutcome {
    /// The receiver's status; 0 when nothing was sent (`delivered` false).
    pub status: u16,
    /// The envelope `id`; pass it to [`HookDelivery::event_id`] to redeliver the same event.
    pub event_id: String,
    /// False when the subscription is disabled, so Azure DevOps would not send the event.
    pub delivered: bool,
    /// The state of the simulator's subscription with this `subscriptionId` after the delivery
    /// (`None` when the id names no subscription created through the Subscriptions API).
    pub subscription_status: Option<super::subscriptions::SubscriptionStatus>,
}

fn message(text: String, link_text: &str, url: &str) -> Value {
    let html = text.replacen(link_text, &format!("<a href=\"{url}\">{link_text}</a>"), 1);
    let markdown = text.replacen(link_text, &format!("[{link_text}]({url})"), 1);
    json!({"text": text, "html": html, "markdown": markdown})
}

fn result_words(result: Option<RunResult>) -> &'static str {
    match result {
        Some(RunResult::Succeeded) => "succeeded",
        Some(RunResult::PartiallySucceeded) => "partially succeeded",
        Some(RunResult::Failed) => "failed",
        Some(RunResult::Canceled) => "canceled",
        None => "in progress",
    }
}

/// Builds the full envelope for `event`. `notification_id` is the subscription's delivery counter.
pub(crate) fn payload(
    state: &SimState,
    base_url: &str,
    event: &HookEvent,
    delivery: &HookDelivery,
    notification_id: i64,
) -> Result<Value, TestkitError> {
    let (org, project, resource, msg) = match event {
        HookEvent::GitPush { push_id } => {
            let (org, push) = state
                .find_push(*push_id)
                .ok_or_else(|| TestkitError::NotFound {
                    what: "push",
                    detail: format!("{push_id}; push returns the ids"),
                })?;
            let project = org
                .project_by_id(&push.project_id)
                .ok_or_else(|| missing("project of the push"))?;
            let ctx = Ctx::new(base_url, org, project);
            let repo = project
                .repository(&push.repository_id)
                .ok_or_else(|| missing("repository of the push"))?;
            let commits: Vec<Value> = push
                .commits
                .iter()
                .filter_map(|sha| repo.commits.get(sha))
                .map(|c| render::push_commit(&ctx, repo, c))
                .collect();
            let push_url = format!(
                "{}/_apis/git/repositories/{}/pushes/{}",
                ctx.org_url, repo.id, push.id
            );
            let branch = push.ref_name.trim_start_matches("refs/heads/");
            let resource = json!({
                "commits": commits,
                "refUpdates": [{"name": push.ref_name, "oldObjectId": push.old_object_id, "newObjectId": push.new_object_id}],
                "repository": {
                    "id": repo.id,
                    "name": repo.name,
                    "url": format!("{}/_apis/git/repositories/{}", ctx.org_url, repo.id),
                    "project": {
                        "id": project.id,
                        "name": project.name,
                        "url": format!("{}/_apis/projects/{}", ctx.org_url, project.id),
                        "state": "wellFormed",
                        "visibility": "unchanged",
                        "lastUpdateTime": "0001-01-01T00:00:00",
                    },
                    "defaultBranch": repo.default_branch,
                    "remoteUrl": format!("{}/{}/_git/{}", ctx.org_url, project.name, repo.name),
                },
                "pushedBy": render::user_identity(&ctx),
                "pushId": push.id,
                "date": ado_time(push.date),
                "url": push_url,
                "_links": {
                    "self": {"href": push_url},
                    "repository": {"href": format!("{}/{}/_apis/git/repositories/{}", ctx.org_url, project.id, repo.id)},
                    "commits": {"href": format!("{push_url}/commits")},
                    "pusher": {"href": format!("{}/_apis/Identities/22157d54-1821-6536-a446-928b06348385", ctx.org_url)},
                    "refs": {"href": format!("{}/{}/_apis/git/repositories/{}/{}", ctx.org_url, project.id, repo.id, push.ref_name)},
                },
            });
            let short = &push.new_object_id[..8];
            let text = format!("Example User pushed updates to {}:{branch}", repo.name);
            let msg = message(
                text,
                &repo.name,
                &format!(
                    "{}/{}/_git/{}/commit/{short}",
                    ctx.org_url, project.name, repo.name
                ),
            );
            (org, project, resource, msg)
        }
        HookEvent::BuildComplete { run_id, .. }
        | HookEvent::RunStateChanged { run_id }
        | HookEvent::StageStateChanged { run_id }
        | HookEvent::JobStateChanged { run_id } => {
            let (org, run) = state
                .find_run(*run_id)
                .ok_or_else(|| TestkitError::NotFound {
                    what: "run",
                    detail: format!("{run_id}; queue_run returns the ids"),
                })?;
            let project = org
                .project_by_id(&run.project_id)
                .ok_or_else(|| missing("project of the run"))?;
            let ctx = Ctx::new(base_url, org, project);
            let (resource, msg) = run_resource(&ctx, event, run)?;
            (org, project, resource, msg)
        }
    };
    let org_base = delivery
        .base_url
        .clone()
        .unwrap_or_else(|| format!("{base_url}/{}/", org.name));
    let subscription_id = delivery.subscription_id.clone().unwrap_or_else(|| {
        stable_guid(&format!(
            "subscription/{}/{}",
            delivery.url,
            event.event_type()
        ))
    });
    let messages = if delivery.without_messages {
        Value::Null
    } else {
        msg
    };
    Ok(json!({
        "subscriptionId": subscription_id,
        "notificationId": notification_id,
        "id": delivery.event_id.clone().unwrap_or_else(fresh_guid),
        "eventType": event.event_type(),
        "publisherId": event.publisher(),
        "message": messages.clone(),
        "detailedMessage": messages,
        "resource": resource,
        "resourceVersion": event.resource_version(),
        "resourceContainers": {
            "collection": {"id": org.collection_id, "baseUrl": org_base},
            "account": {"id": org.account_id, "baseUrl": org_base},
            "project": {"id": project.id, "baseUrl": org_base},
        },
        "createdDate": ado_time(jiff::Timestamp::now()),
    }))
}

fn missing(what: &str) -> TestkitError {
    TestkitError::InvalidSetup(format!("simulator state is inconsistent: {what} is gone"))
}

/// Stage and job state in the events' vocabulary (`notStarted`/`running`/`completed`; jobs wait).
fn stage_state(run: &Run, job: bool) -> (&'static str, Option<&'static str>) {
    match (run.status, run.result) {
        (RunStatus::NotStarted, _) if job => ("waiting", None),
        (RunStatus::NotStarted, _) => ("notStarted", None),
        (RunStatus::InProgress | RunStatus::Cancelling, _) => ("running", None),
        (RunStatus::Completed, Some(RunResult::Succeeded)) => ("completed", Some("succeeded")),
        // The stage/job result enums have no partial success; timelines call it succeededWithIssues.
        (RunStatus::Completed, Some(RunResult::PartiallySucceeded)) => {
            ("completed", Some("succeededWithIssues"))
        }
        (RunStatus::Completed, Some(RunResult::Failed)) => ("completed", Some("failed")),
        (RunStatus::Completed, _) => ("completed", Some("canceled")),
    }
}

fn stage_like(
    ctx: &Ctx,
    run: &Run,
    id: &str,
    name: &str,
    display_name: Option<&str>,
    job: bool,
) -> Value {
    let project_url = format!("{}/{}", ctx.org_url, ctx.project.id);
    let (state, result) = stage_state(run, job);
    let mut s = Map::new();
    s.insert(
        "_links".into(),
        json!({
            "web": {"href": format!("{project_url}/_build/results?buildId={}", run.id)},
            "pipeline.web": {"href": format!("{project_url}/_build/definition?definitionId={}", run.definition_id)},
        }),
    );
    s.insert("id".into(), json!(id));
    s.insert("name".into(), json!(name));
    if let Some(d) = display_name {
        s.insert("displayName".into(), json!(d));
    }
    s.insert("attempt".into(), json!(1));
    s.insert("state".into(), json!(state));
    if let Some(r) = result {
        s.insert("result".into(), json!(r));
    }
    if let Some(t) = run.start_time {
        s.insert("startTime".into(), json!(ado_time(t)));
    }
    if let (Some(t), Some(_)) = (run.finish_time, result) {
        s.insert("finishTime".into(), json!(ado_time(t)));
    }
    Value::Object(s)
}

fn repositories(ctx: &Ctx, run: &Run) -> Value {
    let date = super::ids::git_time(run.queue_time);
    json!([{
        "alias": "self",
        "id": run.repository_id,
        "type": "Git",
        "change": {
            "author": {"name": "Example User", "email": "user@example.com", "date": date},
            "committer": {"name": "Example User", "email": "user@example.com", "date": date},
            "message": format!("Update {}", run.branch.trim_start_matches("refs/heads/")),
            "version": run.commit,
        },
        "url": format!("{}/{}/_git/{}", ctx.org_url, ctx.project.name, run.repository_name),
    }])
}

fn run_resource(ctx: &Ctx, event: &HookEvent, run: &Run) -> Result<(Value, Value), TestkitError> {
    let web = format!(
        "{}/{}/_build/results?buildId={}",
        ctx.org_url, ctx.project.id, run.id
    );
    let run_url = format!(
        "{}/{}/_apis/pipelines/{}/runs/{}",
        ctx.org_url, ctx.project.id, run.definition_id, run.id
    );
    let plan = render::stage_plan(run);
    let finished = run.status == RunStatus::Completed;
    let words = result_words(if finished { run.result } else { None });
    Ok(match event {
        HookEvent::BuildComplete {
            resource_version, ..
        } => {
            if !finished {
                return Err(TestkitError::InvalidSetup(format!(
                    "run {} is {}; complete it before delivering build.complete",
                    run.id,
                    run.status.as_str()
                )));
            }
            let resource = match resource_version {
                BuildCompleteVersion::V2 => render::build(ctx, run),
                BuildCompleteVersion::V1 => legacy_build(ctx, run),
            };
            let text = format!("Build {} {words}", run.build_number);
            (resource, message(text, &run.build_number, &web))
        }
        HookEvent::RunStateChanged { .. } => {
            let resource = json!({
                "projectId": ctx.project.id,
                "run": render::pipeline_run(ctx, run),
                "pipeline": render::pipeline_ref_for(ctx, run),
                "stages": [stage_like(ctx, run, &plan.stage_id, STAGE_NAME, Some(STAGE_NAME), false)],
                "requestedBy": render::user_identity(ctx),
                "requestedFor": render::user_identity(ctx),
                "queue": {"id": 9, "name": "Azure Pipelines", "pool": {"id": 9, "name": "Azure Pipelines", "isHosted": true}},
                "runId": run.id,
                "runUrl": run_url,
                "repositories": [],
            });
            let text = format!("Run {} {words}.", run.build_number);
            (resource, message(text, &run.build_number, &web))
        }
        HookEvent::StageStateChanged { .. } => {
            let resource = json!({
                "stage": stage_like(ctx, run, &plan.stage_id, STAGE_NAME, Some(STAGE_NAME), false),
                "run": render::pipeline_run(ctx, run),
                "pipeline": render::pipeline_ref_for(ctx, run),
                "runId": run.id,
                "stageName": STAGE_NAME,
                "runUrl": run_url,
                "projectId": ctx.project.id,
                "repositories": repositories(ctx, run),
            });
            let text = format!("Run {} stage {STAGE_NAME} {words}.", run.build_number);
            (resource, message(text, STAGE_NAME, &web))
        }
        HookEvent::JobStateChanged { .. } => {
            let resource = json!({
                "projectId": ctx.project.id,
                "job": stage_like(ctx, run, &plan.job_id, JOB_NAME, None, true),
                "stage": stage_like(ctx, run, &plan.stage_id, STAGE_NAME, Some(STAGE_NAME), false),
                "run": render::pipeline_run(ctx, run),
                "pipeline": render::pipeline_ref_for(ctx, run),
                "repositories": repositories(ctx, run),
            });
            let text = format!(
                "Run {} stage {STAGE_NAME} job {JOB_NAME} {words}.",
                run.build_number
            );
            (resource, message(text, JOB_NAME, &web))
        }
        HookEvent::GitPush { .. } => {
            return Err(TestkitError::InvalidSetup(
                "git.push is not about a run".into(),
            ))
        }
    })
}

/// resourceVersion 1.0 of build.complete (XAML-era shape, `hook-build-complete-v1.json`).
fn legacy_build(ctx: &Ctx, run: &Run) -> Value {
    let project_url = format!("{}/{}", ctx.org_url, ctx.project.id);
    let def = render::pipeline_ref_for(ctx, run);
    json!({
        "uri": format!("vstfs:///Build/Build/{}", run.id),
        "id": run.id,
        "buildNumber": run.build_number,
        "url": format!("{project_url}/_apis/build/Builds/{}", run.id),
        "startTime": run.start_time.or(run.finish_time).map(ado_time),
        "finishTime": run.finish_time.map(ado_time),
        "reason": "individualCI",
        // The legacy shape carries the result in `status`.
        "status": run.result.map_or("inProgress", RunResult::as_str),
        "drop": {},
        "log": {},
        "sourceGetVersion": format!("LG:{}:{}", run.branch, run.commit),
        "lastChangedBy": {
            "displayName": "Microsoft.VisualStudio.Services.TFS",
            "id": "00000000-0000-0000-0000-000000000000",
            "uniqueName": "00000002-0000-8888-8000-000000000000@2c895908-04e0-4952-89fd-54b0046d6288",
        },
        "retainIndefinitely": false,
        "definition": {
            "definitionType": "xaml",
            "id": run.definition_id,
            "name": def["name"],
            "url": format!("{project_url}/_apis/build/Definitions/{}", run.definition_id),
        },
        "requests": [{
            "id": run.id,
            "url": format!("{project_url}/_apis/build/Requests/{}", run.id),
            "requestedFor": {
                "displayName": "Example User",
                "id": "22157d54-1821-6536-a446-928b06348385",
                "uniqueName": "user@example.com",
            },
        }],
    })
}

/// POSTs `payload` as the Web Hooks consumer does and returns the receiver's status.
pub(crate) async fn post(
    http: &reqwest::Client,
    payload: &Value,
    delivery: &HookDelivery,
) -> Result<u16, TestkitError> {
    let mut req = http
        .post(&delivery.url)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(payload.to_string());
    if let Some((user, password)) = &delivery.basic_auth {
        req = req.basic_auth(user, Some(password));
    }
    for (name, value) in &delivery.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let response = req.send().await.map_err(|source| TestkitError::Http {
        url: delivery.url.clone(),
        source,
    })?;
    Ok(response.status().as_u16())
}
