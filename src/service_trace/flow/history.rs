//! `status.history`: per build, when it arrived in each environment, or that it was superseded or
//! failed there. Arrivals are recorded the first time lockstep sees them and never moved afterwards.

use jiff::Timestamp;

use super::correlate::contains;
use super::facts::CommitFacts;
use super::fit::go_duration;
use crate::crd::{HistoryArrival, HistoryEntry};

pub const ARRIVED: &str = "Arrived";
pub const SUPERSEDED: &str = "Superseded";
pub const FAILED: &str = "Failed";
pub const PENDING: &str = "Pending";

/// How the agent running an environment is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvHealth {
    /// Applied and healthy (Flux Ready, Argo CD Synced + Healthy, rollout complete).
    Settled,
    /// Applying, or health checks not yet passed.
    Progressing,
    /// The agent reported a failure (the message says which).
    Failed(String),
    Suspended,
    /// The object could not be read.
    Unreadable(String),
}

/// What one environment runs, as the reconciler read it.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvObservation {
    pub name: String,
    /// The manifest commit it runs (Flux `lastAppliedRevision`, Argo CD `sync.revision`), or for a
    /// workload the image tag.
    pub revision: Option<String>,
    /// What the agent last tried to apply, when it says (Flux `lastAttemptedRevision`, Argo CD
    /// `operationState.syncResult.revision`): names the build a failure belongs to.
    pub attempted: Option<String>,
    pub health: EnvHealth,
    /// The environment is a workload: revisions are image tags, not commits.
    pub by_image_tag: bool,
}

/// One environment's observation together with its manifest branch's recent commits (newest first).
#[derive(Clone, Copy, Debug)]
pub struct EnvView<'a> {
    pub obs: &'a EnvObservation,
    pub manifest_commits: &'a [CommitFacts],
}

/// Insert a build's entry, or refresh an existing one, keeping arrivals already recorded; entries stay
/// newest first (by build id) and at most `limit`.
pub fn upsert(history: &mut Vec<HistoryEntry>, mut entry: HistoryEntry, limit: usize) {
    if let Some(old) = history.iter_mut().find(|e| e.build_id == entry.build_id) {
        for (env, arrival) in std::mem::take(&mut old.environments) {
            let fresh = entry.environments.entry(env).or_default();
            if arrival.state != PENDING || fresh.state.is_empty() {
                let manifest_commit = fresh
                    .manifest_commit
                    .take()
                    .or(arrival.manifest_commit.clone());
                *fresh = HistoryArrival {
                    manifest_commit,
                    ..arrival
                };
            }
        }
        // Links found later fill gaps; a link already recorded is not replaced by "unknown".
        entry.hld_run = entry.hld_run.or(old.hld_run.take());
        entry.hld_commit = entry.hld_commit.or(old.hld_commit.take());
        entry.manifest_run = entry.manifest_run.or(old.manifest_run.take());
        entry.manifest_commit = entry.manifest_commit.or(old.manifest_commit.take());
        entry.author = entry.author.or(old.author.take());
        entry.pull_request = entry.pull_request.or(old.pull_request.take());
        *old = entry;
    } else {
        history.push(entry);
    }
    history.sort_by_key(|e| std::cmp::Reverse(e.build_id));
    history.truncate(limit);
}

/// Make sure every entry has a row for every environment (new environments start `Pending`) and
/// none for environments no longer configured.
pub fn align_environments(history: &mut [HistoryEntry], names: &[&str]) {
    for e in history.iter_mut() {
        e.environments.retain(|k, _| names.contains(&k.as_str()));
        for n in names {
            e.environments
                .entry((*n).to_string())
                .or_insert_with(|| HistoryArrival {
                    state: PENDING.to_string(),
                    ..Default::default()
                });
        }
    }
}

/// What the entry expects the environment to run: its manifest commit, or for a workload its tag.
fn expected<'e>(entry: &'e HistoryEntry, env: &str, by_image_tag: bool) -> Option<&'e str> {
    if by_image_tag {
        return entry.image_tag.as_deref();
    }
    entry
        .environments
        .get(env)
        .and_then(|a| a.manifest_commit.as_deref())
        .or(entry.manifest_commit.as_deref())
}

/// The newest entry whose change a branch (or workload) at `revision` contains.
fn newest_contained(history: &[HistoryEntry], view: &EnvView, revision: &str) -> Option<usize> {
    history.iter().position(
        |e| match expected(e, &view.obs.name, view.obs.by_image_tag) {
            Some(want) if view.obs.by_image_tag => want == revision,
            Some(want) => contains(view.manifest_commits, revision, want) == Some(true),
            None => false,
        },
    )
}

/// Apply what each environment runs now to every entry.
pub fn observe(history: &mut [HistoryEntry], envs: &[EnvView], now: Timestamp) {
    for view in envs {
        let name = view.obs.name.as_str();
        let current = match (&view.obs.health, view.obs.revision.as_deref()) {
            (EnvHealth::Settled, Some(rev)) => newest_contained(history, view, rev),
            _ => None,
        };
        if let Some(cur) = current {
            for (i, entry) in history.iter_mut().enumerate().skip(cur) {
                let queued = entry.build_queue_time.as_ref().map(|t| t.0);
                let Some(a) = entry.environments.get_mut(name) else {
                    continue;
                };
                if i == cur && a.state != ARRIVED {
                    a.state = ARRIVED.to_string();
                    a.arrived_at = Some(crate::crd::status_time(now));
                    a.lead_time = queued.map(|q| go_duration(now.duration_since(q)));
                    a.message = None;
                } else if i > cur && a.state == PENDING {
                    a.state = SUPERSEDED.to_string();
                }
            }
        }
        if let EnvHealth::Failed(message) = &view.obs.health {
            // The failure belongs to the build the agent tried to apply; without that, to the newest
            // build not yet there.
            let target = match view.obs.attempted.as_deref() {
                Some(rev) => newest_contained(history, view, rev),
                None => history
                    .iter()
                    .position(|e| e.environments.get(name).is_some_and(|a| a.state != ARRIVED)),
            };
            if let Some(a) = target
                .and_then(|t| history.get_mut(t))
                .and_then(|e| e.environments.get_mut(name))
                .filter(|a| a.state != ARRIVED)
            {
                a.state = FAILED.to_string();
                a.message = Some(message.clone());
            }
        }
    }
}
