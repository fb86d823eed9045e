//! The PipelineGate decision: a pure function of the runs of one definition on one branch, the policy,
//! the clock and the wait already under way. The controller and `lockstep check` both call it, so the
//! table in DESIGN.md is implemented once, here.
//!
//! Rules, in order:
//! 1. Runs of other definitions or branches are ignored; the rest are sorted newest first
//!    (queue time, then id), whatever order the API returned.
//! 2. No runs → `NoRuns` (waiting; a run may still come).
//! 3. Any run queued or in flight → waiting on the newest such run: `RunQueued` (notStarted, postponed) or
//!    `RunInProgress` (inProgress, cancelling/canceling, and statuses this version does not know, because
//!    a gate that cannot tell should not open). After `policy.timeout` → `TimedOut` (blocked).
//! 4. Otherwise the newest completed run whose result is not in `ignored` decides: an accepted result
//!    opens the gate (`Succeeded`), anything else blocks it (`RunFailed`, `RunCanceled`,
//!    `RunPartiallySucceeded`). If every completed run is ignored → `NoRuns`.
//!
//! Nothing is terminal: a later accepted run reopens a blocked gate, because only the newest runs count.

use std::time::Duration;

use jiff::Timestamp;

use crate::ado::{parse_ado_time, AdoError, Build, BuildResult, BuildStatus};
use crate::crd::{duration_or, AcceptableResult, GatePolicy, IgnorableResult};
use crate::pipeline_key::full_branch_ref;

/// How long a queued or running run may hold the gate when the spec names no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What counts as open, what is skipped, and how long to wait.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Results of the newest completed run that open the gate.
    pub accepted: Vec<BuildResult>,
    /// Results skipped when finding the newest completed run.
    pub ignored: Vec<BuildResult>,
    /// How long a queued or running run may keep the gate waiting.
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self::from_spec(&GatePolicy::default())
    }
}

impl Policy {
    pub fn from_spec(spec: &GatePolicy) -> Policy {
        Policy {
            accepted: spec
                .accepted_results
                .iter()
                .map(|r| match r {
                    AcceptableResult::Succeeded => BuildResult::Succeeded,
                    AcceptableResult::PartiallySucceeded => BuildResult::PartiallySucceeded,
                })
                .collect(),
            ignored: spec
                .ignored_results
                .iter()
                .map(|r| match r {
                    IgnorableResult::Canceled => BuildResult::Canceled,
                    IgnorableResult::Failed => BuildResult::Failed,
                    IgnorableResult::PartiallySucceeded => BuildResult::PartiallySucceeded,
                })
                .collect(),
            timeout: duration_or(&spec.timeout, DEFAULT_TIMEOUT),
        }
    }
}

/// The wait under way: which run the gate waits on, and since when.
///
/// The wait is kept (same `since`) for as long as the newest queued or running run stays the same run;
/// when a different run becomes the newest in flight, a new wait starts at `now`. So a run that is
/// replaced by a newer one gets a fresh timeout, while polling, restarts and webhooks never extend a
/// wait on one run (the controller persists `since` as `status.waitingSince`).
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub run_id: i64,
    pub since: Timestamp,
}

pub struct DecisionInput<'a> {
    /// Runs as the API returned them, in any order, possibly including other definitions or branches.
    pub runs: &'a [Build],
    pub definition_id: i64,
    /// The branch the gate follows; `main` and `refs/heads/main` are the same.
    pub branch: &'a str,
    /// Used in messages; falls back to the definition name in the run, then to the definition id.
    pub pipeline_name: Option<&'a str>,
    pub policy: &'a Policy,
    pub now: Timestamp,
    /// The wait from the previous decision (or `status.waitingSince`), if the gate was waiting.
    pub previous_wait: Option<Waiting>,
}

/// Coarse state: Open ⇒ Ready=True; Waiting ⇒ Reconciling=True; Blocked ⇒ Stalled=True.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Open,
    Waiting,
    Blocked,
}

/// Condition reasons (CamelCase, as kstatus expects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    RunQueued,
    RunInProgress,
    TimedOut,
    Succeeded,
    RunFailed,
    RunCanceled,
    RunPartiallySucceeded,
    NoRuns,
    NotFound,
    AuthenticationFailed,
    ApiUnavailable,
    Suspended,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RunQueued => "RunQueued",
            Self::RunInProgress => "RunInProgress",
            Self::TimedOut => "TimedOut",
            Self::Succeeded => "Succeeded",
            Self::RunFailed => "RunFailed",
            Self::RunCanceled => "RunCanceled",
            Self::RunPartiallySucceeded => "RunPartiallySucceeded",
            Self::NoRuns => "NoRuns",
            Self::NotFound => "NotFound",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::ApiUnavailable => "ApiUnavailable",
            Self::Suspended => "Suspended",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub phase: Phase,
    pub reason: Reason,
    /// One line that names the run and links to it.
    pub message: String,
    /// The newest run on the branch, whatever its state.
    pub latest_run: Option<Build>,
    /// The newest completed run that was not ignored.
    pub last_completed_run: Option<Build>,
    /// The newest run with an accepted result.
    pub last_succeeded_run: Option<Build>,
    /// Set while waiting on a run, and kept when that wait timed out (so the timeout stands until the
    /// run changes).
    pub waiting: Option<Waiting>,
    /// When the current wait times out; `None` when not waiting on a run.
    pub deadline: Option<Timestamp>,
}

impl Verdict {
    /// Blocked for a reason that involves no run (bad credentials, no such pipeline): the runs in status
    /// stay as they were.
    pub fn blocked(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            phase: Phase::Blocked,
            reason,
            message: message.into(),
            latest_run: None,
            last_completed_run: None,
            last_succeeded_run: None,
            waiting: None,
            deadline: None,
        }
    }
}

/// Where a run is in its life, collapsed from the status/result spellings ADO uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunStage {
    Queued,
    Running,
    Completed,
}

fn stage(run: &Build) -> RunStage {
    match run.status {
        Some(BuildStatus::NotStarted | BuildStatus::Postponed) => RunStage::Queued,
        Some(BuildStatus::InProgress | BuildStatus::Cancelling) => RunStage::Running,
        Some(BuildStatus::Completed) => RunStage::Completed,
        // No status, or one this version does not know: a real result means it finished; otherwise
        // assume it is still going rather than open the gate on a guess.
        Some(BuildStatus::None | BuildStatus::All | BuildStatus::Unknown) | None => {
            match run.result {
                Some(r) if r != BuildResult::None => RunStage::Completed,
                _ => RunStage::Running,
            }
        }
    }
}

fn sort_key(run: &Build) -> (Option<Timestamp>, i64) {
    (run.queue_time.as_deref().and_then(parse_ado_time), run.id)
}

/// Decides the gate from the runs; see the module documentation for the rules.
pub fn decide(input: &DecisionInput) -> Verdict {
    let branch = full_branch_ref(input.branch);
    let mut runs: Vec<&Build> = input
        .runs
        .iter()
        .filter(|r| r.definition.as_ref().and_then(|d| d.id) == Some(input.definition_id))
        .filter(|r| {
            r.source_branch
                .as_deref()
                .is_some_and(|b| full_branch_ref(b).eq_ignore_ascii_case(&branch))
        })
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(sort_key(r)));

    let policy = input.policy;
    let name = PipelineName {
        explicit: input.pipeline_name,
        definition_id: input.definition_id,
    };
    let completed = || runs.iter().filter(|r| stage(r) == RunStage::Completed);
    let result_of = |r: &Build| r.result.unwrap_or(BuildResult::Unknown);
    let last_completed = completed()
        .find(|r| !policy.ignored.contains(&result_of(r)))
        .map(|r| (*r).clone());
    let last_succeeded = completed()
        .find(|r| policy.accepted.contains(&result_of(r)))
        .map(|r| (*r).clone());
    let latest = runs.first().map(|r| (*r).clone());

    let verdict = |phase, reason, message| Verdict {
        phase,
        reason,
        message,
        latest_run: latest.clone(),
        last_completed_run: last_completed.clone(),
        last_succeeded_run: last_succeeded.clone(),
        waiting: None,
        deadline: None,
    };

    if runs.is_empty() {
        return verdict(
            Phase::Waiting,
            Reason::NoRuns,
            format!(
                "No runs of {} on {branch} yet: waiting for the first one (check definitionId and branch if one is expected)",
                name.describe(None)
            ),
        );
    }

    if let Some(in_flight) = runs.iter().find(|r| stage(r) != RunStage::Completed) {
        let since = match &input.previous_wait {
            Some(w) if w.run_id == in_flight.id => w.since,
            _ => input.now,
        };
        let deadline = add(since, policy.timeout);
        let queued = stage(in_flight) == RunStage::Queued;
        let state = match in_flight.status {
            Some(BuildStatus::Cancelling) => "being canceled",
            _ if queued => "queued",
            _ => "in progress",
        };
        let run = name.run(in_flight);
        let mut v = if input.now >= deadline {
            verdict(
                Phase::Blocked,
                Reason::TimedOut,
                format!(
                    "{run} is still {state} after {}, the timeout{}",
                    friendly(policy.timeout),
                    link(in_flight)
                ),
            )
        } else {
            verdict(
                Phase::Waiting,
                if queued {
                    Reason::RunQueued
                } else {
                    Reason::RunInProgress
                },
                format!(
                    "{run} is {state}; waiting until {deadline:.0} at most{}",
                    link(in_flight)
                ),
            )
        };
        v.waiting = Some(Waiting {
            run_id: in_flight.id,
            since,
        });
        v.deadline = Some(deadline);
        return v;
    }

    let Some(decisive) = &last_completed else {
        return verdict(
            Phase::Waiting,
            Reason::NoRuns,
            format!(
                "Every completed run of {} on {branch} has an ignored result: waiting for a run that counts",
                name.describe(None)
            ),
        );
    };
    let result = result_of(decisive);
    let run = name.run(decisive);
    let url = link(decisive);
    if policy.accepted.contains(&result) {
        let outcome = match result {
            BuildResult::PartiallySucceeded => "partially succeeded (accepted by the policy)",
            _ => "succeeded",
        };
        return verdict(
            Phase::Open,
            Reason::Succeeded,
            format!("{run} {outcome}{url}"),
        );
    }
    let (reason, outcome) = match result {
        BuildResult::Canceled => (Reason::RunCanceled, "was canceled".to_string()),
        BuildResult::PartiallySucceeded => (
            Reason::RunPartiallySucceeded,
            "partially succeeded, which the policy does not accept".to_string(),
        ),
        BuildResult::Failed => (Reason::RunFailed, "failed".to_string()),
        other => (
            Reason::RunFailed,
            format!("finished with result {}", other.as_str()),
        ),
    };
    verdict(Phase::Blocked, reason, format!("{run} {outcome}{url}"))
}

/// The verdict an ADO error forces: `Some` (blocked) when retrying cannot help — the credentials are
/// rejected, or the project/definition does not exist or the request cannot be made as configured —
/// and `None` for transient errors (429, 5xx, timeouts, unreadable responses), which leave the last
/// verdict standing.
pub fn decide_error(err: &AdoError) -> Option<Verdict> {
    let reason = match err {
        AdoError::Unauthorized { .. } => Reason::AuthenticationFailed,
        AdoError::NotFound { .. } | AdoError::InvalidRequest(_) => Reason::NotFound,
        AdoError::RateLimited { .. }
        | AdoError::Unavailable { .. }
        | AdoError::InvalidResponse { .. } => return None,
    };
    Some(Verdict::blocked(reason, err.to_string()))
}

struct PipelineName<'a> {
    explicit: Option<&'a str>,
    definition_id: i64,
}

impl PipelineName<'_> {
    fn describe(&self, run: Option<&Build>) -> String {
        match self
            .explicit
            .or_else(|| run.and_then(Build::definition_name))
        {
            Some(n) => format!("\"{n}\""),
            None => format!("definition {}", self.definition_id),
        }
    }

    /// `Run 20261122.4 of "base-image"`.
    fn run(&self, run: &Build) -> String {
        let number = run
            .build_number
            .clone()
            .unwrap_or_else(|| format!("#{}", run.id));
        format!("Run {number} of {}", self.describe(Some(run)))
    }
}

fn link(run: &Build) -> String {
    run.web_url().map(|u| format!(": {u}")).unwrap_or_default()
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `30m`, `1h 30m`, `3s`.
fn friendly(d: Duration) -> String {
    jiff::SignedDuration::try_from(d)
        .map(|s| format!("{s:#}"))
        .unwrap_or_else(|_| format!("{}s", d.as_secs()))
}

#[cfg(test)]
mod tests;
