//! The PipelineGate status the controller wants, and the Events a change deserves: a pure function of the
//! current status and what this reconcile learned. The reconciler writes the result only when it differs
//! from the current status, so everything here is deterministic for equal inputs (times are whole seconds,
//! as the API server stores them).
//!
//! `lastCheckedTime` is the one field that would change on every poll. Writing it each time would cost
//! one status write per gate per period even when nothing happened, so it moves only when some other part
//! of the status changes, or once it is older than half of `staleAfter` (so the field stays meaningful and
//! a restarted controller can still tell how stale its last read is). Staleness itself is judged from the
//! reconciler's in-memory time of the last successful read, which is exact.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::decision::{Phase, Reason, Verdict, Waiting};
use crate::conditions::{self, ConditionStatus, Kstatus, READY};
use crate::crd::{run_summary, status_time as time, whole_seconds, PipelineGateStatus};
use crate::reconciler::events::reasons;
use crate::reconciler::status_write::WithConditions;

/// What this reconcile learned: the one type between reading and status.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A verdict. `read_ok`: it came from a successful Builds List (not from an error or a missing Secret),
    /// so its runs replace the ones in status and `lastCheckedTime` may move.
    Verdict {
        verdict: Box<Verdict>,
        read_ok: bool,
    },
    /// A transient Azure DevOps error: the last verdict stands. `retry_after`: how long Azure DevOps
    /// asked to be left alone (the requeue honours it; status does not show it).
    Transient {
        error: String,
        retry_after: Option<std::time::Duration>,
    },
    /// `spec.suspend`: nothing was read.
    Suspended,
}

impl Outcome {
    /// A verdict reached without a successful Builds List (bad credentials, no such pipeline).
    pub fn unread(verdict: Verdict) -> Self {
        Self::Verdict {
            verdict: Box::new(verdict),
            read_ok: false,
        }
    }
}

impl WithConditions for PipelineGateStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// Inputs besides the outcome.
#[derive(Clone, Debug)]
pub struct StatusInput<'a> {
    pub current: Option<&'a PipelineGateStatus>,
    pub generation: Option<i64>,
    /// Whole seconds.
    pub now: Timestamp,
    pub stale_after: Duration,
    /// The last verdict this process reached from a read, if any (survives nothing; `lastCheckedTime` in
    /// status covers restarts).
    pub last_success: Option<Timestamp>,
}

/// Severity of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// An Event to record on the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateEvent {
    pub severity: Severity,
    pub reason: &'static str,
    pub note: String,
}

/// The status to converge on and the Events that go with reaching it.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub status: PipelineGateStatus,
    pub events: Vec<GateEvent>,
}

/// The wait recorded in status, to hand back to the decision so a restart keeps the deadline.
pub fn previous_wait(status: Option<&PipelineGateStatus>) -> Option<Waiting> {
    let status = status?;
    Some(Waiting {
        run_id: status.latest_run.as_ref()?.id,
        since: status.waiting_since.as_ref()?.0,
    })
}

fn kstatus_for(verdict: &Verdict) -> Kstatus {
    let reason = verdict.reason.as_str();
    match verdict.phase {
        Phase::Open => Kstatus::ready(reason, verdict.message.clone()),
        Phase::Waiting => Kstatus::in_progress(reason, verdict.message.clone()),
        Phase::Blocked => Kstatus::stalled(reason, verdict.message.clone()),
    }
}

/// The status and Events for this reconcile.
pub fn desired(input: &StatusInput, outcome: &Outcome) -> Desired {
    let current = input.current.cloned().unwrap_or_default();
    let now = time(input.now);
    let mut events = Vec::new();
    let mut next = current.clone();
    next.observed_generation = input.generation;

    match outcome {
        Outcome::Verdict { verdict, read_ok } => {
            next.conditions = kstatus_for(verdict).to_conditions(
                &current.conditions,
                input.generation,
                now.clone(),
            );
            if *read_ok {
                let summary = |build| Arc::new(run_summary(build));
                next.latest_run = verdict.latest_run.as_ref().map(summary);
                next.last_completed_run = verdict.last_completed_run.as_ref().map(summary);
                next.last_succeeded_run = verdict.last_succeeded_run.as_ref().map(summary);
                next.share_equal_runs();
            }
            next.waiting_since = verdict.waiting.as_ref().map(|w| time(w.since));
            next.last_error = None;
            if let Some(event) = transition_event(&current, verdict) {
                events.push(event);
            }
        }
        Outcome::Transient { error, .. } => {
            next.last_error = Some(error.clone());
            if current.last_error.as_deref() != Some(error.as_str()) {
                events.push(GateEvent {
                    severity: Severity::Warning,
                    reason: reasons::AZURE_DEVOPS_ERROR,
                    note: format!("{error} (the last verdict stands)"),
                });
            }
            let last_read = [
                input.last_success,
                current.last_checked_time.as_ref().map(|t| t.0),
            ]
            .into_iter()
            .flatten()
            .max();
            let had_verdict = conditions::find(&current.conditions, READY).is_some();
            let stale = match last_read {
                Some(at) => input.now.duration_since(at).unsigned_abs() >= input.stale_after,
                None => true,
            };
            if stale || !had_verdict {
                let since = last_read.map_or_else(
                    || "lockstep started".to_string(),
                    |t| format!("the last successful read at {}", whole_seconds(t)),
                );
                let message =
                    format!("Azure DevOps has not answered successfully since {since}: {error}");
                let was_unknown = conditions::find(&current.conditions, READY)
                    .is_some_and(|c| c.reason == Reason::ApiUnavailable.as_str());
                next.conditions =
                    Kstatus::unknown(Reason::ApiUnavailable.as_str(), message.clone())
                        .to_conditions(&current.conditions, input.generation, now.clone());
                if !was_unknown {
                    events.push(GateEvent {
                        severity: Severity::Warning,
                        reason: reasons::API_UNAVAILABLE,
                        note: message,
                    });
                }
            } else {
                for c in &mut next.conditions {
                    c.observed_generation = input.generation;
                }
            }
        }
        Outcome::Suspended => {
            next.conditions = Kstatus::suspended(&current.conditions).to_conditions(
                &current.conditions,
                input.generation,
                now.clone(),
            );
        }
    }

    // Any verdict is current as of now, runs or not (rejected credentials, a missing pipeline): the
    // staleAfter clock that turns Ready Unknown counts from here, and it is in status so a restart keeps it.
    if matches!(outcome, Outcome::Verdict { .. }) {
        let refresh_due = current
            .last_checked_time
            .as_ref()
            .is_none_or(|t| input.now.duration_since(t.0).unsigned_abs() >= input.stale_after / 2);
        if refresh_due || next != current {
            next.last_checked_time = Some(now);
        }
    }
    Desired {
        status: next,
        events,
    }
}

/// The Event for a change of verdict: a different Ready status, reason, or run.
fn transition_event(current: &PipelineGateStatus, verdict: &Verdict) -> Option<GateEvent> {
    let new_ready = kstatus_for(verdict).ready;
    let old = conditions::find(&current.conditions, READY);
    let same_state = old.is_some_and(|c| {
        ConditionStatus::parse(&c.status) == new_ready && c.reason == verdict.reason.as_str()
    });
    let new_run = verdict.latest_run.as_ref().map(|r| r.id);
    let old_run = current.latest_run.as_ref().map(|r| r.id);
    // Errors that come without runs (auth, not found) keep the runs in status; compare on state only.
    let same_run = verdict.latest_run.is_none() || new_run == old_run;
    if same_state && same_run {
        return None;
    }
    let (severity, reason) = match (verdict.phase, verdict.reason) {
        (Phase::Open, _) => (Severity::Normal, reasons::GATE_OPENED),
        (Phase::Waiting, _) => (Severity::Normal, reasons::GATE_WAITING),
        (_, Reason::TimedOut) => (Severity::Warning, reasons::TIMED_OUT),
        (_, Reason::AuthenticationFailed) => (Severity::Warning, reasons::AUTH_FAILED),
        (Phase::Blocked, _) => (Severity::Warning, reasons::GATE_BLOCKED),
    };
    Some(GateEvent {
        severity,
        reason,
        note: verdict.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ado::{Build, BuildResult, BuildStatus, DefinitionRef};
    use crate::conditions::{RECONCILING, STALLED};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn build(id: i64, status: BuildStatus, result: Option<BuildResult>) -> Build {
        serde_json::from_value::<Build>(serde_json::json!({
            "id": id,
            "buildNumber": format!("20261122.{id}"),
            "sourceBranch": "refs/heads/main",
            "sourceVersion": "0123456789abcdef0123456789abcdef01234567",
            "queueTime": "2026-11-22T10:00:00.1234567Z",
            "_links": {"web": {"href": format!("https://dev.azure.com/o/p/_build/results?buildId={id}")}},
        }))
        .map(|mut b| {
            b.status = Some(status);
            b.result = result;
            b.definition = Some(DefinitionRef {
                id: Some(5),
                name: Some("base".into()),
                project: None,
            });
            b
        })
        .unwrap()
    }

    fn verdict(phase: Phase, reason: Reason, run: Option<Build>) -> Verdict {
        Verdict {
            phase,
            reason,
            message: format!("{} message", reason.as_str()),
            latest_run: run.clone(),
            last_completed_run: None,
            last_succeeded_run: if phase == Phase::Open { run } else { None },
            waiting: None,
            deadline: None,
        }
    }

    fn input(current: Option<&PipelineGateStatus>, now: i64) -> StatusInput<'_> {
        StatusInput {
            current,
            generation: Some(1),
            now: ts(now),
            stale_after: Duration::from_secs(600),
            last_success: None,
        }
    }

    fn ready(status: &PipelineGateStatus) -> (String, String) {
        let c = conditions::find(&status.conditions, READY).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn first_verdict_writes_everything_and_one_event() {
        let v = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                7,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let d = desired(
            &input(None, 1000),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        );
        assert_eq!(d.status.observed_generation, Some(1));
        assert_eq!(ready(&d.status), ("True".into(), "Succeeded".into()));
        let run = d.status.latest_run.as_ref().unwrap();
        assert_eq!(run.commit.as_deref(), Some("0123456"));
        assert_eq!(run.status.as_deref(), Some("completed"));
        assert_eq!(run.pipeline.as_deref(), Some("base"));
        // Fractional seconds from ADO are dropped, as the API server would.
        assert_eq!(
            run.queue_time.as_ref().unwrap().0,
            "2026-11-22T10:00:00Z".parse().unwrap()
        );
        assert_eq!(d.status.last_checked_time, Some(Time(ts(1000))));
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].reason, "GateOpened");
        assert_eq!(d.events[0].severity, Severity::Normal);
    }

    #[test]
    fn same_verdict_later_changes_nothing_and_records_no_event() {
        let v = verdict(
            Phase::Waiting,
            Reason::RunInProgress,
            Some(build(7, BuildStatus::InProgress, None)),
        );
        let o = Outcome::Verdict {
            verdict: Box::new(v.clone()),
            read_ok: true,
        };
        let first = desired(&input(None, 1000), &o).status;
        let again = desired(&input(Some(&first), 1010), &o);
        assert_eq!(again.status, first);
        assert!(again.events.is_empty());
    }

    #[test]
    fn last_checked_time_is_refreshed_after_half_of_stale_after() {
        let v = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                7,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let o = Outcome::Verdict {
            verdict: Box::new(v.clone()),
            read_ok: true,
        };
        let first = desired(&input(None, 1000), &o).status;
        assert_eq!(desired(&input(Some(&first), 1299), &o).status, first);
        let later = desired(&input(Some(&first), 1300), &o).status;
        assert_eq!(later.last_checked_time, Some(Time(ts(1300))));
        // Conditions keep their transition time.
        assert_eq!(later.conditions, first.conditions);
    }

    #[test]
    fn waiting_since_comes_from_the_verdict_and_is_read_back() {
        let mut v = verdict(
            Phase::Waiting,
            Reason::RunQueued,
            Some(build(9, BuildStatus::NotStarted, None)),
        );
        v.waiting = Some(Waiting {
            run_id: 9,
            since: ts(500),
        });
        let d = desired(
            &input(None, 1000),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        );
        assert_eq!(d.status.waiting_since, Some(Time(ts(500))));
        assert_eq!(
            previous_wait(Some(&d.status)),
            Some(Waiting {
                run_id: 9,
                since: ts(500)
            })
        );
        assert_eq!(previous_wait(None), None);
        assert_eq!(previous_wait(Some(&PipelineGateStatus::default())), None);
    }

    #[test]
    fn events_name_each_kind_of_transition() {
        let cases = [
            (
                Phase::Waiting,
                Reason::RunQueued,
                "GateWaiting",
                Severity::Normal,
            ),
            (
                Phase::Blocked,
                Reason::RunFailed,
                "GateBlocked",
                Severity::Warning,
            ),
            (
                Phase::Blocked,
                Reason::RunCanceled,
                "GateBlocked",
                Severity::Warning,
            ),
            (
                Phase::Blocked,
                Reason::NotFound,
                "GateBlocked",
                Severity::Warning,
            ),
            (
                Phase::Blocked,
                Reason::TimedOut,
                "TimedOut",
                Severity::Warning,
            ),
            (
                Phase::Blocked,
                Reason::AuthenticationFailed,
                "AuthFailed",
                Severity::Warning,
            ),
            (
                Phase::Open,
                Reason::Succeeded,
                "GateOpened",
                Severity::Normal,
            ),
        ];
        for (phase, reason, event, severity) in cases {
            let v = verdict(phase, reason, Some(build(1, BuildStatus::Completed, None)));
            let d = desired(
                &input(None, 10),
                &Outcome::Verdict {
                    verdict: Box::new(v.clone()),
                    read_ok: true,
                },
            );
            assert_eq!(
                d.events,
                vec![GateEvent {
                    severity,
                    reason: event,
                    note: v.message.clone()
                }]
            );
        }
    }

    #[test]
    fn a_new_run_in_the_same_state_is_a_transition() {
        let v1 = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                1,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let s1 = desired(
            &input(None, 10),
            &Outcome::Verdict {
                verdict: Box::new(v1.clone()),
                read_ok: true,
            },
        )
        .status;
        let v2 = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                2,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let d = desired(
            &input(Some(&s1), 20),
            &Outcome::Verdict {
                verdict: Box::new(v2.clone()),
                read_ok: true,
            },
        );
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.status.latest_run.as_ref().unwrap().id, 2);
        // Ready did not flip, so its transition time stays.
        assert_eq!(
            conditions::find(&d.status.conditions, READY)
                .unwrap()
                .last_transition_time,
            Time(ts(10))
        );
    }

    #[test]
    fn errors_without_runs_keep_the_runs_in_status() {
        let v1 = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                1,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let s1 = desired(
            &input(None, 10),
            &Outcome::Verdict {
                verdict: Box::new(v1.clone()),
                read_ok: true,
            },
        )
        .status;
        let auth = verdict(Phase::Blocked, Reason::AuthenticationFailed, None);
        let d = desired(
            &input(Some(&s1), 20),
            &Outcome::Verdict {
                verdict: Box::new(auth.clone()),
                read_ok: false,
            },
        );
        assert_eq!(d.status.latest_run, s1.latest_run);
        assert_eq!(
            d.status.last_checked_time.as_ref().map(|t| t.0),
            Some(ts(20)),
            "the verdict is current: staleAfter counts from here"
        );
        assert_eq!(
            ready(&d.status),
            ("False".into(), "AuthenticationFailed".into())
        );
        let stalled = conditions::find(&d.status.conditions, STALLED).unwrap();
        assert_eq!(stalled.status, "True");
        assert_eq!(d.events[0].reason, "AuthFailed");
        // Repeating the failure is not a new transition.
        let again = desired(
            &input(Some(&d.status), 30),
            &Outcome::Verdict {
                verdict: Box::new(auth.clone()),
                read_ok: false,
            },
        );
        assert!(again.events.is_empty());
        assert_eq!(again.status, d.status);
    }

    #[test]
    fn transient_error_keeps_the_verdict_records_last_error_and_warns_once() {
        let v = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                1,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let s1 = desired(
            &input(None, 1000),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        )
        .status;
        let err = Outcome::Transient {
            error: "Azure DevOps is unavailable (HTTP 503)".into(),
            retry_after: None,
        };
        let d = desired(&input(Some(&s1), 1010), &err);
        assert_eq!(d.status.conditions, s1.conditions);
        assert_eq!(
            d.status.last_error.as_deref(),
            Some("Azure DevOps is unavailable (HTTP 503)")
        );
        assert_eq!(d.events.len(), 1);
        assert_eq!(
            (d.events[0].reason, d.events[0].severity),
            ("AzureDevOpsError", Severity::Warning)
        );
        let again = desired(&input(Some(&d.status), 1020), &err);
        assert_eq!(again.status, d.status);
        assert!(again.events.is_empty(), "not repeated every poll");
        // The next successful read clears lastError.
        let ok = desired(
            &input(Some(&d.status), 1030),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        );
        assert_eq!(ok.status.last_error, None);
        assert!(ok.events.is_empty(), "still the same verdict");
    }

    #[test]
    fn transient_errors_past_stale_after_make_ready_unknown() {
        let v = verdict(
            Phase::Open,
            Reason::Succeeded,
            Some(build(
                1,
                BuildStatus::Completed,
                Some(BuildResult::Succeeded),
            )),
        );
        let s1 = desired(
            &input(None, 1000),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        )
        .status;
        let err = Outcome::Transient {
            error: "down".into(),
            retry_after: None,
        };
        let mut i = input(Some(&s1), 1599);
        i.last_success = Some(ts(1000));
        assert_eq!(
            ready(&desired(&i, &err).status),
            ("True".into(), "Succeeded".into())
        );
        i.now = ts(1600);
        let d = desired(&i, &err);
        assert_eq!(
            ready(&d.status),
            ("Unknown".into(), "ApiUnavailable".into())
        );
        assert!(d.events.iter().any(|e| e.reason == "ApiUnavailable"));
        assert_eq!(
            conditions::find(&d.status.conditions, RECONCILING)
                .unwrap()
                .status,
            "False"
        );
        // Staying unknown is not a new event.
        let again = desired(
            &StatusInput {
                current: Some(&d.status),
                now: ts(1700),
                ..i.clone()
            },
            &err,
        );
        assert!(again.events.is_empty());
        // A successful read restores the verdict.
        let back = desired(
            &input(Some(&d.status), 1800),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        );
        assert_eq!(ready(&back.status), ("True".into(), "Succeeded".into()));
        assert_eq!(back.events[0].reason, "GateOpened");
    }

    #[test]
    fn the_in_memory_last_success_beats_an_old_last_checked_time() {
        let v = verdict(Phase::Open, Reason::Succeeded, None);
        let s1 = desired(
            &input(None, 1000),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        )
        .status;
        let mut i = input(Some(&s1), 1700);
        i.last_success = Some(ts(1290));
        let d = desired(
            &i,
            &Outcome::Transient {
                error: "down".into(),
                retry_after: None,
            },
        );
        assert_eq!(ready(&d.status).0, "True");
    }

    #[test]
    fn a_verdict_without_runs_still_starts_the_stale_after_clock() {
        // Rejected credentials (or a missing pipeline) block the gate from an Azure DevOps answer that
        // carries no runs. 503s a minute later must not turn it Unknown: staleAfter (600 s) counts from
        // that answer, and the time is in status, so a restarted process (no in-memory last read) agrees.
        let v = verdict(Phase::Blocked, Reason::AuthenticationFailed, None);
        let s1 = desired(&input(None, 1000), &Outcome::unread(v)).status;
        let err = Outcome::Transient {
            error: "503 Service Unavailable".into(),
            retry_after: None,
        };
        let d = desired(&input(Some(&s1), 1060), &err);
        assert_eq!(
            ready(&d.status),
            ("False".into(), "AuthenticationFailed".into())
        );
        assert!(d.events.iter().all(|e| e.reason != "ApiUnavailable"));
        let d = desired(&input(Some(&d.status), 1600), &err);
        assert_eq!(
            ready(&d.status),
            ("Unknown".into(), "ApiUnavailable".into())
        );
    }

    #[test]
    fn transient_error_before_any_verdict_is_unknown_at_once() {
        let d = desired(
            &input(None, 1000),
            &Outcome::Transient {
                error: "down".into(),
                retry_after: None,
            },
        );
        assert_eq!(
            ready(&d.status),
            ("Unknown".into(), "ApiUnavailable".into())
        );
        assert_eq!(d.status.observed_generation, Some(1));
    }

    #[test]
    fn suspended_keeps_ready_and_runs() {
        let v = verdict(
            Phase::Blocked,
            Reason::RunFailed,
            Some(build(3, BuildStatus::Completed, Some(BuildResult::Failed))),
        );
        let s1 = desired(
            &input(None, 1000),
            &Outcome::Verdict {
                verdict: Box::new(v.clone()),
                read_ok: true,
            },
        )
        .status;
        let mut i = input(Some(&s1), 2000);
        i.generation = Some(2);
        let d = desired(&i, &Outcome::Suspended);
        assert_eq!(ready(&d.status), ("False".into(), "RunFailed".into()));
        let r = conditions::find(&d.status.conditions, READY).unwrap();
        assert!(r.message.starts_with("Suspended: "));
        assert_eq!(r.observed_generation, Some(2));
        // A blocked gate stays Stalled while suspended, so kstatus (Flux) keeps reading it as Failed,
        // not InProgress; and no condition transitions.
        let stalled = conditions::find(&d.status.conditions, STALLED).unwrap();
        assert_eq!(stalled.status, "True");
        assert!(stalled.message.starts_with("Suspended: "));
        for c in &d.status.conditions {
            let before = conditions::find(&s1.conditions, &c.type_).unwrap();
            assert_eq!(
                c.last_transition_time, before.last_transition_time,
                "{}",
                c.type_
            );
        }
        assert_eq!(d.status.latest_run, s1.latest_run);
        assert_eq!(d.status.observed_generation, Some(2));
        assert!(d.events.is_empty());
    }
}
