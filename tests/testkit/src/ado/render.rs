//! Response bodies in the shapes of the recorded fixtures (tests/fixtures/azure-devops): same keys and
//! nesting; keys that an unfinished build does not have are left out, never null.

use serde_json::{json, Map, Value};

use super::ids::{ado_time, git_time, stable_guid};
use super::state::{
    AnnotatedTag, Commit, Definition, Org, Project, Repository, Run, RunResult, RunStatus,
};

/// Everything a body needs to build its URLs.
pub(crate) struct Ctx<'a> {
    /// `http://127.0.0.1:port/{org}` — the organization URL clients were configured with.
    pub org_url: String,
    pub org: &'a Org,
    pub project: &'a Project,
}

impl<'a> Ctx<'a> {
    pub fn new(base_url: &str, org: &'a Org, project: &'a Project) -> Self {
        Self {
            org_url: format!("{base_url}/{}", org.name),
            org,
            project,
        }
    }

    fn project_url(&self) -> String {
        format!("{}/{}", self.org_url, self.project.id)
    }
}

const SERVICE_IDENTITY: &str = "00000002-0000-8888-8000-000000000000";
const USER_IDENTITY: &str = "22157d54-1821-6536-a446-928b06348385";

fn identity(ctx: &Ctx, id: &str, display_name: &str, unique_name: &str, descriptor: &str) -> Value {
    let avatar = format!(
        "{}/_apis/GraphProfile/MemberAvatars/{descriptor}",
        ctx.org_url
    );
    json!({
        "displayName": display_name,
        "url": format!("{}/_apis/Identities/{id}", ctx.org_url),
        "_links": {"avatar": {"href": avatar}},
        "id": id,
        "uniqueName": unique_name,
        "imageUrl": avatar,
        "descriptor": descriptor,
    })
}

pub(crate) fn user_identity(ctx: &Ctx) -> Value {
    identity(
        ctx,
        USER_IDENTITY,
        "Example User",
        "user@example.com",
        "aad.ZXhhbXBsZS11c2Vy",
    )
}

fn service_identity(ctx: &Ctx) -> Value {
    identity(
        ctx,
        SERVICE_IDENTITY,
        "Microsoft.VisualStudio.Services.TFS",
        "00000002-0000-8888-8000-000000000000@2c895908-04e0-4952-89fd-54b0046d6288",
        "s2s.MDAwMDAwMDItMDAwMC04ODg4LTgwMDAtMDAwMDAwMDAwMDAw",
    )
}

pub(crate) fn project_ref(ctx: &Ctx) -> Value {
    json!({
        "id": ctx.project.id,
        "name": ctx.project.name,
        "url": format!("{}/_apis/projects/{}", ctx.org_url, ctx.project.id),
        "state": "wellFormed",
        "revision": 1,
        "visibility": "private",
        "lastUpdateTime": "2026-01-01T00:00:00.000Z",
    })
}

fn definition_name(ctx: &Ctx, run: &Run) -> (String, i64) {
    ctx.project
        .definitions
        .get(&run.definition_id)
        .map(|d: &Definition| (d.name.clone(), d.revision))
        .unwrap_or_else(|| (format!("definition-{}", run.definition_id), 1))
}

/// A Build object (Builds - List element, Builds - Get, build.complete 2.0 resource).
pub(crate) fn build(ctx: &Ctx, run: &Run) -> Value {
    let project_url = ctx.project_url();
    let (def_name, def_revision) = definition_name(ctx, run);
    let mut b = Map::new();
    b.insert(
        "_links".into(),
        json!({
            "self": {"href": format!("{project_url}/_apis/build/Builds/{}", run.id)},
            "web": {"href": format!("{project_url}/_build/results?buildId={}", run.id)},
            "sourceVersionDisplayUri": {"href": format!("{project_url}/_apis/build/builds/{}/sources", run.id)},
            "timeline": {"href": format!("{project_url}/_apis/build/builds/{}/Timeline", run.id)},
            "badge": {"href": format!("{project_url}/_apis/build/status/{}", run.definition_id)},
        }),
    );
    b.insert("properties".into(), json!({}));
    b.insert("tags".into(), json!([]));
    b.insert("validationResults".into(), json!([]));
    b.insert("plans".into(), json!([{"planId": run.plan_id}]));
    b.insert(
        "triggerInfo".into(),
        json!({
            "ci.sourceBranch": run.branch,
            "ci.sourceSha": run.commit,
            "ci.message": format!("Update {}", run.branch.trim_start_matches("refs/heads/")),
            "ci.triggerRepository": run.repository_id,
        }),
    );
    b.insert("id".into(), json!(run.id));
    b.insert("buildNumber".into(), json!(run.build_number));
    b.insert("status".into(), json!(run.status.as_str()));
    if let Some(result) = run.result {
        b.insert("result".into(), json!(result.as_str()));
    }
    b.insert("queueTime".into(), json!(ado_time(run.queue_time)));
    if let Some(t) = run.start_time {
        b.insert("startTime".into(), json!(ado_time(t)));
    }
    if let Some(t) = run.finish_time {
        b.insert("finishTime".into(), json!(ado_time(t)));
    }
    b.insert(
        "url".into(),
        json!(format!("{project_url}/_apis/build/Builds/{}", run.id)),
    );
    b.insert(
        "definition".into(),
        json!({
            "drafts": [],
            "id": run.definition_id,
            "name": def_name,
            "url": format!("{project_url}/_apis/build/Definitions/{}?revision={def_revision}", run.definition_id),
            "uri": format!("vstfs:///Build/Definition/{}", run.definition_id),
            "path": "\\",
            "type": "build",
            "queueStatus": "enabled",
            "revision": def_revision,
            "project": project_ref(ctx),
        }),
    );
    b.insert(
        "buildNumberRevision".into(),
        json!(build_number_revision(run)),
    );
    b.insert("project".into(), project_ref(ctx));
    b.insert(
        "uri".into(),
        json!(format!("vstfs:///Build/Build/{}", run.id)),
    );
    b.insert("sourceBranch".into(), json!(run.branch));
    b.insert("sourceVersion".into(), json!(run.commit));
    b.insert(
        "queue".into(),
        json!({"id": 20767, "name": "Azure Pipelines", "pool": {"id": 9, "name": "Azure Pipelines", "isHosted": true}}),
    );
    b.insert("priority".into(), json!("normal"));
    super::trace_links::build_fields(ctx, run, &mut b);
    b.insert("requestedFor".into(), user_identity(ctx));
    b.insert("requestedBy".into(), service_identity(ctx));
    b.insert("lastChangedDate".into(), json!(ado_time(run.last_changed)));
    b.insert("lastChangedBy".into(), service_identity(ctx));
    b.insert("orchestrationPlan".into(), json!({"planId": run.plan_id}));
    b.insert(
        "logs".into(),
        json!({"id": 0, "type": "Container", "url": format!("{project_url}/_apis/build/builds/{}/logs", run.id)}),
    );
    b.insert(
        "repository".into(),
        json!({
            "id": run.repository_id,
            "type": "TfsGit",
            "name": run.repository_name,
            "url": format!("{}/{}/_git/{}", ctx.org_url, ctx.project.name, run.repository_name),
            "clean": null,
            "checkoutSubmodules": false,
        }),
    );
    b.insert("keepForever".into(), json!(false));
    b.insert("retainedByRelease".into(), json!(false));
    b.insert("appendCommitMessageToRunName".into(), json!(true));
    Value::Object(b)
}

fn build_number_revision(run: &Run) -> i64 {
    run.build_number
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1)
}

/// `{count, value}`, the wrapper of every list endpoint.
pub(crate) fn list(values: Vec<Value>) -> Value {
    json!({"count": values.len(), "value": values})
}

/// The one stage, phase and job every simulated run has, in timeline vocabulary.
pub(crate) struct StagePlan {
    pub stage_id: String,
    pub phase_id: String,
    pub job_id: String,
}

pub(crate) const STAGE_NAME: &str = "Build";
pub(crate) const JOB_NAME: &str = "Job";

/// Deterministic per run, like the real ids (the stage id in a timeline equals the one in the
/// stage-state-changed event).
pub(crate) fn stage_plan(run: &Run) -> StagePlan {
    StagePlan {
        stage_id: stable_guid(&format!("{}/stage/{STAGE_NAME}", run.plan_id)),
        phase_id: stable_guid(&format!("{}/phase/{JOB_NAME}", run.plan_id)),
        job_id: stable_guid(&format!("{}/job/{JOB_NAME}", run.plan_id)),
    }
}

fn timeline_state(run: &Run) -> (&'static str, Option<&'static str>) {
    match (run.status, run.result) {
        (RunStatus::NotStarted, _) => ("pending", None),
        (RunStatus::InProgress | RunStatus::Cancelling, _) => ("inProgress", None),
        (RunStatus::Completed, Some(RunResult::Succeeded)) => ("completed", Some("succeeded")),
        (RunStatus::Completed, Some(RunResult::PartiallySucceeded)) => {
            ("completed", Some("succeededWithIssues"))
        }
        (RunStatus::Completed, Some(RunResult::Failed)) => ("completed", Some("failed")),
        (RunStatus::Completed, Some(RunResult::Canceled) | None) => ("completed", Some("canceled")),
    }
}

/// Build - Timeline: a Stage → Phase → Job record set in the fixture's record shape (explicit nulls,
/// as timelines have them).
pub(crate) fn timeline(ctx: &Ctx, run: &Run) -> Value {
    let plan = stage_plan(run);
    let (state, result) = timeline_state(run);
    let start = run.start_time.map(ado_time);
    let finish = run.finish_time.filter(|_| result.is_some()).map(ado_time);
    let log_url = |id: i64| {
        format!(
            "{}/_apis/build/builds/{}/logs/{id}",
            ctx.project_url(),
            run.id
        )
    };
    let record = |id: &str,
                  parent: Option<&str>,
                  kind: &str,
                  name: &str,
                  identifier: &str,
                  log: Option<i64>,
                  worker: Option<&str>| {
        json!({
            "previousAttempts": [],
            "id": id,
            "parentId": parent,
            "type": kind,
            "name": name,
            "startTime": start,
            "finishTime": finish,
            "currentOperation": null,
            "percentComplete": null,
            "state": state,
            "result": result,
            "resultCode": null,
            "changeId": 1,
            "lastModified": "0001-01-01T00:00:00",
            "workerName": worker,
            "order": 1,
            "details": null,
            "errorCount": if result == Some("failed") { 1 } else { 0 },
            "warningCount": 0,
            "url": null,
            "log": log.map(|l| json!({"id": l, "type": "Container", "url": log_url(l)})),
            "task": null,
            "attempt": 1,
            "identifier": identifier,
        })
    };
    let stage_ident = STAGE_NAME.to_ascii_lowercase();
    let job_ident = JOB_NAME.to_ascii_lowercase();
    let records = vec![
        record(
            &plan.stage_id,
            None,
            "Stage",
            STAGE_NAME,
            &stage_ident,
            None,
            None,
        ),
        record(
            &plan.phase_id,
            Some(&plan.stage_id),
            "Phase",
            JOB_NAME,
            &format!("{stage_ident}.{job_ident}"),
            Some(2),
            None,
        ),
        record(
            &plan.job_id,
            Some(&plan.phase_id),
            "Job",
            JOB_NAME,
            &format!("{stage_ident}.{job_ident}.__default"),
            Some(3),
            run.start_time.map(|_| "Azure Pipelines 2"),
        ),
    ];
    json!({
        "records": records,
        "lastChangedBy": SERVICE_IDENTITY,
        "lastChangedOn": ado_time(run.last_changed),
        "id": run.plan_id,
        "changeId": 1,
        "url": format!("{}/_apis/build/builds/{}/Timeline/{}", ctx.project_url(), run.id, run.plan_id),
    })
}

/// Pipelines Runs API state (`canceling` with one l there) and result.
fn run_state(run: &Run) -> &'static str {
    match run.status {
        // The Runs API has no queued state; a queued run reads as inProgress.
        RunStatus::NotStarted | RunStatus::InProgress => "inProgress",
        RunStatus::Cancelling => "canceling",
        RunStatus::Completed => "completed",
    }
}

/// A Pipelines Run object (Runs - List element; `resource.run` of the pipelines events).
pub(crate) fn pipeline_run(ctx: &Ctx, run: &Run) -> Value {
    let project_url = ctx.project_url();
    let (def_name, def_revision) = definition_name(ctx, run);
    let mut r = Map::new();
    r.insert(
        "_links".into(),
        json!({
            "self": {"href": format!("{project_url}/_apis/Pipelines/{}/runs/{}", run.definition_id, run.id)},
            "web": {"href": format!("{project_url}/_build/results?buildId={}", run.id)},
            "pipeline.web": {"href": format!("{project_url}/_build/definition?definitionId={}", run.definition_id)},
            "pipeline": {"href": format!("{project_url}/_apis/Pipelines/{}?revision={def_revision}", run.definition_id)},
        }),
    );
    r.insert("templateParameters".into(), json!({}));
    r.insert(
        "pipeline".into(),
        pipeline_ref(ctx, run.definition_id, &def_name, def_revision),
    );
    r.insert("state".into(), json!(run_state(run)));
    if let (RunStatus::Completed, Some(result)) = (run.status, run.result) {
        // The documented RunResult enum has no partiallySucceeded; what the service sends then is
        // unverified, so the simulator passes the Builds spelling through.
        r.insert("result".into(), json!(result.as_str()));
    }
    r.insert("createdDate".into(), json!(ado_time(run.queue_time)));
    if let Some(t) = run.finish_time {
        r.insert("finishedDate".into(), json!(ado_time(t)));
    }
    r.insert(
        "url".into(),
        json!(format!(
            "{project_url}/_apis/Pipelines/{}/runs/{}",
            run.definition_id, run.id
        )),
    );
    r.insert("resources".into(), {
        let mut res = json!({"repositories": {"self": {
            "repository": {"id": run.repository_id, "type": "azureReposGit"},
            "refName": run.branch,
            "version": run.commit,
        }}});
        if let (Some(p), Some(obj)) = (
            super::trace_links::run_pipelines(ctx, run),
            res.as_object_mut(),
        ) {
            obj.insert("pipelines".into(), p);
        }
        res
    });
    r.insert("id".into(), json!(run.id));
    r.insert("name".into(), json!(run.build_number));
    Value::Object(r)
}

pub(crate) fn pipeline_ref(ctx: &Ctx, id: i64, name: &str, revision: i64) -> Value {
    json!({
        "url": format!("{}/_apis/Pipelines/{id}?revision={revision}", ctx.project_url()),
        "id": id,
        "revision": revision,
        "name": name,
        "folder": "\\",
    })
}

pub(crate) fn pipeline_ref_for(ctx: &Ctx, run: &Run) -> Value {
    let (name, revision) = definition_name(ctx, run);
    pipeline_ref(ctx, run.definition_id, &name, revision)
}

/// Git - Repositories - Get.
pub(crate) fn repository(ctx: &Ctx, repo: &Repository) -> Value {
    let api = format!("{}/_apis/git/repositories/{}", ctx.project_url(), repo.id);
    let web = format!("{}/{}/_git/{}", ctx.org_url, ctx.project.name, repo.name);
    let ssh = format!(
        "git@ssh.dev.azure.com:v3/{}/{}/{}",
        ctx.org.name, ctx.project.name, repo.name
    );
    json!({
        "id": repo.id,
        "name": repo.name,
        "url": api,
        "project": project_ref(ctx),
        "defaultBranch": repo.default_branch,
        "size": 1024 * repo.commits.len(),
        "remoteUrl": web,
        "sshUrl": ssh,
        "webUrl": web,
        "_links": {
            "self": {"href": api},
            "project": {"href": format!("vstfs:///Classification/TeamProject/{}", ctx.project.id)},
            "web": {"href": web},
            "ssh": {"href": ssh},
            "commits": {"href": format!("{api}/commits")},
            "refs": {"href": format!("{api}/refs")},
            "pullRequests": {"href": format!("{api}/pullRequests")},
            "items": {"href": format!("{api}/items")},
            "pushes": {"href": format!("{api}/pushes")},
        },
        "isDisabled": false,
        "isInMaintenance": false,
    })
}

/// One Refs - List element. `peeled` is the commit of an annotated tag when `peelTags=true`.
pub(crate) fn git_ref(
    ctx: &Ctx,
    repo: &Repository,
    name: &str,
    object_id: &str,
    peeled: Option<&str>,
) -> Value {
    let short = name.trim_start_matches("refs/");
    let filter: String = url::form_urlencoded::byte_serialize(short.as_bytes()).collect();
    let mut r = Map::new();
    r.insert("name".into(), json!(name));
    r.insert("objectId".into(), json!(object_id));
    if let Some(p) = peeled {
        r.insert("peeledObjectId".into(), json!(p));
    }
    r.insert("creator".into(), user_identity(ctx));
    r.insert(
        "url".into(),
        json!(format!(
            "{}/_apis/git/repositories/{}/refs?filter={filter}",
            ctx.project_url(),
            repo.id
        )),
    );
    Value::Object(r)
}

/// Git - Annotated Tags - Get.
pub(crate) fn annotated_tag(ctx: &Ctx, repo: &Repository, tag: &AnnotatedTag) -> Value {
    json!({
        "name": tag.name,
        "objectId": tag.object_id,
        "taggedObject": {"objectId": tag.target, "objectType": "commit"},
        "taggedBy": {"name": "Example User", "email": "user@example.com", "date": git_time(tag.date)},
        "message": tag.message,
        "url": format!("{}/_apis/git/repositories/{}/annotatedTags/{}", ctx.project_url(), repo.id, tag.object_id),
    })
}

fn git_user(date: jiff::Timestamp) -> Value {
    json!({"name": "Example User", "email": "user@example.com", "date": git_time(date)})
}

/// The commit's author when a test named one, else [`git_user`].
fn commit_author(c: &Commit) -> Value {
    match &c.author {
        Some(name) => json!({"name": name, "email": "user@example.com", "date": git_time(c.date)}),
        None => git_user(c.date),
    }
}

/// One Commits - Get Commits element.
pub(crate) fn commit(ctx: &Ctx, repo: &Repository, c: &Commit) -> Value {
    json!({
        "commitId": c.sha,
        "author": commit_author(c),
        "committer": git_user(c.date),
        "comment": c.comment,
        "changeCounts": {"Add": 0, "Edit": 1, "Delete": 0},
        "url": format!("{}/_apis/git/repositories/{}/commits/{}", ctx.project_url(), repo.id, c.sha),
        "remoteUrl": format!("{}/{}/_git/{}/commit/{}", ctx.org_url, ctx.project.name, repo.name, c.sha),
    })
}

/// A commit as git.push lists it (no change counts, no remote URL).
pub(crate) fn push_commit(ctx: &Ctx, repo: &Repository, c: &Commit) -> Value {
    json!({
        "commitId": c.sha,
        "author": git_user(c.date),
        "committer": git_user(c.date),
        "comment": c.comment,
        "url": format!("{}/_apis/git/repositories/{}/commits/{}", ctx.org_url, repo.id, c.sha),
    })
}

/// The standard ADO error body (`error-404-project-not-found.json` shape).
pub(crate) fn error_body(message: &str, type_name: &str, type_key: &str) -> Value {
    json!({
        "$id": "1",
        "innerException": null,
        "message": message,
        "typeName": type_name,
        "typeKey": type_key,
        "errorCode": 0,
        "eventId": 3000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ado::state::SimState;

    const SHA: &str = "1111111111111111111111111111111111111111";

    fn with_run(f: impl Fn(&mut SimState, i64)) -> (SimState, i64) {
        let mut s = SimState::default();
        s.add_project("o", "p").unwrap();
        s.add_definition("o", "p", 1, "ci", None).unwrap();
        let id = s.queue_run("o", "p", 1, "main", Some(SHA)).unwrap();
        f(&mut s, id);
        (s, id)
    }

    fn render<T>(s: &SimState, id: i64, f: impl Fn(&Ctx, &Run) -> T) -> T {
        let (org, run) = s.find_run(id).unwrap();
        let ctx = Ctx::new(
            "http://sim",
            org,
            org.project_by_id(&run.project_id).unwrap(),
        );
        f(&ctx, run)
    }

    #[test]
    fn unfinished_builds_omit_result_and_times() {
        let (s, id) = with_run(|_, _| {});
        let b = render(&s, id, build);
        assert!(
            b.get("result").is_none()
                && b.get("startTime").is_none()
                && b.get("finishTime").is_none()
        );
        assert_eq!(b["status"], "notStarted");
        let run = render(&s, id, pipeline_run);
        assert_eq!(
            run["state"], "inProgress",
            "the Runs API has no queued state"
        );
        assert!(run.get("result").is_none() && run.get("finishedDate").is_none());
    }

    #[test]
    fn cancelling_is_spelled_per_api() {
        let (s, id) = with_run(|s, id| {
            s.start_run(None, id).unwrap();
            s.cancel_run(None, id).unwrap();
        });
        assert_eq!(render(&s, id, build)["status"], "cancelling");
        assert_eq!(render(&s, id, pipeline_run)["state"], "canceling");
        let t = render(&s, id, timeline);
        assert_eq!(t["records"][0]["state"], "inProgress");
    }

    #[test]
    fn timeline_uses_its_own_result_vocabulary() {
        let (s, id) = with_run(|s, id| {
            s.start_run(None, id).unwrap();
            s.complete_run(None, id, RunResult::PartiallySucceeded)
                .unwrap();
        });
        let t = render(&s, id, timeline);
        for r in t["records"].as_array().unwrap() {
            assert_eq!(r["state"], "completed");
            assert_eq!(r["result"], "succeededWithIssues");
        }
        let b = render(&s, id, build);
        assert_eq!(b["result"], "partiallySucceeded");
        assert_eq!(
            b["_links"]["web"]["href"],
            format!(
                "http://sim/o/{}/_build/results?buildId={id}",
                b["project"]["id"].as_str().unwrap()
            )
        );
    }

    #[test]
    fn error_bodies_have_the_standard_shape() {
        let e = error_body("TF1: x", "T, A", "T");
        assert_eq!(e["$id"], "1");
        assert_eq!(e["eventId"], 3000);
        assert!(e["innerException"].is_null());
    }
}
