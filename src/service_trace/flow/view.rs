//! The newest build's path as status shows it (`status.latest`, `status.summary`), its history row, and
//! the first step that failed or is stuck, in flow order: HLD update, manifest generation, environments.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::correlate::{same_commit, CorrelatedPath, Linked};
use super::facts::{CommitFacts, PullRequestFacts, RunFacts, RunPhase};
use super::fit::{go_duration, summary, truncate_chars};
use super::history::{EnvHealth, EnvObservation, ARRIVED, PENDING};
use super::stall::{human, overdue, wake_at, Timeouts};
use crate::crd::{
    short_sha, BuildInfo, EnvironmentProgress, HistoryArrival, HistoryEntry, PullRequestInfo,
    RunLink, StepInfo, TracedChange, MAX_MESSAGE_CHARS,
};

pub const WAITING: &str = "Waiting";
pub const IN_PROGRESS: &str = "InProgress";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
pub const STALLED: &str = "Stalled";
pub const PROGRESSING: &str = "Progressing";
pub const SUSPENDED: &str = "Suspended";
pub const UNKNOWN: &str = "Unknown";

/// One configured environment, as messages name it.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvTarget {
    pub name: String,
    /// `Kustomization flux-system/orders-dev`, `Application argocd/orders-prod`, `Deployment shop/orders`.
    pub target: String,
    /// Argo CD destination cluster, when the Application names one.
    pub cluster: Option<String>,
}

/// The source commit's who and where.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceFacts {
    pub author: Option<String>,
    pub commit_url: Option<String>,
    pub pull_request: Option<PullRequestFacts>,
}

/// Everything needed to show one build's path.
#[derive(Clone, Copy, Debug)]
pub struct ViewInput<'a> {
    pub build: &'a RunFacts,
    pub source: &'a SourceFacts,
    /// HLD repository name, when the trace has one.
    pub hld_repository: Option<&'a str>,
    pub manifest_repository: &'a str,
    /// Whether a manifest-generation pipeline is configured.
    pub has_generation: bool,
    /// One correlated path per environment (they differ only when environments have their own
    /// manifest branch or path), in promotion order.
    pub paths: &'a [CorrelatedPath],
    pub envs: &'a [EnvTarget],
    pub observations: &'a [EnvObservation],
    /// The build's history row, with the arrivals recorded so far.
    pub entry: Option<&'a HistoryEntry>,
    pub timeouts: &'a Timeouts,
    pub now: Timestamp,
}

/// Which step holds the flow, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Holdup {
    /// `hld`, `manifest`, or `deployed/<env>`.
    pub step: String,
    /// Condition reason: `HldUpdateFailed`, `HldUpdateStalled`, `ManifestGenerationFailed`,
    /// `ManifestGenerationStalled`, `DeployFailed`, `DeployStalled`.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowView {
    pub latest: TracedChange,
    pub summary: String,
    /// The first failed step in flow order.
    pub failed: Option<Holdup>,
    /// The first stuck step in flow order (only when nothing failed before it).
    pub stalled: Option<Holdup>,
    /// When a step that is waiting now will overrun its timeout: requeue no later than this.
    pub next_deadline: Option<Timestamp>,
}

/// Status times have whole seconds (what the API server keeps), so an unchanged status compares equal.
fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(crate::crd::status_time)
}

fn url(u: Option<&str>) -> Option<String> {
    u.map(|u| truncate_chars(u, MAX_MESSAGE_CHARS))
}

fn run_link(r: &RunFacts) -> RunLink {
    RunLink {
        id: r.id,
        number: r.number.clone(),
        url: url(r.url.as_deref()),
        result: r.result.clone(),
        queue_time: time(r.queue_time),
        start_time: time(r.start_time),
        finish_time: time(r.finish_time),
    }
}

fn pull_request(pr: &PullRequestFacts) -> PullRequestInfo {
    PullRequestInfo {
        id: pr.id,
        title: pr.title.clone(),
        url: url(pr.url.as_deref()),
    }
}

pub fn build_info(b: &RunFacts, source: &SourceFacts) -> BuildInfo {
    BuildInfo {
        id: b.id,
        number: b.number.clone(),
        url: url(b.url.as_deref()),
        result: b.result.clone(),
        commit: b.source_version.clone(),
        commit_url: url(source.commit_url.as_deref()),
        image_tag: b.number.clone(),
        author: source.author.clone(),
        pull_request: source.pull_request.as_ref().map(pull_request),
        queue_time: time(b.queue_time),
        start_time: time(b.start_time),
        finish_time: time(b.finish_time),
    }
}

/// The history row of a build: who, what, and each correlated run and commit; every environment
/// `Pending` (arrivals are merged in by [`super::history::upsert`] and [`super::history::observe`]).
pub fn history_entry(
    b: &RunFacts,
    source: &SourceFacts,
    paths: &[CorrelatedPath],
    envs: &[EnvTarget],
) -> HistoryEntry {
    let first = paths.first();
    let shared_manifest =
        first.and_then(|p| p.manifest_commit.value.as_ref().map(|c| c.id.clone()));
    let environments = envs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let own = paths
                .get(i)
                .and_then(|p| p.manifest_commit.value.as_ref())
                .map(|c| c.id.clone())
                .filter(|c| Some(c) != shared_manifest.as_ref());
            (
                e.name.clone(),
                HistoryArrival {
                    state: PENDING.to_string(),
                    manifest_commit: own,
                    ..Default::default()
                },
            )
        })
        .collect();
    HistoryEntry {
        build_id: b.id,
        image_tag: b.number.clone(),
        build_url: url(b.url.as_deref()),
        commit: b.source_version.clone(),
        author: source.author.clone(),
        pull_request: source.pull_request.as_ref().map(pull_request),
        build_queue_time: time(b.queue_time),
        build_finish_time: time(b.finish_time),
        hld_run: first
            .and_then(|p| p.hld_run.value.as_ref())
            .filter(|r| r.id != b.id)
            .map(run_link),
        hld_commit: first.and_then(|p| p.hld_commit.value.as_ref().map(|c| c.id.clone())),
        manifest_run: first
            .and_then(|p| p.generation_run.value.as_ref())
            .filter(|r| r.id != b.id)
            .map(run_link),
        manifest_commit: shared_manifest,
        environments,
    }
}

fn step(
    state: &str,
    run: &Linked<RunFacts>,
    commit: &Linked<CommitFacts>,
    message: String,
) -> StepInfo {
    let linked_by = if commit.value.is_some() {
        commit.rule
    } else {
        run.rule
    };
    StepInfo {
        state: state.to_string(),
        run: run.value.as_ref().map(run_link),
        commit: commit.value.as_ref().map(|c| c.id.clone()),
        commit_url: commit
            .value
            .as_ref()
            .and_then(|c| url(c.web_url.as_deref())),
        linked_by: Some(linked_by.as_str().to_string()),
        message: Some(truncate_chars(&message, MAX_MESSAGE_CHARS)),
    }
}

fn run_name(r: &RunFacts) -> String {
    r.number.clone().unwrap_or_else(|| r.id.to_string())
}

/// Build the view. Pure: the same input always gives the same answer.
pub fn view(v: &ViewInput) -> FlowView {
    let b = v.build;
    let tag = b.number.clone().unwrap_or_else(|| b.id.to_string());
    let mut failed: Option<Holdup> = None;
    let mut stalled: Option<Holdup> = None;
    let mut next_deadline: Option<Timestamp> = None;
    let mut deadline = |since: Option<Timestamp>, timeout: SignedDuration| {
        if let Some(d) = wake_at(since, timeout, v.now) {
            next_deadline = Some(next_deadline.map_or(d, |n: Timestamp| n.min(d)));
        }
    };
    let hold = |slot: &mut Option<Holdup>, step: &str, reason: &'static str, message: &str| {
        if slot.is_none() {
            *slot = Some(Holdup {
                step: step.to_string(),
                reason,
                message: message.to_string(),
            });
        }
    };
    let built = b.phase == RunPhase::Succeeded;
    let unknown_path = CorrelatedPath {
        hld_run: Linked::unknown(),
        hld_commit: Linked::unknown(),
        generation_run: Linked::unknown(),
        manifest_commit: Linked::unknown(),
    };
    let path = v.paths.first().unwrap_or(&unknown_path);

    // HLD update: build finished → image tag written.
    let mut upstream_done = built;
    let mut upstream_time = b.finish_time;
    let hld_update = v.hld_repository.map(|repo| {
        let (state, message) = if !built {
            (WAITING, format!("waiting for build {tag} to succeed"))
        } else if let Some(c) = &path.hld_commit.value {
            upstream_time = c
                .committed
                .or(path.hld_run.value.as_ref().and_then(|r| r.finish_time))
                .or(upstream_time);
            (
                SUCCEEDED,
                format!(
                    "image tag {tag} written to {repo} in commit {}",
                    short_sha(&c.id)
                ),
            )
        } else {
            upstream_done = false;
            let run = path.hld_run.value.as_ref().filter(|r| r.id != b.id);
            match run.map(|r| r.phase) {
                Some(RunPhase::InProgress) => (
                    IN_PROGRESS,
                    format!(
                        "HLD update {} is running for image tag {tag}",
                        run_name(run.unwrap_or(b))
                    ),
                ),
                Some(RunPhase::Failed) => {
                    let r = run.unwrap_or(b);
                    let m = format!(
                        "HLD update {} failed: image tag {tag} not written to {repo}{}",
                        run_name(r),
                        r.url
                            .as_deref()
                            .map(|u| format!(": {u}"))
                            .unwrap_or_default()
                    );
                    hold(&mut failed, "hld", "HldUpdateFailed", &m);
                    (FAILED, m)
                }
                _ if overdue(b.finish_time, v.timeouts.hld, v.now) => {
                    let m = format!(
                        "image tag {tag} not written to {repo} within {} of the build",
                        human(v.timeouts.hld)
                    );
                    hold(&mut stalled, "hld", "HldUpdateStalled", &m);
                    (STALLED, m)
                }
                _ => {
                    deadline(b.finish_time, v.timeouts.hld);
                    (WAITING, format!("waiting for image tag {tag} in {repo}"))
                }
            }
        };
        step(state, &path.hld_run, &path.hld_commit, message)
    });

    // Manifest generation: HLD commit (or build) → manifest commit.
    let manifest_repo = v.manifest_repository;
    let source_name = path
        .hld_commit
        .value
        .as_ref()
        .map(|c| format!("HLD commit {}", short_sha(&c.id)))
        .unwrap_or_else(|| format!("image tag {tag}"));
    let manifest_generation = {
        let (state, message) = if !upstream_done {
            (
                WAITING,
                format!(
                    "waiting for {}",
                    if built { "the HLD update" } else { "the build" }
                ),
            )
        } else if let Some(c) = &path.manifest_commit.value {
            (
                SUCCEEDED,
                format!(
                    "{source_name} rendered into {manifest_repo} commit {}",
                    short_sha(&c.id)
                ),
            )
        } else {
            let run = path.generation_run.value.as_ref().filter(|r| r.id != b.id);
            match run.map(|r| r.phase) {
                Some(RunPhase::InProgress) => (
                    IN_PROGRESS,
                    format!(
                        "manifest generation {} is running for {source_name}",
                        run_name(run.unwrap_or(b))
                    ),
                ),
                Some(RunPhase::Failed) => {
                    let r = run.unwrap_or(b);
                    let m = format!(
                        "manifest generation {} failed for {source_name}{}",
                        run_name(r),
                        r.url
                            .as_deref()
                            .map(|u| format!(": {u}"))
                            .unwrap_or_default()
                    );
                    hold(&mut failed, "manifest", "ManifestGenerationFailed", &m);
                    (FAILED, m)
                }
                _ if overdue(upstream_time, v.timeouts.manifest, v.now) => {
                    let m = format!(
                        "{source_name} not rendered into {manifest_repo} within {}",
                        human(v.timeouts.manifest)
                    );
                    hold(&mut stalled, "manifest", "ManifestGenerationStalled", &m);
                    (STALLED, m)
                }
                _ => {
                    deadline(upstream_time, v.timeouts.manifest);
                    (
                        WAITING,
                        format!("waiting for {source_name} in {manifest_repo}"),
                    )
                }
            }
        };
        let show =
            v.has_generation || v.hld_repository.is_some() || path.manifest_commit.value.is_some();
        show.then(|| step(state, &path.generation_run, &path.manifest_commit, message))
    };

    // Environments, in promotion order.
    let mut environments = Vec::with_capacity(v.envs.len());
    let mut previous_arrival: Option<Timestamp> = None;
    let mut previous_arrived = true;
    for (i, env) in v.envs.iter().enumerate() {
        let env_path = v.paths.get(i).unwrap_or(path);
        let obs = v.observations.iter().find(|o| o.name == env.name);
        let arrival = v.entry.and_then(|e| e.environments.get(&env.name));
        let manifest = env_path.manifest_commit.value.as_ref();
        let step_name = format!("deployed/{}", env.name);
        let by_tag = obs.is_some_and(|o| o.by_image_tag);
        let what = if by_tag {
            format!("image tag {tag}")
        } else {
            manifest.map_or_else(
                || "the manifests".to_string(),
                |m| format!("manifest {}", short_sha(&m.id)),
            )
        };
        let mut progress = EnvironmentProgress {
            name: env.name.clone(),
            target: Some(env.target.clone()),
            cluster: env.cluster.clone(),
            revision: obs.and_then(|o| o.revision.clone()),
            manifest_commit: manifest.map(|m| m.id.clone()),
            ..Default::default()
        };
        let arrived = arrival.filter(|a| a.state == ARRIVED);
        if let Some(a) = arrived {
            progress.state = ARRIVED.to_string();
            progress.arrived_at = a.arrived_at.clone();
            progress.lead_time = a.lead_time.clone();
            progress.message = Some(format!("{what} runs in {} ({})", env.name, env.target));
            previous_arrival = a.arrived_at.as_ref().map(|t| t.0);
            environments.push(progress);
            continue;
        }
        // The clock of an environment starts when its input exists: the manifest commit (for a workload,
        // the image-tag build), or the previous environment's arrival if that came later.
        let input_time = if by_tag {
            b.finish_time
        } else {
            manifest.and_then(|m| m.committed)
        };
        let since = match (input_time, previous_arrival) {
            (Some(a), Some(p)) => Some(a.max(p)),
            (a, _) => a,
        };
        let ready_input = built && (by_tag || manifest.is_some());
        let (state, message) = match obs.map(|o| &o.health) {
            Some(EnvHealth::Failed(why)) if ready_input => {
                // The agent may have failed on an older build's revision (history names that build);
                // say which, so the message does not pin the failure on this build.
                let other = obs
                    .and_then(|o| o.attempted.as_deref())
                    .filter(|a| !by_tag && manifest.is_some_and(|m| !same_commit(&m.id, a)))
                    .filter(|_| arrival.is_none_or(|a| a.state != FAILED));
                let m = match other {
                    Some(a) => format!(
                        "{what} not applied by {} ({}): it failed applying {}: {why}",
                        env.target,
                        env.name,
                        short_sha(a)
                    ),
                    None => format!("{what} not applied by {} ({}): {why}", env.target, env.name),
                };
                hold(&mut failed, &step_name, "DeployFailed", &m);
                (FAILED, m)
            }
            Some(EnvHealth::Suspended) => (
                SUSPENDED,
                format!("{} ({}) is suspended", env.target, env.name),
            ),
            Some(EnvHealth::Unreadable(why)) => (UNKNOWN, format!("{}: {why}", env.target)),
            _ if !ready_input => (WAITING, format!("waiting for {what}")),
            _ if !previous_arrived => (WAITING, format!("waiting for {what} to be promoted")),
            _ if overdue(
                since,
                v.timeouts
                    .environments
                    .get(i)
                    .copied()
                    .unwrap_or(super::stall::DEFAULT_TIMEOUT),
                v.now,
            ) =>
            {
                let timeout = v
                    .timeouts
                    .environments
                    .get(i)
                    .copied()
                    .unwrap_or(super::stall::DEFAULT_TIMEOUT);
                let after = if previous_arrival.is_some_and(|p| Some(p) == since) {
                    format!(
                        "of reaching {}",
                        v.envs
                            .get(i.wrapping_sub(1))
                            .map_or("the previous environment", |p| p.name.as_str())
                    )
                } else if by_tag {
                    "of the build".to_string()
                } else {
                    "of the manifest commit".to_string()
                };
                let m = format!(
                    "{what} not applied by {} ({}) within {} {after}",
                    env.target,
                    env.name,
                    human(timeout)
                );
                hold(&mut stalled, &step_name, "DeployStalled", &m);
                (STALLED, m)
            }
            _ => {
                let timeout = v
                    .timeouts
                    .environments
                    .get(i)
                    .copied()
                    .unwrap_or(super::stall::DEFAULT_TIMEOUT);
                deadline(since, timeout);
                (
                    PROGRESSING,
                    format!("{what} not yet applied by {} ({})", env.target, env.name),
                )
            }
        };
        progress.state = state.to_string();
        progress.message = Some(truncate_chars(&message, MAX_MESSAGE_CHARS));
        previous_arrived = false;
        previous_arrival = None;
        environments.push(progress);
    }

    // A failure upstream of a stuck step explains it; report the stall only when nothing failed first.
    if let (Some(f), Some(s)) = (&failed, &stalled) {
        if order(&f.step, v.envs) <= order(&s.step, v.envs) {
            stalled = None;
        }
    }
    let latest = TracedChange {
        build: build_info(b, v.source),
        hld_update,
        manifest_generation,
        environments,
    };
    FlowView {
        summary: summary(&latest.environments),
        latest,
        failed,
        stalled,
        next_deadline,
    }
}

/// Flow order of a step name, for "which came first".
fn order(step: &str, envs: &[EnvTarget]) -> usize {
    match step {
        "hld" => 0,
        "manifest" => 1,
        other => {
            2 + envs
                .iter()
                .position(|e| other.strip_prefix("deployed/") == Some(e.name.as_str()))
                .unwrap_or(envs.len())
        }
    }
}

/// Lead time of an arrival, from the build's queue time.
pub fn lead_time(queued: Option<Timestamp>, arrived: Timestamp) -> Option<String> {
    queued.map(|q| go_duration(arrived.duration_since(q)))
}
