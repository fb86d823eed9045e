//! What ServiceTrace correlates a change by, in the simulator: commits with an author and a message,
//! runs queued by another build (`reason`, `triggeredByBuild`) or consuming another pipeline's run
//! (`resources.pipelines`), and pull requests (Pull Requests - Get). Shapes follow
//! `tests/fixtures/azure-devops/` (`build-triggered-by-build-completion.json`,
//! `pipeline-run-resource-trigger.json`, `pull-request-get.json`).

use serde_json::{json, Map, Value};

use super::render::Ctx;
use super::state::{Repository, Run, SimState};
use super::{or_panic, AdoSimulator};
use crate::TestkitError;

/// How a run was queued, beyond the default CI push.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RunLinks {
    /// `buildCompletion`, `resourceTrigger`, `manual` …; `individualCI` when unset.
    pub reason: Option<String>,
    /// The build whose completion queued this one: (id, build number, definition id).
    pub triggered_by: Option<(i64, String, i64)>,
    /// Pipeline resources consumed: (alias, pipeline id, run name).
    pub consumed: Vec<(String, i64, String)>,
}

/// A pull request of a repository.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PullRequest {
    pub id: i64,
    pub title: String,
    pub source_ref: String,
    pub target_ref: String,
    /// The merge commit it produced when completed.
    pub merge_commit: Option<String>,
}

fn not_found(what: &'static str, detail: String) -> TestkitError {
    TestkitError::NotFound { what, detail }
}

impl SimState {
    fn repository_mut_in(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
    ) -> Result<&mut Repository, TestkitError> {
        self.org_mut(org)?
            .project_mut(project)?
            .repository_mut(repository)
            .ok_or_else(|| not_found("repository", format!("{repository} in {project}")))
    }

    /// Sets the author and message of a commit already pushed (what Commits - Get reports).
    pub(crate) fn describe_commit(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
        sha: &str,
        author: &str,
        message: &str,
    ) -> Result<(), TestkitError> {
        let repo = self.repository_mut_in(org, project, repository)?;
        let commit = repo
            .commits
            .get_mut(&sha.to_ascii_lowercase())
            .ok_or_else(|| not_found("commit", format!("{sha} in {repository}; push it first")))?;
        commit.comment = message.to_string();
        commit.author = Some(author.to_string());
        Ok(())
    }

    /// Records which files a pushed commit changed (for `searchCriteria.itemPath`).
    pub(crate) fn set_commit_paths(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
        sha: &str,
        paths: &[&str],
    ) -> Result<(), TestkitError> {
        let repo = self.repository_mut_in(org, project, repository)?;
        let commit = repo
            .commits
            .get_mut(&sha.to_ascii_lowercase())
            .ok_or_else(|| not_found("commit", format!("{sha} in {repository}; push it first")))?;
        commit.paths = paths.iter().map(|p| normalize_item_path(p)).collect();
        Ok(())
    }

    pub(crate) fn set_run_links(&mut self, id: i64, links: RunLinks) -> Result<(), TestkitError> {
        self.run_mut(None, id)?.links = links;
        Ok(())
    }

    pub(crate) fn add_pull_request(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
        pr: PullRequest,
    ) -> Result<(), TestkitError> {
        let repo = self.repository_mut_in(org, project, repository)?;
        repo.pull_requests.insert(pr.id, pr);
        Ok(())
    }
}

/// `prod/app.yaml`, `/prod/app.yaml/` → `/prod/app.yaml`: item paths are absolute in Azure Repos.
pub(crate) fn normalize_item_path(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

/// Whether a commit changed something at or under `item_path` (Commits - Get Commits'
/// `searchCriteria.itemPath`, "path of item to search under"). The root (`/`) is every commit. A commit
/// whose changed paths were never recorded touched no path the filter can see. Git paths are
/// case-sensitive, and so is this match.
pub(crate) fn touches(commit: &super::state::Commit, item_path: &str) -> bool {
    let want = normalize_item_path(item_path);
    if want == "/" {
        return true;
    }
    commit.paths.iter().any(|p| {
        p == &want
            || p.strip_prefix(want.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The `reason` and `triggeredByBuild` of a Builds API answer.
pub(crate) fn build_fields(ctx: &Ctx, run: &Run, b: &mut Map<String, Value>) {
    let links = &run.links;
    b.insert(
        "reason".into(),
        json!(links.reason.as_deref().unwrap_or("individualCI")),
    );
    let project_url = format!("{}/{}", ctx.org_url, ctx.project.id);
    b.insert(
        "triggeredByBuild".into(),
        match &links.triggered_by {
            Some((id, number, definition)) => json!({
                "id": id,
                "buildNumber": number,
                "url": format!("{project_url}/_apis/build/Builds/{id}"),
                "definition": {"id": definition, "url": format!("{project_url}/_apis/build/Definitions/{definition}")},
                "project": {"id": ctx.project.id, "name": ctx.project.name},
            }),
            None => Value::Null,
        },
    );
}

/// `resources.pipelines` of a Runs API answer, when the run consumed any.
pub(crate) fn run_pipelines(ctx: &Ctx, run: &Run) -> Option<Value> {
    if run.links.consumed.is_empty() {
        return None;
    }
    let project_url = format!("{}/{}", ctx.org_url, ctx.project.id);
    let map: Map<String, Value> = run
        .links
        .consumed
        .iter()
        .map(|(alias, pipeline, version)| {
            (
                alias.clone(),
                json!({"pipeline": {"url": format!("{project_url}/_apis/Pipelines/{pipeline}"), "id": pipeline, "folder": "\\"}, "version": version}),
            )
        })
        .collect();
    Some(Value::Object(map))
}

/// Pull Request Query (`POST …/pullrequestquery`, `pull-request-query-*.json` shapes): for each query
/// of type `lastMergeCommit`, each listed commit that is a completed pull request's merge commit maps to
/// that pull request; commits no pull request merged are left out of the result map, as in
/// `pull-request-query-no-match.json`. The `commit` type (pull requests whose source contains the commit)
/// needs a pull request's commits, which the simulator does not keep: it answers 400 rather than a
/// made-up empty result.
pub(crate) fn pull_request_query(ctx: &Ctx, repo: &Repository, body: &[u8]) -> super::api::Reply {
    use super::api::Reply;
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Reply::bad_request("The body of the request contains invalid Json.");
    };
    let Some(queries) = request.get("queries").and_then(Value::as_array) else {
        return Reply::bad_request("Value cannot be null.\r\nParameter name: queries");
    };
    let mut results = Vec::with_capacity(queries.len());
    for query in queries {
        let type_ = query
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("notSet");
        if !type_.eq_ignore_ascii_case("lastMergeCommit") {
            return Reply::bad_request(&format!(
                "The simulator implements Pull Request Query for type lastMergeCommit only, not '{type_}'."
            ));
        }
        let mut found = Map::new();
        for item in query
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let prs: Vec<Value> = repo
                .pull_requests
                .values()
                .filter(|pr| {
                    pr.merge_commit
                        .as_deref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(item))
                })
                .map(|pr| pull_request(ctx, repo, pr))
                .collect();
            if !prs.is_empty() {
                found.insert(item.to_string(), Value::Array(prs));
            }
        }
        results.push(Value::Object(found));
    }
    Reply::ok(&json!({"queries": queries, "results": results}))
}

/// Pull Requests - Get (`pull-request-get.json` shape).
pub(crate) fn pull_request(ctx: &Ctx, repo: &Repository, pr: &PullRequest) -> Value {
    let project_url = format!("{}/{}", ctx.org_url, ctx.project.id);
    let repo_api = format!("{project_url}/_apis/git/repositories/{}", repo.id);
    let mut v = json!({
        "repository": {
            "id": repo.id,
            "name": repo.name,
            "url": repo_api,
            "project": {"id": ctx.project.id, "name": ctx.project.name},
            "remoteUrl": format!("{}/{}/_git/{}", ctx.org_url, ctx.project.name, repo.name),
        },
        "pullRequestId": pr.id,
        "codeReviewId": pr.id,
        "status": if pr.merge_commit.is_some() { "completed" } else { "active" },
        "title": pr.title,
        "sourceRefName": pr.source_ref,
        "targetRefName": pr.target_ref,
        "mergeStatus": "succeeded",
        "url": format!("{repo_api}/pullRequests/{}", pr.id),
        "supportsIterations": true,
    });
    if let (Some(sha), Some(obj)) = (&pr.merge_commit, v.as_object_mut()) {
        obj.insert(
            "lastMergeCommit".into(),
            json!({"commitId": sha, "url": format!("{repo_api}/commits/{sha}")}),
        );
    }
    v
}

impl AdoSimulator {
    /// Gives a pushed commit an author and a message (Bedrock-style `Updating orders image tag to …`,
    /// or Azure Repos' `Merged PR 17: …`).
    #[track_caller]
    pub fn describe_commit(
        &self,
        org: &str,
        project: &str,
        repository: &str,
        sha: &str,
        author: &str,
        message: &str,
    ) {
        or_panic(
            "describe_commit",
            self.shared
                .state()
                .describe_commit(org, project, repository, sha, author, message),
        )
    }

    /// Records the files a pushed commit changed (`/prod/deployment.yaml`), so Commits - Get Commits with
    /// `searchCriteria.itemPath=/prod` returns it; a commit without recorded paths matches no path but
    /// the root.
    #[track_caller]
    pub fn set_commit_paths(
        &self,
        org: &str,
        project: &str,
        repository: &str,
        sha: &str,
        paths: &[&str],
    ) {
        or_panic(
            "set_commit_paths",
            self.shared
                .state()
                .set_commit_paths(org, project, repository, sha, paths),
        )
    }

    /// Marks run `id` as queued by the completion of build `upstream` (a classic build-completion
    /// trigger): `reason: buildCompletion`, `triggeredByBuild`.
    #[track_caller]
    pub fn trigger_run_by_build(&self, id: i64, upstream: i64) {
        let upstream_run = self.run(upstream);
        let Some(up) = upstream_run else {
            panic!("AdoSimulator::trigger_run_by_build: no run {upstream}");
        };
        or_panic(
            "trigger_run_by_build",
            self.shared.state().set_run_links(
                id,
                RunLinks {
                    reason: Some("buildCompletion".into()),
                    triggered_by: Some((up.id, up.build_number.clone(), up.definition_id)),
                    consumed: Vec::new(),
                },
            ),
        )
    }

    /// Marks run `id` as triggered by, and consuming, run `upstream` as the pipeline resource `alias`
    /// (`reason: resourceTrigger`, `resources.pipelines.<alias>`).
    #[track_caller]
    pub fn consume_run(&self, id: i64, alias: &str, upstream: i64) {
        let Some(up) = self.run(upstream) else {
            panic!("AdoSimulator::consume_run: no run {upstream}");
        };
        or_panic(
            "consume_run",
            self.shared.state().set_run_links(
                id,
                RunLinks {
                    reason: Some("resourceTrigger".into()),
                    triggered_by: None,
                    consumed: vec![(alias.to_string(), up.definition_id, up.build_number.clone())],
                },
            ),
        )
    }

    /// Adds a pull request to `repository`; `merge_commit` makes it completed.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn add_pull_request(
        &self,
        org: &str,
        project: &str,
        repository: &str,
        id: i64,
        title: &str,
        source_branch: &str,
        target_branch: &str,
        merge_commit: Option<&str>,
    ) {
        or_panic(
            "add_pull_request",
            self.shared.state().add_pull_request(
                org,
                project,
                repository,
                PullRequest {
                    id,
                    title: title.to_string(),
                    source_ref: super::state::full_ref(source_branch),
                    target_ref: super::state::full_ref(target_branch),
                    merge_commit: merge_commit.map(str::to_ascii_lowercase),
                },
            ),
        )
    }
}
