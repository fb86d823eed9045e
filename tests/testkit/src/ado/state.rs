//! The simulator's in-memory Azure DevOps: organizations, projects, definitions, repositories, runs and
//! pushes, and the lifecycle rules that move a run from queued to completed. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::ids::{build_date, fresh_guid, stable_guid, tag_object_id, MonotonicClock};
use crate::TestkitError;

/// Status of a build, spelled as the Builds API spells it (`cancelling` with two l).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    NotStarted,
    InProgress,
    Cancelling,
    Completed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "notStarted",
            Self::InProgress => "inProgress",
            Self::Cancelling => "cancelling",
            Self::Completed => "completed",
        }
    }
}

/// Result of a completed build, spelled as the Builds API spells it (`canceled` with one l).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RunResult {
    Succeeded,
    PartiallySucceeded,
    Failed,
    Canceled,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::PartiallySucceeded => "partiallySucceeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Parses the Builds API spelling, case-insensitively (query strings arrive in any case).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Succeeded,
            Self::PartiallySucceeded,
            Self::Failed,
            Self::Canceled,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

pub(crate) const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Debug)]
pub(crate) struct SimState {
    orgs: BTreeMap<String, Org>,
    next_run_id: i64,
    next_push_id: i64,
    pub(crate) clock: MonotonicClock,
}

#[derive(Debug)]
pub(crate) struct Org {
    pub name: String,
    pub collection_id: String,
    pub account_id: String,
    tokens: BTreeSet<String>,
    pub projects: Vec<Project>,
    pub runs: BTreeMap<i64, Run>,
    pub pushes: BTreeMap<i64, Push>,
}

#[derive(Debug)]
pub(crate) struct Project {
    pub id: String,
    pub name: String,
    pub definitions: BTreeMap<i64, Definition>,
    pub repositories: Vec<Repository>,
}

#[derive(Debug)]
pub(crate) struct Definition {
    pub name: String,
    pub revision: i64,
    /// Name of the repository the pipeline builds; when unset, a repository named like the project.
    pub repository: Option<String>,
    /// When the definition was added (Definitions - Get `createdDate`).
    pub created: Timestamp,
    /// Builds queued per `yyyyMMdd`, for `buildNumber` = `yyyyMMdd.N`.
    numbers_per_day: BTreeMap<String, u32>,
}

#[derive(Debug)]
pub(crate) struct Repository {
    pub id: String,
    pub name: String,
    pub default_branch: String,
    /// Full ref name (`refs/heads/main`, `refs/tags/v1`) → object id.
    pub refs: BTreeMap<String, String>,
    pub commits: BTreeMap<String, Commit>,
    /// Annotated tag object id → tag.
    pub tags: BTreeMap<String, AnnotatedTag>,
    pub pull_requests: BTreeMap<i64, super::trace_links::PullRequest>,
}

#[derive(Clone, Debug)]
pub(crate) struct Commit {
    pub sha: String,
    pub parents: Vec<String>,
    pub comment: String,
    pub date: Timestamp,
    /// Author name; `Example User` when unset (see `trace_links::describe_commit`).
    pub author: Option<String>,
    /// Paths of the files the commit changed (`/prod/deployment.yaml`), what `searchCriteria.itemPath`
    /// filters on; empty unless `trace_links::set_commit_paths` named some.
    pub paths: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct AnnotatedTag {
    pub object_id: String,
    pub name: String,
    pub target: String,
    pub message: String,
    pub date: Timestamp,
}

#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub id: i64,
    pub project_id: String,
    pub definition_id: i64,
    pub build_number: String,
    pub branch: String,
    pub commit: String,
    pub repository_id: String,
    pub repository_name: String,
    pub status: RunStatus,
    pub result: Option<RunResult>,
    pub queue_time: Timestamp,
    pub start_time: Option<Timestamp>,
    pub finish_time: Option<Timestamp>,
    pub last_changed: Timestamp,
    pub plan_id: String,
    /// Why it was queued and by what (`trace_links`).
    pub links: super::trace_links::RunLinks,
}

#[derive(Clone, Debug)]
pub(crate) struct Push {
    pub id: i64,
    pub project_id: String,
    pub repository_id: String,
    pub ref_name: String,
    pub old_object_id: String,
    pub new_object_id: String,
    pub commits: Vec<String>,
    pub date: Timestamp,
}

/// `main` → `refs/heads/main`; full refs pass through.
pub(crate) fn full_ref(branch: &str) -> String {
    if branch.starts_with("refs/") {
        branch.to_string()
    } else {
        format!("refs/heads/{branch}")
    }
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn invalid(msg: impl Into<String>) -> TestkitError {
    TestkitError::InvalidSetup(msg.into())
}

fn not_found(what: &'static str, detail: impl Into<String>) -> TestkitError {
    TestkitError::NotFound {
        what,
        detail: detail.into(),
    }
}

impl Default for SimState {
    fn default() -> Self {
        Self {
            orgs: BTreeMap::new(),
            next_run_id: 1,
            next_push_id: 1,
            clock: MonotonicClock::default(),
        }
    }
}

impl Org {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            collection_id: stable_guid(&format!("collection/{}", key(name))),
            account_id: stable_guid(&format!("account/{}", key(name))),
            tokens: BTreeSet::new(),
            projects: Vec::new(),
            runs: BTreeMap::new(),
            pushes: BTreeMap::new(),
        }
    }

    pub fn accepts_token(&self, token: &str) -> bool {
        self.tokens.contains(token)
    }

    /// Projects are addressed by name (any case) or by id, like the real service.
    pub fn project(&self, name_or_id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| {
            p.name.eq_ignore_ascii_case(name_or_id) || p.id.eq_ignore_ascii_case(name_or_id)
        })
    }

    pub(super) fn project_mut(&mut self, name_or_id: &str) -> Result<&mut Project, TestkitError> {
        let org = self.name.clone();
        self.projects
            .iter_mut()
            .find(|p| {
                p.name.eq_ignore_ascii_case(name_or_id) || p.id.eq_ignore_ascii_case(name_or_id)
            })
            .ok_or_else(|| {
                not_found(
                    "project",
                    format!("{org}/{name_or_id}; call add_project first"),
                )
            })
    }

    pub fn project_by_id(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }
}

impl Project {
    pub fn repository(&self, name_or_id: &str) -> Option<&Repository> {
        self.repositories.iter().find(|r| {
            r.name.eq_ignore_ascii_case(name_or_id) || r.id.eq_ignore_ascii_case(name_or_id)
        })
    }

    pub(super) fn repository_mut(&mut self, name_or_id: &str) -> Option<&mut Repository> {
        self.repositories.iter_mut().find(|r| {
            r.name.eq_ignore_ascii_case(name_or_id) || r.id.eq_ignore_ascii_case(name_or_id)
        })
    }
}

impl Repository {
    /// First-parent history from `head`, newest first, as Commits - Get Commits lists a branch.
    pub fn history(&self, head: &str) -> Vec<&Commit> {
        let mut out = Vec::new();
        let mut next = Some(head.to_string());
        while let Some(sha) = next {
            match self.commits.get(&sha) {
                Some(c) if !out.iter().any(|seen: &&Commit| seen.sha == c.sha) => {
                    next = c.parents.first().cloned();
                    out.push(c);
                }
                _ => break,
            }
        }
        out
    }

    fn ensure_commit(&mut self, sha: &str, parent: Option<&str>, comment: String, date: Timestamp) {
        self.commits
            .entry(sha.to_string())
            .or_insert_with(|| Commit {
                sha: sha.to_string(),
                parents: parent.map(|p| vec![p.to_string()]).unwrap_or_default(),
                comment,
                date,
                author: None,
                paths: Vec::new(),
            });
    }
}

fn check_sha(sha: &str) -> Result<(), TestkitError> {
    if sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(invalid(format!(
            "commit '{sha}' is not a 40-digit hex SHA-1; pass a full commit id"
        )))
    }
}

impl SimState {
    pub fn org(&self, name: &str) -> Option<&Org> {
        self.orgs.get(&key(name))
    }

    pub(super) fn org_mut(&mut self, name: &str) -> Result<&mut Org, TestkitError> {
        self.orgs.get_mut(&key(name)).ok_or_else(|| {
            not_found(
                "organization",
                format!("{name}; call add_project or add_token first"),
            )
        })
    }

    pub(crate) fn org_or_create(&mut self, name: &str) -> Result<&mut Org, TestkitError> {
        if name.is_empty() || name.contains('/') || name.starts_with('_') {
            return Err(invalid(format!(
                "organization name '{name}' must be non-empty, without '/', and not start with '_'"
            )));
        }
        Ok(self.orgs.entry(key(name)).or_insert_with(|| Org::new(name)))
    }

    pub fn add_token(&mut self, org: &str, token: &str) -> Result<(), TestkitError> {
        if token.is_empty() {
            return Err(invalid("a token must not be empty"));
        }
        self.org_or_create(org)?.tokens.insert(token.to_string());
        Ok(())
    }

    pub fn revoke_token(&mut self, org: &str, token: &str) -> Result<(), TestkitError> {
        self.org_mut(org)?.tokens.remove(token);
        Ok(())
    }

    /// Adds a project (idempotent) and returns its id.
    pub fn add_project(&mut self, org: &str, project: &str) -> Result<String, TestkitError> {
        if project.is_empty() || project.contains('/') {
            return Err(invalid(format!(
                "project name '{project}' must be non-empty and without '/'"
            )));
        }
        let o = self.org_or_create(org)?;
        if let Some(existing) = o.project(project) {
            return Ok(existing.id.clone());
        }
        let id = stable_guid(&format!("project/{}/{}", key(org), key(project)));
        o.projects.push(Project {
            id: id.clone(),
            name: project.to_string(),
            definitions: BTreeMap::new(),
            repositories: Vec::new(),
        });
        Ok(id)
    }

    pub fn add_definition(
        &mut self,
        org: &str,
        project: &str,
        id: i64,
        name: &str,
        repository: Option<&str>,
    ) -> Result<(), TestkitError> {
        if id <= 0 {
            return Err(invalid(format!("definition id {id} must be positive")));
        }
        let now = self.clock.now();
        let p = self.org_mut(org)?.project_mut(project)?;
        let def = p.definitions.entry(id).or_insert_with(|| Definition {
            name: name.to_string(),
            revision: 1,
            repository: None,
            created: now,
            numbers_per_day: BTreeMap::new(),
        });
        if def.name != name {
            def.name = name.to_string();
            def.revision += 1;
        }
        if let Some(repo) = repository {
            def.repository = Some(repo.to_string());
        }
        Ok(())
    }

    /// Adds a repository (or more branches to an existing one) and returns its id. The first branch
    /// becomes the default branch.
    pub fn add_repository(
        &mut self,
        org: &str,
        project: &str,
        name: &str,
        branches: &[(&str, &str)],
    ) -> Result<String, TestkitError> {
        if name.is_empty() || name.contains('/') {
            return Err(invalid(format!(
                "repository name '{name}' must be non-empty and without '/'"
            )));
        }
        for (_, sha) in branches {
            check_sha(sha)?;
        }
        let now = self.clock.now();
        let p = self.org_mut(org)?.project_mut(project)?;
        if p.repository(name).is_none() {
            let id = stable_guid(&format!("repo/{}/{}", p.id, key(name)));
            let default_branch = branches
                .first()
                .map(|(b, _)| full_ref(b))
                .unwrap_or_else(|| "refs/heads/main".to_string());
            p.repositories.push(Repository {
                id,
                name: name.to_string(),
                default_branch,
                refs: BTreeMap::new(),
                commits: BTreeMap::new(),
                tags: BTreeMap::new(),
                pull_requests: BTreeMap::new(),
            });
        }
        let repo = p
            .repository_mut(name)
            .ok_or_else(|| not_found("repository", name.to_string()))?;
        for (branch, sha) in branches {
            repo.ensure_commit(sha, None, format!("Initial commit on {branch}"), now);
            repo.refs.insert(full_ref(branch), sha.to_string());
        }
        Ok(repo.id.clone())
    }

    /// Moves `branch` to `new_sha` (creating the branch when needed), records the commit with the old
    /// head as its parent, and returns the push id.
    pub fn push(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
        branch: &str,
        new_sha: &str,
    ) -> Result<i64, TestkitError> {
        self.push_committed_at(org, project, repository, branch, new_sha, None)
    }

    /// [`Self::push`] of a commit whose committer date is `committed` (the push time when `None`): a
    /// commit made on a machine some time before it was pushed.
    pub fn push_committed_at(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
        branch: &str,
        new_sha: &str,
        committed: Option<Timestamp>,
    ) -> Result<i64, TestkitError> {
        check_sha(new_sha)?;
        let now = self.clock.now();
        let push_id = self.next_push_id;
        let o = self.org_mut(org)?;
        let p = o.project_mut(project)?;
        let project_id = p.id.clone();
        let repo = p.repository_mut(repository).ok_or_else(|| {
            not_found(
                "repository",
                format!("{repository} in {project}; call add_repository first"),
            )
        })?;
        let ref_name = full_ref(branch);
        let old = repo
            .refs
            .get(&ref_name)
            .cloned()
            .unwrap_or_else(|| ZERO_SHA.to_string());
        let parent = (old != ZERO_SHA).then_some(old.as_str());
        let date = committed.unwrap_or(now);
        repo.ensure_commit(new_sha, parent, format!("Update {branch}"), date);
        repo.refs.insert(ref_name.clone(), new_sha.to_string());
        let push = Push {
            id: push_id,
            project_id,
            repository_id: repo.id.clone(),
            ref_name,
            old_object_id: old,
            new_object_id: new_sha.to_string(),
            commits: vec![new_sha.to_string()],
            date: now,
        };
        o.pushes.insert(push_id, push);
        self.next_push_id += 1;
        Ok(push_id)
    }

    /// Creates a tag; annotated tags get a tag object (returned) that points at `target`, lightweight
    /// tags point at the commit directly (returned as well).
    pub fn add_tag(
        &mut self,
        org: &str,
        project: &str,
        repository: &str,
        name: &str,
        target: &str,
        annotated: bool,
    ) -> Result<String, TestkitError> {
        check_sha(target)?;
        let now = self.clock.now();
        let p = self.org_mut(org)?.project_mut(project)?;
        let repo = p
            .repository_mut(repository)
            .ok_or_else(|| not_found("repository", format!("{repository} in {project}")))?;
        repo.ensure_commit(target, None, format!("Tagged {name}"), now);
        let ref_name = format!("refs/tags/{name}");
        let object_id = if annotated {
            let object_id = tag_object_id(&repo.id, name, target);
            repo.tags.insert(
                object_id.clone(),
                AnnotatedTag {
                    object_id: object_id.clone(),
                    name: name.to_string(),
                    target: target.to_string(),
                    message: "Sync pointer\n".to_string(),
                    date: now,
                },
            );
            object_id
        } else {
            target.to_string()
        };
        repo.refs.insert(ref_name, object_id.clone());
        Ok(object_id)
    }

    /// Queues a run (status `notStarted`). `commit` defaults to the branch head of the pipeline's
    /// repository.
    pub fn queue_run(
        &mut self,
        org: &str,
        project: &str,
        definition_id: i64,
        branch: &str,
        commit: Option<&str>,
    ) -> Result<i64, TestkitError> {
        if branch.is_empty() {
            return Err(invalid("branch must not be empty"));
        }
        let now = self.clock.now();
        let run_id = self.next_run_id;
        let o = self.org_mut(org)?;
        let p = o.project_mut(project)?;
        let project_id = p.id.clone();
        let project_name = p.name.clone();
        let branch = full_ref(branch);
        let def = p.definitions.get(&definition_id).ok_or_else(|| {
            not_found(
                "definition",
                format!("{definition_id} in {project}; call add_definition first"),
            )
        })?;
        let repo_name = def.repository.clone().unwrap_or(project_name);
        let (repository_id, repository_name, head) = match p.repository(&repo_name) {
            Some(r) => (r.id.clone(), r.name.clone(), r.refs.get(&branch).cloned()),
            None => (
                stable_guid(&format!("repo/{}/{}", project_id, key(&repo_name))),
                repo_name.clone(),
                None,
            ),
        };
        let commit = match (commit, head) {
            (Some(c), _) => {
                check_sha(c)?;
                c.to_string()
            }
            (None, Some(h)) => h,
            (None, None) => {
                return Err(invalid(format!(
                    "no commit given and {branch} of repository '{repo_name}' is unknown; pass a commit"
                )))
            }
        };
        let def = p
            .definitions
            .get_mut(&definition_id)
            .ok_or_else(|| not_found("definition", definition_id.to_string()))?;
        let day = build_date(now);
        let n = def.numbers_per_day.entry(day.clone()).or_insert(0);
        *n += 1;
        let build_number = format!("{day}.{n}");
        o.runs.insert(
            run_id,
            Run {
                id: run_id,
                project_id,
                definition_id,
                build_number,
                branch,
                commit,
                repository_id,
                repository_name,
                status: RunStatus::NotStarted,
                result: None,
                queue_time: now,
                start_time: None,
                finish_time: None,
                last_changed: now,
                plan_id: fresh_guid(),
                links: Default::default(),
            },
        );
        self.next_run_id += 1;
        Ok(run_id)
    }

    /// Finds a run by id in any organization (run ids are unique across the simulator).
    pub fn find_run(&self, id: i64) -> Option<(&Org, &Run)> {
        self.orgs
            .values()
            .find_map(|o| o.runs.get(&id).map(|r| (o, r)))
    }

    pub(super) fn run_mut(&mut self, org: Option<&str>, id: i64) -> Result<&mut Run, TestkitError> {
        let found = match org {
            Some(org) => self.org_mut(org)?.runs.get_mut(&id),
            None => self.orgs.values_mut().find_map(|o| o.runs.get_mut(&id)),
        };
        found.ok_or_else(|| not_found("run", format!("{id}; queue_run returns the ids")))
    }

    pub fn start_run(&mut self, org: Option<&str>, id: i64) -> Result<(), TestkitError> {
        let now = self.clock.now();
        let run = self.run_mut(org, id)?;
        match run.status {
            RunStatus::NotStarted => {
                run.status = RunStatus::InProgress;
                run.start_time = Some(now);
                run.last_changed = now;
                Ok(())
            }
            other => Err(invalid(format!(
                "run {id} is {}; only a notStarted run can start",
                other.as_str()
            ))),
        }
    }

    /// Requests cancellation: the run shows `cancelling` until it is completed (normally with
    /// `canceled`).
    pub fn cancel_run(&mut self, org: Option<&str>, id: i64) -> Result<(), TestkitError> {
        let now = self.clock.now();
        let run = self.run_mut(org, id)?;
        match run.status {
            RunStatus::NotStarted | RunStatus::InProgress => {
                run.status = RunStatus::Cancelling;
                run.last_changed = now;
                Ok(())
            }
            other => Err(invalid(format!(
                "run {id} is {}; only a queued or running run can be canceled",
                other.as_str()
            ))),
        }
    }

    /// Completes a run. A run that never started gets a start time equal to its finish time, except
    /// when it is canceled (a build canceled in the queue never starts).
    pub fn complete_run(
        &mut self,
        org: Option<&str>,
        id: i64,
        result: RunResult,
    ) -> Result<(), TestkitError> {
        let now = self.clock.now();
        let run = self.run_mut(org, id)?;
        if run.status == RunStatus::Completed {
            return Err(invalid(format!("run {id} already completed")));
        }
        if run.start_time.is_none() && result != RunResult::Canceled {
            run.start_time = Some(now);
        }
        run.status = RunStatus::Completed;
        run.result = Some(result);
        run.finish_time = Some(now);
        run.last_changed = now;
        Ok(())
    }

    pub fn find_push(&self, id: i64) -> Option<(&Org, &Push)> {
        self.orgs
            .values()
            .find_map(|o| o.pushes.get(&id).map(|p| (o, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn setup() -> SimState {
        let mut s = SimState::default();
        s.add_project("contoso", "Shop").unwrap();
        s.add_definition("contoso", "shop", 42, "base-ci", None)
            .unwrap();
        s.add_repository("contoso", "Shop", "Shop", &[("main", A)])
            .unwrap();
        s
    }

    #[test]
    fn projects_resolve_by_name_in_any_case_and_by_id() {
        let s = setup();
        let org = s.org("CONTOSO").unwrap();
        let id = org.project("shop").unwrap().id.clone();
        assert_eq!(org.project(&id.to_uppercase()).unwrap().name, "Shop");
        assert!(org.project("other").is_none());
    }

    #[test]
    fn run_lifecycle_and_build_numbers() {
        let mut s = setup();
        let r1 = s.queue_run("contoso", "Shop", 42, "main", None).unwrap();
        let r2 = s
            .queue_run("contoso", "Shop", 42, "refs/heads/main", Some(B))
            .unwrap();
        assert!(r2 > r1);
        let (_, run1) = s.find_run(r1).unwrap();
        assert_eq!(run1.commit, A, "defaults to the branch head");
        assert_eq!(run1.branch, "refs/heads/main");
        assert!(run1.build_number.ends_with(".1"));
        assert!(s.find_run(r2).unwrap().1.build_number.ends_with(".2"));

        s.start_run(None, r1).unwrap();
        assert!(s.start_run(None, r1).is_err(), "cannot start twice");
        s.complete_run(Some("contoso"), r1, RunResult::Failed)
            .unwrap();
        let (_, run1) = s.find_run(r1).unwrap();
        assert_eq!(run1.status, RunStatus::Completed);
        assert_eq!(run1.result, Some(RunResult::Failed));
        assert!(run1.start_time.unwrap() <= run1.finish_time.unwrap());
        assert!(s.complete_run(None, r1, RunResult::Succeeded).is_err());

        s.cancel_run(None, r2).unwrap();
        assert_eq!(s.find_run(r2).unwrap().1.status, RunStatus::Cancelling);
        s.complete_run(None, r2, RunResult::Canceled).unwrap();
        let (_, run2) = s.find_run(r2).unwrap();
        assert_eq!(run2.result, Some(RunResult::Canceled));
        assert!(
            run2.start_time.is_none(),
            "canceled in the queue, never started"
        );
    }

    #[test]
    fn bad_input_changes_nothing() {
        let mut s = setup();
        assert!(s.queue_run("contoso", "Shop", 7, "main", None).is_err());
        assert!(s.queue_run("contoso", "Nope", 42, "main", None).is_err());
        assert!(s.queue_run("contoso", "Shop", 42, "develop", None).is_err());
        assert!(s
            .queue_run("contoso", "Shop", 42, "main", Some("abc"))
            .is_err());
        assert!(s.org("contoso").unwrap().runs.is_empty());
        assert!(s.start_run(None, 99).is_err());
        assert!(s.push("contoso", "Shop", "Shop", "main", "xyz").is_err());
        assert!(s.add_project("a/b", "p").is_err());
    }

    #[test]
    fn push_moves_the_branch_and_links_history() {
        let mut s = setup();
        let id = s.push("contoso", "Shop", "shop", "main", B).unwrap();
        let (_, push) = s.find_push(id).unwrap();
        assert_eq!(push.old_object_id, A);
        assert_eq!(push.new_object_id, B);
        let repo = s
            .org("contoso")
            .unwrap()
            .project("Shop")
            .unwrap()
            .repository("Shop")
            .unwrap();
        assert_eq!(repo.refs["refs/heads/main"], B);
        let history: Vec<_> = repo.history(B).iter().map(|c| c.sha.clone()).collect();
        assert_eq!(history, vec![B.to_string(), A.to_string()]);

        let new_branch = s.push("contoso", "Shop", "Shop", "feature/x", A).unwrap();
        assert_eq!(s.find_push(new_branch).unwrap().1.old_object_id, ZERO_SHA);
    }

    #[test]
    fn a_pushed_commit_is_dated_at_the_push_unless_committed_earlier() {
        let mut s = setup();
        let pushed = s.push("contoso", "Shop", "shop", "main", B).unwrap();
        let earlier: Timestamp = "2026-11-22T09:00:00Z".parse().unwrap();
        let c = "cccccccccccccccccccccccccccccccccccccccc";
        let dated = s
            .push_committed_at("contoso", "Shop", "shop", "main", c, Some(earlier))
            .unwrap();
        let push_date = s.find_push(pushed).unwrap().1.date;
        let repo = s
            .org("contoso")
            .unwrap()
            .project("Shop")
            .unwrap()
            .repository("Shop")
            .unwrap();
        assert_eq!(repo.commits[B].date, push_date);
        assert_eq!(repo.commits[c].date, earlier);
        assert_eq!(repo.commits[c].parents, vec![B.to_string()]);
        assert_eq!(repo.refs["refs/heads/main"], c);
        assert!(s.find_push(dated).unwrap().1.date > push_date);
    }

    #[test]
    fn annotated_tags_get_their_own_object() {
        let mut s = setup();
        let obj = s
            .add_tag("contoso", "Shop", "Shop", "flux-sync", A, true)
            .unwrap();
        assert_ne!(obj, A);
        let light = s
            .add_tag("contoso", "Shop", "Shop", "v1", A, false)
            .unwrap();
        assert_eq!(light, A);
        let repo = s
            .org("contoso")
            .unwrap()
            .project("Shop")
            .unwrap()
            .repository("Shop")
            .unwrap();
        assert_eq!(repo.tags[&obj].target, A);
        assert_eq!(repo.refs["refs/tags/flux-sync"], obj);
    }
}
