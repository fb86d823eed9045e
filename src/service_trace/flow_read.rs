//! The reads ServiceTrace 2 adds: every environment's deployed object, the newest build's source commit
//! (author, pull request), recent HLD and manifest commits and the HLD-update runs that correlation
//! ([`super::flow::correlate`]) ties to one change.
//!
//! Cost per reconcile: one Commits - Get Commits per HLD branch and per manifest branch (`$top` =
//! [`COMMITS_PER_READ`]), one Commits - Get for the source commit (Azure Repos only), a Pull Requests -
//! Get only for an old-style merge message without a title, and the HLD-update pipeline's Builds List
//! through the shared poll cache.

use super::deployed::{AgentState, DeployedKind};
use super::flow::compose::{EnvRead, FlowReads};
use super::flow::facts::{CommitFacts, PullRequestFacts, RunFacts};
use super::flow::history::{EnvHealth, EnvObservation};
use super::flow::view::{EnvTarget, SourceFacts};
use super::read::{deployed_target, read_deployed_with_cluster, Reader};
use super::stages::DeployedInput;
use crate::ado::{AdoError, Build};
use crate::crd::ServiceTrace;
use crate::reconciler::Error;
use crate::secret::SecretString;

/// Recent commits read per branch: enough for a day of busy HLD updates, bounded.
pub const COMMITS_PER_READ: u32 = 30;

/// Recent commits of a branch at a given head, and source commits with their pull request: a branch
/// whose head did not move has the same recent commits, and a commit never changes, so each is read
/// once per new head / new build, not on every poll. Bounded: cleared when it reaches
/// [`FLOW_CACHE_CAPACITY`] entries (the next reconciles read again).
#[derive(Default)]
pub struct FlowCache {
    branches: std::sync::Mutex<std::collections::HashMap<String, Vec<CommitFacts>>>,
    sources: std::sync::Mutex<std::collections::HashMap<String, SourceFacts>>,
}

pub const FLOW_CACHE_CAPACITY: usize = 2048;

fn cached<T: Clone>(
    map: &std::sync::Mutex<std::collections::HashMap<String, T>>,
    key: &str,
) -> Option<T> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
}

fn remember<T>(
    map: &std::sync::Mutex<std::collections::HashMap<String, T>>,
    key: String,
    value: T,
) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= FLOW_CACHE_CAPACITY {
        m.clear();
    }
    m.insert(key, value);
}

/// What the flow reads, plus each environment's input for the per-environment verdict.
pub struct FlowRead {
    pub reads: FlowReads,
    pub deployed: Vec<DeployedInput>,
}

fn health(
    observed: &Result<super::deployed::DeployedObservation, super::stages::ReadFailure>,
) -> (Option<String>, EnvHealth) {
    match observed {
        Ok(o) => (
            o.revision.as_ref().map(|r| r.value().to_string()),
            match &o.agent {
                AgentState::Settled => EnvHealth::Settled,
                AgentState::Progressing(_) => EnvHealth::Progressing,
                AgentState::Failed(why) => EnvHealth::Failed(why.clone()),
                AgentState::Suspended => EnvHealth::Suspended,
            },
        ),
        Err(failure) => (None, EnvHealth::Unreadable(failure.0.clone())),
    }
}

/// Every environment of the trace, in promotion order.
pub async fn read_environments(
    trace: &ServiceTrace,
    namespace: &str,
    client: &kube::Client,
) -> Result<(Vec<EnvRead>, Vec<DeployedInput>), Error> {
    let spec = &trace.spec;
    let envs = spec.environment_list();
    let mut branches: Vec<String> = vec![spec.manifest.branch.clone()];
    let reads = futures::future::join_all(
        envs.iter()
            .map(|e| read_deployed_with_cluster(client, e.deployed(), namespace)),
    )
    .await;
    let mut out = Vec::with_capacity(envs.len());
    let mut inputs = Vec::with_capacity(envs.len());
    for (env, read) in envs.iter().zip(reads) {
        let (input, cluster) = read?;
        let branch = env
            .manifest
            .as_ref()
            .and_then(|m| m.branch.clone())
            .unwrap_or_else(|| spec.manifest.branch.clone());
        let manifest_source = match branches.iter().position(|b| *b == branch) {
            Some(i) => i,
            None => {
                branches.push(branch);
                branches.len() - 1
            }
        };
        let (revision, health) = health(&input.observed);
        let target = deployed_target(&env.deployed(), namespace)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "nothing".to_string());
        out.push(EnvRead {
            target: EnvTarget {
                name: env.name.clone(),
                target,
                cluster,
            },
            observation: EnvObservation {
                name: env.name.clone(),
                revision,
                attempted: None,
                health,
                by_image_tag: matches!(input.target.kind, DeployedKind::Workload(_)),
            },
            manifest_source,
        });
        inputs.push(input);
    }
    Ok((out, inputs))
}

/// The manifest branches the environments read, in `manifest_source` order.
pub fn manifest_branches(trace: &ServiceTrace) -> Vec<String> {
    let spec = &trace.spec;
    let mut branches = vec![spec.manifest.branch.clone()];
    for env in spec.environment_list() {
        if let Some(b) = env.manifest.as_ref().and_then(|m| m.branch.clone()) {
            if !branches.contains(&b) {
                branches.push(b);
            }
        }
    }
    branches
}

/// A non-transient Azure DevOps error leaves the link unknown; a transient one is returned so the last
/// verdict stands.
fn soft<T: Default>(r: Result<T, AdoError>, what: &str) -> Result<T, AdoError> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(read = what, error = %e, "could not read; the link stays unknown");
            Ok(T::default())
        }
    }
}

async fn commits(
    ctx: &Reader<'_>,
    org: &str,
    project: &str,
    repository: &str,
    branch: &str,
    head: Option<&str>,
    token: &SecretString,
) -> Result<Vec<CommitFacts>, AdoError> {
    let key =
        head.map(|h| format!("{org}|{project}|{repository}|{branch}|{h}").to_ascii_lowercase());
    if let Some(hit) = key
        .as_deref()
        .and_then(|k| cached(&ctx.flow_cache.branches, k))
    {
        return Ok(hit);
    }
    let got = ctx
        .io
        .ado
        .get_commits(
            org,
            project,
            repository,
            branch,
            "branch",
            COMMITS_PER_READ,
            token,
        )
        .await
        .map(|v| v.iter().map(CommitFacts::from_commit).collect::<Vec<_>>());
    let got = got.inspect(|list| {
        if let Some(k) = key {
            remember(&ctx.flow_cache.branches, k, list.clone());
        }
    });
    soft(got, "commits")
}

/// The newest build's source commit and pull request (Azure Repos sources only: the Commits API cannot
/// read a GitHub repository, and `requestedFor` is not the author).
async fn source(
    ctx: &Reader<'_>,
    org: &str,
    project: &str,
    build: &Build,
    token: &SecretString,
) -> Result<SourceFacts, AdoError> {
    let Some(sha) = build.source_version.as_deref() else {
        return Ok(SourceFacts::default());
    };
    let repo = build.repository.as_ref();
    let azure_repos = repo
        .and_then(|r| r.type_.as_deref())
        .is_none_or(|t| t.eq_ignore_ascii_case("TfsGit"));
    let Some(repo_id) = repo.and_then(|r| r.id.as_deref()).filter(|_| azure_repos) else {
        return Ok(SourceFacts::default());
    };
    let key = format!("{org}|{repo_id}|{sha}").to_ascii_lowercase();
    if let Some(hit) = cached(&ctx.flow_cache.sources, &key) {
        return Ok(hit);
    }
    let commit = soft(
        ctx.io
            .ado
            .get_commits(org, project, repo_id, sha, "commit", 1, token)
            .await,
        "source commit",
    )?
    .into_iter()
    .find(|c| c.commit_id.eq_ignore_ascii_case(sha))
    .map(|c| CommitFacts::from_commit(&c));
    let facts = RunFacts::from_build(build);
    let mut pr = super::flow::correlate::source_pull_request(&facts, commit.as_ref(), None);
    if let Some(p) = pr.as_mut().filter(|p| p.title.is_none()) {
        if let Ok(Some(got)) = soft(
            ctx.io
                .ado
                .get_pull_request(org, project, repo_id, p.id, token)
                .await
                .map(Some),
            "pull request",
        ) {
            *p = PullRequestFacts {
                url: PullRequestFacts::from_pull_request(&got)
                    .url
                    .or(p.url.take()),
                ..PullRequestFacts::from_pull_request(&got)
            };
        }
    }
    let facts = SourceFacts {
        author: commit.as_ref().and_then(|c| c.author.clone()),
        commit_url: commit.as_ref().and_then(|c| c.web_url.clone()),
        pull_request: pr,
    };
    // A commit (or its absence: a 404 was turned into "unknown" above) never changes.
    remember(&ctx.flow_cache.sources, key, facts.clone());
    Ok(facts)
}

/// Read everything the flow needs besides what [`super::read::read_all`] already read.
/// Heads already read this reconcile (Refs - List), so unchanged branches come from the cache.
#[derive(Clone, Debug, Default)]
pub struct Heads {
    pub hld: Option<String>,
    pub manifest: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub async fn read_flow(
    trace: &ServiceTrace,
    token: &SecretString,
    ctx: &Reader<'_>,
    ci_runs: &[Build],
    hld_runs: Vec<Build>,
    environments: (Vec<EnvRead>, Vec<DeployedInput>),
    heads: Heads,
) -> Result<FlowRead, AdoError> {
    let spec = &trace.spec;
    let org = spec.azure_devops.organization_url.as_str();
    let project = spec.azure_devops.project.as_str();
    let (environments, deployed) = environments;
    let branch = crate::pipeline_key::full_branch_ref(&spec.build.branch);
    let newest = ci_runs
        .iter()
        .filter(|b| {
            b.source_branch
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&branch))
        })
        .max_by_key(|b| b.id);
    let source_read = async {
        match newest {
            Some(b) => source(ctx, org, project, b, token).await,
            None => Ok(SourceFacts::default()),
        }
    };
    let hld_read = async {
        match &spec.hld {
            Some(h) => {
                commits(
                    ctx,
                    org,
                    project,
                    &h.repository,
                    &h.branch,
                    heads.hld.as_deref(),
                    token,
                )
                .await
            }
            None => Ok(Vec::new()),
        }
    };
    let branches = manifest_branches(trace);
    let manifest_read = futures::future::join_all(branches.iter().enumerate().map(|(i, b)| {
        // Only the trace's own manifest branch had its head read.
        let head = if i == 0 {
            heads.manifest.as_deref()
        } else {
            None
        };
        commits(ctx, org, project, &spec.manifest.repository, b, head, token)
    }));
    let (source, hld_commits, manifests) = futures::join!(source_read, hld_read, manifest_read);
    let mut manifest_commits = Vec::with_capacity(manifests.len());
    for m in manifests {
        manifest_commits.push(m?);
    }
    Ok(FlowRead {
        reads: FlowReads {
            environments,
            source: source?,
            hld_commits: hld_commits?,
            hld_runs: hld_runs.iter().map(RunFacts::from_build).collect(),
            manifest_commits,
        },
        deployed,
    })
}
