//! The ServiceTrace status the controller wants: a pure function of the current status and what this
//! reconcile learned, written only when it differs from the current one.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::stages::TraceVerdict;
use crate::conditions::Kstatus;
use crate::crd::{ServiceTrace, ServiceTraceStatus};
use crate::reconciler::status_write::WithConditions;

/// `status.lastCheckedTime` is refreshed at least this often even when nothing else changed, so readers
/// can tell a quiet trace from a dead controller without a status write on every poll.
const LAST_CHECKED_REFRESH: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

impl WithConditions for ServiceTraceStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// The status for a verdict: stages, commit ids, conditions, observedGeneration; `lastError` cleared.
pub fn desired_status(
    verdict: &TraceVerdict,
    previous: &ServiceTraceStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> ServiceTraceStatus {
    desired_status_with(verdict, previous, generation, now, |_| {})
}

/// [`desired_status`], with `adjust` run on the verdict's fields before the `lastCheckedTime` rule
/// compares them with the previous status (e.g. [`environment_stages`]), so an adjustment that is the
/// same as last time does not count as a change.
pub fn desired_status_with(
    verdict: &TraceVerdict,
    previous: &ServiceTraceStatus,
    generation: Option<i64>,
    now: Timestamp,
    adjust: impl FnOnce(&mut ServiceTraceStatus),
) -> ServiceTraceStatus {
    let mut next = previous.clone();
    verdict.apply_to(&mut next);
    adjust(&mut next);
    next.last_error = None;
    next.observed_generation = generation;
    next.conditions = verdict
        .kstatus
        .to_conditions(&previous.conditions, generation, Time(now));
    // lastCheckedTime moves with every other change, and at least every LAST_CHECKED_REFRESH.
    let checked = previous.last_checked_time.as_ref().map(|t| t.0);
    let mut unchanged = next.clone();
    unchanged.last_checked_time = previous.last_checked_time.clone();
    let stale = checked.is_none_or(|t| now.duration_since(t) >= LAST_CHECKED_REFRESH);
    next.last_checked_time = if unchanged == *previous && !stale {
        previous.last_checked_time.clone()
    } else {
        Some(Time(now))
    };
    next
}

/// `status` with the conditions of `k` and the object's generation observed.
pub fn with_kstatus(
    mut status: ServiceTraceStatus,
    k: &Kstatus,
    trace: &ServiceTrace,
    now: Timestamp,
) -> ServiceTraceStatus {
    status.conditions = k.to_conditions(&status.conditions, trace.metadata.generation, Time(now));
    status.observed_generation = trace.metadata.generation;
    status
}

/// Trace every environment, in promotion order, with its own deployed object; the verdict is the first
/// environment's that is not Ready (the one holding the change back), else the last one's.
pub fn per_environment_verdict(
    input: &super::stages::TraceInput,
    environments: &[super::stages::DeployedInput],
) -> TraceVerdict {
    let mut last = None;
    for deployed in environments {
        let mut one = input.clone();
        one.deployed = deployed.clone();
        let verdict = super::stages::trace(&one);
        if verdict.kstatus.ready != crate::conditions::ConditionStatus::True {
            return verdict;
        }
        last = Some(verdict);
    }
    last.unwrap_or_else(|| super::stages::trace(input))
}

/// `status.stages` with one deployed entry per environment, each traced with its own deployed object
/// (the verdict's single `deployed` entry is the environment that decided it). The `deployed:`
/// shorthand keeps the one entry named `deployed`; with `environments:` they are `deployed/<name>`, in
/// promotion order, so the stages say the same as `latest.environments` and never name only one of
/// several environments as "the" deployment.
pub fn environment_stages(
    spec: &crate::crd::ServiceTraceSpec,
    input: &super::stages::TraceInput,
    environments: &[super::stages::DeployedInput],
    previous: &[crate::crd::TraceStage],
    desired: &mut ServiceTraceStatus,
    now: Timestamp,
) {
    use super::stages::StageName;
    let deployed = StageName::Deployed.as_str();
    let names: Vec<String> = match &spec.environments {
        Some(envs) => envs
            .iter()
            .take(crate::crd::MAX_ENVIRONMENTS)
            .map(|e| format!("{deployed}/{}", e.name))
            .collect(),
        None => vec![deployed.to_string()],
    };
    let mut entries = Vec::with_capacity(names.len());
    for (name, env) in names.into_iter().zip(environments) {
        let mut one = input.clone();
        one.deployed = env.clone();
        let verdict = super::stages::trace(&one);
        let Some(stage) = verdict
            .stages
            .iter()
            .find(|s| s.name == StageName::Deployed)
        else {
            continue;
        };
        let entry = stage.to_status_named(&name, previous.iter().find(|p| p.name == name), now);
        entries.push(entry);
    }
    if entries.is_empty() {
        return;
    }
    desired.stages.retain(|s| s.name != deployed);
    desired.stages.extend(entries);
}

#[allow(clippy::too_many_arguments)]
/// Fold the flow ([`super::flow::compose`]) into the desired status: `latest`, `summary`, `history`, and,
/// when the verdict is not Ready, the step the flow found failed or stuck as the Stalled reason. Returns
/// what was composed (for Events and the requeue), or `None` when there is no build yet.
pub fn apply_flow(
    spec: &crate::crd::ServiceTraceSpec,
    input: &super::stages::TraceInput,
    reads: &super::flow::compose::FlowReads,
    verdict: &TraceVerdict,
    previous: &ServiceTraceStatus,
    desired: &mut ServiceTraceStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<super::flow::compose::Composed> {
    use super::stages::{StageName, StageState};
    let ci_runs = input.build.runs.as_deref().unwrap_or(&[]);
    let generation_runs = input
        .manifest_generation
        .as_ref()
        .and_then(|g| g.runs.as_deref().ok())
        .unwrap_or(&[]);
    // The "came after" rule already ordered the manifest head after the newest successful build.
    let head_after_build = verdict
        .stages
        .iter()
        .any(|s| s.name == StageName::Manifest && s.state == StageState::Succeeded);
    let manifest_head = verdict
        .manifest_commit_id
        .as_deref()
        .filter(|_| head_after_build);
    let composed = super::flow::compose::compose(
        spec,
        ci_runs,
        generation_runs,
        manifest_head,
        reads,
        &previous.history,
        now,
    )?;
    desired.latest = Some(composed.view.latest.clone());
    desired.summary = Some(composed.view.summary.clone());
    desired.history = composed.history.clone();
    if verdict.kstatus.ready != crate::conditions::ConditionStatus::True {
        if let Some(hold) = composed
            .view
            .failed
            .as_ref()
            .or(composed.view.stalled.as_ref())
        {
            desired.conditions = Kstatus::stalled(hold.reason, hold.message.clone()).to_conditions(
                &previous.conditions,
                generation,
                Time(now),
            );
        }
    }
    super::flow::fit::fit_status(desired);
    Some(composed)
}
