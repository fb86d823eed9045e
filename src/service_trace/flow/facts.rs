//! What the correlation rules read, reduced from Azure DevOps' own shapes to the few fields they use.

use jiff::Timestamp;

use crate::ado::{
    parse_ado_time, Build, BuildResult, BuildStatus, GitCommitRef, GitPullRequest, PipelineRun,
    RunResult, RunState,
};

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunPhase {
    /// Queued, running or cancelling.
    InProgress,
    Succeeded,
    /// Failed, canceled or partially succeeded: no artefact the next stage can rely on.
    Failed,
    Unknown,
}

impl RunPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::InProgress => "InProgress",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Unknown => "Unknown",
        }
    }
}

/// A pipeline run consumed as a pipeline resource (`resources.pipelines.<alias>`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumedRun {
    pub pipeline_id: Option<i64>,
    /// The consumed run's name, i.e. its build number.
    pub version: String,
}

/// One build (= Pipelines run), from the Builds API or the Runs API.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFacts {
    pub id: i64,
    pub number: Option<String>,
    pub definition_id: Option<i64>,
    pub phase: RunPhase,
    /// Azure DevOps' spelling of the result (or status while unfinished), for status.
    pub result: Option<String>,
    pub reason: Option<String>,
    pub source_version: Option<String>,
    /// `triggeredByBuild.id` (classic build-completion trigger).
    pub triggered_by_build: Option<i64>,
    /// Pipeline resources the run consumed (Runs API only).
    pub consumed: Vec<ConsumedRun>,
    /// `triggerInfo["ci.message"]`: the source commit's message, for CI-triggered builds.
    pub ci_message: Option<String>,
    pub queue_time: Option<Timestamp>,
    pub start_time: Option<Timestamp>,
    pub finish_time: Option<Timestamp>,
    pub url: Option<String>,
}

impl RunFacts {
    pub fn from_build(b: &Build) -> Self {
        let phase = match (b.status, b.result) {
            (_, Some(BuildResult::Succeeded)) => RunPhase::Succeeded,
            (
                _,
                Some(BuildResult::Failed | BuildResult::Canceled | BuildResult::PartiallySucceeded),
            ) => RunPhase::Failed,
            (
                Some(
                    BuildStatus::NotStarted
                    | BuildStatus::InProgress
                    | BuildStatus::Cancelling
                    | BuildStatus::Postponed,
                ),
                _,
            ) => RunPhase::InProgress,
            _ => RunPhase::Unknown,
        };
        let t = |s: &Option<String>| s.as_deref().and_then(parse_ado_time);
        Self {
            id: b.id,
            number: b.build_number.clone(),
            definition_id: b.definition.as_ref().and_then(|d| d.id),
            phase,
            result: b
                .result
                .map(|r| r.as_str().to_string())
                .or_else(|| b.status.map(|s| s.as_str().to_string())),
            reason: b.reason.clone(),
            source_version: b.source_version.clone(),
            triggered_by_build: b.triggered_by_build.as_ref().and_then(|t| t.id),
            consumed: Vec::new(),
            ci_message: b
                .trigger_info
                .as_ref()
                .and_then(|t| t.get("ci.message"))
                .and_then(|m| m.as_str())
                .map(str::to_string),
            queue_time: t(&b.queue_time),
            start_time: t(&b.start_time),
            finish_time: t(&b.finish_time),
            url: b.web_url().map(str::to_string),
        }
    }

    /// A Runs API run. It has no `sourceVersion` of its own (only `resources.repositories.self.version`)
    /// and no start time; `createdDate` stands for both queue and start.
    pub fn from_run(r: &PipelineRun) -> Self {
        let phase = match (r.state, r.result) {
            (_, Some(RunResult::Succeeded)) => RunPhase::Succeeded,
            (_, Some(RunResult::Failed | RunResult::Canceled | RunResult::PartiallySucceeded)) => {
                RunPhase::Failed
            }
            (Some(RunState::InProgress | RunState::Canceling), _) => RunPhase::InProgress,
            _ => RunPhase::Unknown,
        };
        let t = |s: &Option<String>| s.as_deref().and_then(parse_ado_time);
        let consumed = r
            .resources
            .as_ref()
            .and_then(|res| res.pipelines.as_ref())
            .map(|p| {
                p.values()
                    .filter_map(|p| {
                        Some(ConsumedRun {
                            pipeline_id: p.pipeline.as_ref().and_then(|p| p.id),
                            version: p.version.clone()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: r.id,
            number: r.name.clone(),
            definition_id: r.pipeline.as_ref().and_then(|p| p.id),
            phase,
            result: r
                .result
                .map(run_result_str)
                .or_else(|| r.state.map(run_state_str))
                .map(str::to_string),
            reason: None,
            source_version: r.self_repository().and_then(|s| s.version.clone()),
            triggered_by_build: None,
            consumed,
            ci_message: None,
            queue_time: t(&r.created_date),
            start_time: t(&r.created_date),
            finish_time: t(&r.finished_date),
            url: r.web_url().map(str::to_string),
        }
    }
}

/// One commit, from Commits - Get / Get Commits.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitFacts {
    pub id: String,
    pub author: Option<String>,
    /// Committer date: when the commit was made on the branch (a rebase keeps the author date).
    pub committed: Option<Timestamp>,
    pub message: String,
    /// The commit's web page (`remoteUrl`).
    pub web_url: Option<String>,
}

impl CommitFacts {
    pub fn from_commit(c: &GitCommitRef) -> Self {
        let date = |u: &Option<crate::ado::GitUserDate>| {
            u.as_ref()
                .and_then(|u| u.date.as_deref())
                .and_then(|d| d.parse::<Timestamp>().ok())
        };
        Self {
            id: c.commit_id.clone(),
            author: c.author.as_ref().and_then(|a| a.name.clone()),
            committed: date(&c.committer).or_else(|| date(&c.author)),
            message: c.comment.clone().unwrap_or_default(),
            web_url: c.remote_url.clone(),
        }
    }

    /// The repository's web URL (`…/_git/<repo>`), from the commit's `remoteUrl` (`…/_git/<repo>/commit/<sha>`).
    pub fn repository_web_url(&self) -> Option<&str> {
        let url = self.web_url.as_deref()?;
        url.rfind("/commit/").map(|i| &url[..i])
    }
}

/// A pull request, as status shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PullRequestFacts {
    pub id: i64,
    pub title: Option<String>,
    pub url: Option<String>,
}

impl PullRequestFacts {
    /// From Pull Requests - Get or a Pull Request Query result: the web link is the repository's
    /// `remoteUrl` + `/pullrequest/<id>` (the REST `url` is an API address, not a page).
    pub fn from_pull_request(pr: &GitPullRequest) -> Self {
        Self {
            id: pr.pull_request_id,
            title: pr.title.clone(),
            url: pr
                .repository
                .as_ref()
                .and_then(|r| r.remote_url.as_deref())
                .map(|u| {
                    format!(
                        "{}/pullrequest/{}",
                        u.trim_end_matches('/'),
                        pr.pull_request_id
                    )
                }),
        }
    }
}

fn run_result_str(r: RunResult) -> &'static str {
    match r {
        RunResult::Succeeded => "succeeded",
        RunResult::PartiallySucceeded => "partiallySucceeded",
        RunResult::Failed => "failed",
        RunResult::Canceled => "canceled",
        RunResult::Unknown => "unknown",
    }
}

fn run_state_str(s: RunState) -> &'static str {
    match s {
        RunState::InProgress => "inProgress",
        RunState::Canceling => "canceling",
        RunState::Completed => "completed",
        RunState::Unknown => "unknown",
    }
}
