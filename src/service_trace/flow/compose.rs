//! One reconcile's flow: from what was read (CI and downstream runs, recent commits, each environment)
//! and the previous history, the new `latest`, `summary` and `history`, and the step that failed or is
//! stuck. Pure; the reconciler does the reading ([`super::super::read`]) and the writing.

use jiff::Timestamp;

use super::correlate::{
    correlate, CorrelatedPath, FlowFacts, GenerationFacts, HldFacts, LinkRule, Linked,
};
use super::facts::{CommitFacts, RunFacts};
use super::history::{align_environments, observe, upsert, EnvObservation, EnvView};
use super::stall::Timeouts;
use super::view::{history_entry, view, EnvTarget, FlowView, SourceFacts, ViewInput};
use crate::ado::{Build, BuildResult};
use crate::crd::{HistoryEntry, ServiceTraceSpec};

/// One environment as read this reconcile.
#[derive(Clone, Debug)]
pub struct EnvRead {
    pub target: EnvTarget,
    pub observation: EnvObservation,
    /// Index into [`FlowReads::manifest_commits`]: the environment's manifest commits (its branch, only
    /// those touching its folder when it has one).
    pub manifest_source: usize,
    /// Index into [`FlowReads::manifest_commits`]: its whole branch. Agents report the branch revision
    /// they fetched, which for a folder need not be a commit that touched it, so "does the environment
    /// run this build's manifest commit or a newer one" is asked of the branch, not the folder.
    pub branch_source: usize,
}

/// Everything the flow reads beyond the existing trace inputs.
#[derive(Clone, Debug, Default)]
pub struct FlowReads {
    pub environments: Vec<EnvRead>,
    /// The newest build's source commit (author, message) and pull request.
    pub source: SourceFacts,
    /// The same for older builds entering the history this reconcile, by build id.
    pub sources: std::collections::BTreeMap<i64, SourceFacts>,
    /// Recent HLD branch commits, newest first.
    pub hld_commits: Vec<CommitFacts>,
    /// Recent runs of `spec.hld.definitionId`, when set and not the CI pipeline.
    pub hld_runs: Vec<RunFacts>,
    /// Recent commits of each manifest branch the environments read, newest first.
    pub manifest_commits: Vec<Vec<CommitFacts>>,
}

/// The outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Composed {
    pub view: FlowView,
    pub history: Vec<HistoryEntry>,
    /// Environments the newest build reached in this reconcile (for Events).
    pub arrivals: Vec<(String, Option<String>)>,
}

/// Builds of the CI definition and branch, newest queued first.
fn newest_first<'b>(runs: &'b [Build], definition_id: i64, branch: &str) -> Vec<&'b Build> {
    let mut v: Vec<&Build> = runs
        .iter()
        .filter(|b| {
            b.definition
                .as_ref()
                .and_then(|d| d.id)
                .is_none_or(|d| d == definition_id)
        })
        .filter(|b| {
            b.source_branch
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(branch))
        })
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.id));
    v
}

#[allow(clippy::too_many_arguments)]
pub fn compose(
    spec: &ServiceTraceSpec,
    ci_runs: &[Build],
    generation_runs: &[Build],
    manifest_head: Option<&str>,
    reads: &FlowReads,
    previous: &[HistoryEntry],
    now: Timestamp,
) -> Option<Composed> {
    let branch = crate::pipeline_key::full_branch_ref(&spec.build.branch);
    let builds = newest_first(ci_runs, spec.build.definition_id, &branch);
    let newest = RunFacts::from_build(builds.first()?);
    let generation: Vec<RunFacts> = generation_runs.iter().map(RunFacts::from_build).collect();
    let empty: Vec<CommitFacts> = Vec::new();
    let sources = |i: usize| reads.manifest_commits.get(i).unwrap_or(&empty);
    let paths_for = |b: &RunFacts| -> Vec<CorrelatedPath> {
        reads
            .environments
            .iter()
            .map(|e| {
                correlate(&FlowFacts {
                    build: b,
                    ci_definition_id: spec.build.definition_id,
                    hld: spec.hld.as_ref().map(|h| HldFacts {
                        definition_id: h.definition_id,
                        runs: &reads.hld_runs,
                        commits: &reads.hld_commits,
                    }),
                    generation: spec.manifest.definition_id.map(|id| GenerationFacts {
                        definition_id: id,
                        runs: &generation,
                    }),
                    manifest_commits: sources(e.manifest_source),
                })
            })
            .collect()
    };
    let newest_success = builds
        .iter()
        .find(|b| b.result == Some(BuildResult::Succeeded))
        .map(|b| RunFacts::from_build(b));

    let mut history = previous.to_vec();
    let names: Vec<&str> = reads
        .environments
        .iter()
        .map(|e| e.target.name.as_str())
        .collect();
    let targets: Vec<EnvTarget> = reads
        .environments
        .iter()
        .map(|e| e.target.clone())
        .collect();
    let known = history.iter().map(|h| h.build_id).max();
    for b in builds
        .iter()
        .rev()
        .filter(|b| b.result == Some(BuildResult::Succeeded))
    {
        let facts = RunFacts::from_build(b);
        let is_newest = newest_success.as_ref().is_some_and(|n| n.id == facts.id);
        if !(is_newest
            || known.is_some_and(|k| facts.id > k)
            || history.iter().any(|h| h.build_id == facts.id))
        {
            continue;
        }
        let mut paths = paths_for(&facts);
        if is_newest {
            adopt_manifest_head(
                &mut paths,
                &reads.manifest_commits,
                &reads.environments,
                manifest_head,
            );
        }
        let source = if facts.id == newest.id {
            reads.source.clone()
        } else {
            reads.sources.get(&facts.id).cloned().unwrap_or_default()
        };
        upsert(
            &mut history,
            history_entry(&facts, &source, &paths, &targets),
            spec.history_limit(),
        );
    }
    align_environments(&mut history, &names);
    let views: Vec<EnvView> = reads
        .environments
        .iter()
        .map(|e| EnvView {
            obs: &e.observation,
            manifest_commits: sources(e.branch_source),
        })
        .collect();
    let before: Vec<(String, bool)> = arrived_flags(&history, newest.id, &names);
    observe(&mut history, &views, now);
    let after = arrived_flags(&history, newest.id, &names);
    let arrivals = before
        .iter()
        .zip(&after)
        .filter(|((_, b), (_, a))| !b && *a)
        .map(|((n, _), _)| {
            let lead = history
                .iter()
                .find(|h| h.build_id == newest.id)
                .and_then(|h| h.environments.get(n))
                .and_then(|a| a.lead_time.clone());
            (n.clone(), lead)
        })
        .collect();

    let mut paths = paths_for(&newest);
    if newest_success.as_ref().is_some_and(|n| n.id == newest.id) {
        adopt_manifest_head(
            &mut paths,
            &reads.manifest_commits,
            &reads.environments,
            manifest_head,
        );
    }
    let observations: Vec<EnvObservation> = reads
        .environments
        .iter()
        .map(|e| e.observation.clone())
        .collect();
    let timeouts = Timeouts::from_spec(spec);
    let entry = history.iter().find(|h| h.build_id == newest.id);
    let view = view(&ViewInput {
        build: &newest,
        source: &reads.source,
        hld_repository: spec.hld.as_ref().map(|h| h.repository.as_str()),
        manifest_repository: &spec.manifest.repository,
        has_generation: spec.manifest.definition_id.is_some(),
        paths: &paths,
        envs: &targets,
        observations: &observations,
        entry,
        timeouts: &timeouts,
        now,
    });
    Some(Composed {
        view,
        history,
        arrivals,
    })
}

fn arrived_flags(history: &[HistoryEntry], build: i64, names: &[&str]) -> Vec<(String, bool)> {
    let entry = history.iter().find(|h| h.build_id == build);
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                entry
                    .and_then(|e| e.environments.get(*n))
                    .is_some_and(|a| a.state == super::history::ARRIVED),
            )
        })
        .collect()
}

/// Without a message or run naming it, the newest successful build's manifest commit is the manifest
/// head when the trace's "came after" rule (`super::super::order`) ordered that head after the build
/// (`manifest_head` is `Some` only then). Only for the newest build: an older one cannot be placed this
/// way, and stays `unknown`.
fn adopt_manifest_head(
    paths: &mut [CorrelatedPath],
    manifest_commits: &[Vec<CommitFacts>],
    envs: &[EnvRead],
    manifest_head: Option<&str>,
) {
    let Some(head) = manifest_head else { return };
    for (path, env) in paths.iter_mut().zip(envs) {
        if path.manifest_commit.rule != LinkRule::Unknown || env.manifest_source != 0 {
            continue;
        }
        let commit = manifest_commits
            .first()
            .and_then(|c| {
                c.iter()
                    .find(|c| super::correlate::same_commit(&c.id, head))
            })
            .cloned()
            .unwrap_or(CommitFacts {
                id: head.to_string(),
                author: None,
                committed: None,
                message: String::new(),
                web_url: None,
            });
        path.manifest_commit = Linked {
            value: Some(commit),
            rule: LinkRule::HeadAfterBuild,
        };
    }
}

/// The phase of the newest build, for callers deciding how fast to poll.
pub fn in_flight(c: &Composed) -> bool {
    c.view
        .latest
        .build
        .result
        .as_deref()
        .is_some_and(|r| matches!(r, "inProgress" | "notStarted" | "cancelling" | "postponed"))
        || c.view.next_deadline.is_some()
}
