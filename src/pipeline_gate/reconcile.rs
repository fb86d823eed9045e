//! The PipelineGate reconciler: read the PAT, read the runs (shared per pipeline), decide, write status
//! only when it changed, record Events on transitions, and requeue at the right moment.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{debug, info};

use super::decision::{self, DecisionInput, Phase, Policy, Reason, Verdict};
use super::status::{self, GateEvent, Outcome, Severity, StatusInput};
use super::KIND;
use crate::ado::{AdoAuth, AdoError};
use crate::conditions::{self, READY};
use crate::crd::{duration_or, requested_at, whole_seconds, PipelineGate, PipelineGateStatus};
use crate::pipeline_key::{full_branch_ref, PipelineKey};
use crate::reconciler::credentials::{
    objects_using_secret, replace_refused_token, resolve, CredentialError,
};
use crate::reconciler::events::{reasons, Transition};
use crate::reconciler::idle::{poll_period, IdleInput, ProjectKey};
use crate::reconciler::io::list_runs;
use crate::reconciler::schedule::{tick_phase, until, until_next_tick};
use crate::reconciler::status_write::write_status_if_changed;
use crate::reconciler::{Error, ObjectMemory, ReconcileIo, WebhookHints};

/// Everything a gate reconcile needs.
pub struct GateContext {
    pub io: ReconcileIo,
    /// The controller's view of all gates, for the Ready gauge and to prune per-gate memory.
    pub store: Store<PipelineGate>,
    /// The webhook receiver's hint log, when it runs: to count changes polling found before any hook.
    pub hints: Option<WebhookHints>,
    memory: ObjectMemory<PipelineGate, PipelineGateStatus, GateMemory>,
}

/// What only the gate reconciler remembers per gate (the shared part is in [`ObjectMemory`]).
#[derive(Default)]
struct GateMemory {
    last_success: Option<Timestamp>,
    /// When this gate last read runs (cached or not), to tell whether a hint arrived since.
    last_poll: Option<Instant>,
}

impl GateContext {
    pub fn new(io: ReconcileIo, store: Store<PipelineGate>) -> Self {
        Self {
            io,
            store,
            hints: None,
            memory: ObjectMemory::new(KIND),
        }
    }

    /// Count changes that polling found before any webhook hinted them.
    pub fn with_webhook_hints(mut self, hints: WebhookHints) -> Self {
        self.hints = Some(hints);
        self
    }

    /// The watch delivered `gate` (see [`ObjectMemory::observe`]).
    pub fn observe(&self, gate: &PipelineGate) {
        self.memory.observe(gate);
    }
}

/// Reconcile one gate. Azure DevOps problems become status; only Kubernetes API failures are errors.
pub async fn reconcile(gate: Arc<PipelineGate>, ctx: Arc<GateContext>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*gate);
    ctx.memory
        .track_reconcile(&ctx.io.metrics, &key, reconcile_inner(&gate, &ctx))
        .await
}

/// Back off exponentially per gate on Kubernetes API errors (see [`crate::reconciler::backoff`]).
pub fn error_policy(gate: Arc<PipelineGate>, error: &Error, ctx: Arc<GateContext>) -> Action {
    ctx.memory
        .requeue_after_failure(&ObjectRef::from_obj(&*gate), error)
}

async fn reconcile_inner(gate: &PipelineGate, ctx: &GateContext) -> Result<Action, Error> {
    let name = gate.name_any();
    let namespace = gate.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: KIND,
        name: name.clone(),
    })?;
    let key = ObjectRef::from_obj(gate);
    let spec = &gate.spec;
    let now = whole_seconds(Timestamp::now());
    let stale_after = duration_or(&spec.policy.stale_after, ctx.io.config.default_stale_after);
    let interval = duration_or(&spec.interval, ctx.io.config.default_interval);
    let current = ctx.memory.current_status(&key, gate, gate.status.as_ref());
    // A delivery handed this gate over directly asks for an answer at least as fresh as the annotation
    // it did not write (see [`crate::reconciler::HookRelay`]).
    let relayed = ctx.hints.as_ref().and_then(|h| h.gate_relay.floor(&key));
    let not_before = requested_at(gate).max(relayed);
    // When the answer the verdict rests on was asked for: what a relayed delivery waits on.
    let mut fresh_from = None;

    // Phase of the pipeline's requeue grid (see [`until_next_tick`]); known once the spec names one.
    let (outcome, tick_phase) = if spec.suspend {
        fresh_from = Some(Timestamp::now());
        (Outcome::Suspended, 0)
    } else {
        match resolve(&ctx.io, &namespace, &spec.azure_devops.credentials).await {
            Err(CredentialError::Api(e)) => return Err(e),
            Err(e) if e.is_transient() => (
                Outcome::Transient {
                    error: e.to_string(),
                    retry_after: None,
                },
                0,
            ),
            Err(problem) => (
                Outcome::unread(Verdict::blocked(
                    Reason::AuthenticationFailed,
                    problem.to_string(),
                )),
                0,
            ),
            Ok(auth) => {
                let read = read_and_decide(gate, &auth, now, not_before, current.as_ref(), ctx);
                let (outcome, tick_phase, started_at) = read.await;
                fresh_from = started_at;
                (outcome, tick_phase)
            }
        }
    };

    if let Outcome::Verdict { .. } = &outcome {
        // Remembered for staleness: exact, unlike lastCheckedTime in status. A verdict without runs
        // (rejected credentials, no such pipeline) is as current as one with runs: ApiUnavailable must
        // wait staleAfter from it, whatever the verdict was.
        ctx.memory.with_extra(&key, |m| m.last_success = Some(now));
    }
    if let Outcome::Verdict {
        verdict,
        read_ok: true,
    } = &outcome
    {
        let previous_poll = ctx
            .memory
            .with_extra(&key, |m| m.last_poll.replace(Instant::now()));
        let old_run = current
            .as_ref()
            .and_then(|s| s.latest_run.as_ref())
            .map(|r| r.id);
        let new_run = verdict.latest_run.as_ref().map(|r| r.id);
        if old_run.is_some() && new_run.is_some() && old_run != new_run {
            if let Some(hints) = &ctx.hints {
                hints.note_polled_change_in(
                    &key,
                    previous_poll,
                    project_key(gate).as_ref(),
                    requested_at(gate),
                );
            }
        }
    }
    let last_success = ctx.memory.with_extra(&key, |m| m.last_success);
    let mut desired = status::desired(
        &StatusInput {
            current: current.as_ref(),
            generation: gate.metadata.generation,
            now,
            stale_after,
            last_success,
        },
        &outcome,
    );
    // status.hooks belongs to the hook-health check: carried over so it never counts as a change here.
    desired.status.hooks = current.as_ref().and_then(|c| c.hooks.clone());
    let ready = conditions::find(&desired.status.conditions, READY).map(|c| c.status.clone());
    write_status_if_changed(
        &ctx.io.client,
        &ctx.memory,
        gate,
        &namespace,
        current.as_ref(),
        &desired.status,
    )
    .await?;
    if let (Some(hints), Some(fresh_from), Some(_)) = (&ctx.hints, fresh_from, relayed) {
        // The status now shows this answer: a delivery waiting for it needs no annotation (Events are not
        // what a restart could lose).
        hints.gate_relay.served(&key, fresh_from);
    }
    let mut transitions: Vec<Transition> = desired.events.iter().map(transition).collect();
    if desired
        .events
        .iter()
        .any(|e| e.reason == reasons::GATE_OPENED)
    {
        transitions.extend(super::nudge::after_open(gate, &ctx.io).await);
    }
    ctx.io
        .recorders
        .publish_after_reconcile(gate, transitions)
        .await;
    ctx.memory
        .update_ready_gauge(&ctx.io.metrics, &ctx.store, &key, ready);

    let action = match &outcome {
        Outcome::Suspended => Action::await_change(),
        Outcome::Verdict {
            verdict,
            read_ok: true,
        } => {
            let period = match verdict.phase {
                Phase::Waiting => ctx.io.config.fast_interval,
                Phase::Open | Phase::Blocked => {
                    idle_period(gate, verdict, interval, stale_after, ctx)
                }
            };
            let mut after = until_next_tick(period, tick_phase, SystemTime::now());
            if let Some(deadline) = verdict.deadline.filter(|_| verdict.phase == Phase::Waiting) {
                after = after.min(until(deadline));
            }
            crate::reconciler::schedule::requeue(after)
        }
        // Bad credentials or a missing pipeline: nothing changes until someone fixes it (the Secret watch
        // and spec changes trigger a reconcile sooner), so the normal interval is plenty.
        Outcome::Verdict { read_ok: false, .. } => crate::reconciler::schedule::requeue(interval),
        Outcome::Transient { error, retry_after } => {
            let mut after = ctx.io.config.fast_interval.min(interval);
            if let Some(retry_after) = retry_after {
                after = after.max(*retry_after);
            }
            // The retry time lives here, not in status: lastError stays put while the hold counts down.
            info!(error = %error, retry_in_s = after.as_secs(), "Azure DevOps read failed; the last verdict stands");
            crate::reconciler::schedule::requeue(after)
        }
    };
    debug!(?action, "reconciled");
    Ok(action)
}

/// The organization+project whose hooks decide how far this gate's idle polling may stretch.
fn project_key(gate: &PipelineGate) -> Option<ProjectKey> {
    let ado = &gate.spec.azure_devops;
    ProjectKey::new(&ado.organization_url, &ado.project)
}

/// The polling period of a gate that is Open or Blocked: `interval`, stretched while the pipeline is idle
/// (no run in flight: a timed-out wait still has one) and hooks for its project have proven themselves
/// (see [`crate::reconciler::idle`]). Never beyond half of `staleAfter`, so `lastCheckedTime` keeps its
/// refresh rule.
fn idle_period(
    gate: &PipelineGate,
    verdict: &Verdict,
    interval: std::time::Duration,
    stale_after: std::time::Duration,
    ctx: &GateContext,
) -> std::time::Duration {
    let idle = is_idle(verdict);
    let hooks_proven = idle
        && ctx.io.config.idle_poll_stretch > 1
        && match (&ctx.hints, project_key(gate)) {
            (Some(hints), Some(project)) => {
                hints.hooks_proven(&ObjectRef::from_obj(gate), &project, requested_at(gate))
            }
            _ => false,
        };
    poll_period(IdleInput {
        interval,
        stretch: ctx.io.config.idle_poll_stretch,
        idle,
        hooks_proven,
        ceiling: stale_after / 2,
    })
}

/// Nothing in flight and the newest completed run decided: Open or Blocked on a completed run. A wait
/// that timed out is Blocked but still has its run in flight, so it is not idle.
fn is_idle(verdict: &Verdict) -> bool {
    verdict.phase != Phase::Waiting && verdict.waiting.is_none()
}

/// Builds List through the shared cache (an answer asked for no earlier than `not_before`), then the
/// decision; with the pipeline's grid phase and when the answer was asked for, if one was read.
async fn read_and_decide(
    gate: &PipelineGate,
    auth: &AdoAuth,
    now: Timestamp,
    not_before: Option<Timestamp>,
    current: Option<&PipelineGateStatus>,
    ctx: &GateContext,
) -> (Outcome, u64, Option<Timestamp>) {
    let ado_spec = &gate.spec.azure_devops;
    let pipeline = &gate.spec.pipeline;
    let Some(key) = PipelineKey::new(
        &ado_spec.organization_url,
        &ado_spec.project,
        pipeline.definition_id,
        &pipeline.branch,
    ) else {
        let verdict = Verdict::blocked(
            Reason::NotFound,
            format!(
                "organizationUrl {:?} is not an Azure DevOps organization or collection URL: use https://dev.azure.com/<org>",
                ado_spec.organization_url
            ),
        );
        return (Outcome::unread(verdict), 0, None);
    };
    let fetched = ctx
        .io
        .cache
        .get_or_fetch(&key, auth.secret(), not_before, || {
            ctx.io.metrics.builds_list.record(&key);
            list_runs(
                &ctx.io.ado,
                &ado_spec.organization_url,
                &ado_spec.project,
                pipeline.definition_id,
                &pipeline.branch,
                auth,
            )
        })
        .await;
    let age = Instant::now().saturating_duration_since(fetched.finished_at);
    if let Err(err) = &fetched.result {
        if let Some(replaced) = replace_refused_token(&ctx.io, auth, err).await {
            let outcome = Outcome::Transient {
                error: replaced.to_string(),
                retry_after: None,
            };
            return (outcome, 0, None);
        }
    }
    let outcome = match &fetched.result {
        Ok(runs) => {
            let branch = full_branch_ref(&pipeline.branch);
            let policy = Policy::from_spec(&gate.spec.policy);
            let verdict = decision::decide(&DecisionInput {
                runs,
                definition_id: pipeline.definition_id,
                branch: &branch,
                pipeline_name: None,
                policy: &policy,
                now,
                previous_wait: status::previous_wait(current),
            });
            return (
                Outcome::Verdict {
                    verdict: Box::new(verdict),
                    read_ok: true,
                },
                tick_phase(&key),
                Some(fetched.started_at),
            );
        }
        Err(err) => match decision::decide_error(err) {
            Some(verdict) => Outcome::unread(verdict),
            None => Outcome::Transient {
                error: err.to_string(),
                retry_after: match err {
                    AdoError::RateLimited { retry_after, .. } => {
                        Some(retry_after.saturating_sub(age))
                    }
                    _ => None,
                },
            },
        },
    };
    (outcome, 0, Some(fetched.started_at))
}

fn transition(e: &GateEvent) -> Transition {
    Transition {
        type_: match e.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: e.reason,
        note: e.note.clone(),
    }
}

/// Gates in the Secret's namespace that reference it: a rotated PAT or client secret re-reconciles
/// exactly those.
pub fn gates_using_secret(
    store: &Store<PipelineGate>,
    secret: &ObjectMeta,
) -> Vec<ObjectRef<PipelineGate>> {
    objects_using_secret(store, secret, |g| &g.spec.azure_devops.credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn gate(ns: &str, name: &str, secret: &str) -> PipelineGate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": "P",
                                "credentials": {"secretRef": {"name": secret, "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            }
        }))
        .unwrap()
    }

    fn secret(ns: &str, name: &str) -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}
        }))
        .unwrap()
    }

    fn run(id: i64, status: &str, result: Option<&str>) -> crate::ado::Build {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status, "result": result,
            "queueTime": format!("2026-11-29T10:00:{id:02}Z"),
            "sourceBranch": "refs/heads/main", "definition": {"id": 1}
        }))
        .unwrap()
    }

    fn verdict_for(runs: &[crate::ado::Build], timeout_s: u64) -> Verdict {
        let spec: crate::crd::PipelineGate = serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": "g", "namespace": "n"},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": "P",
                                "credentials": {"secretRef": {"name": "s", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"},
                "policy": {"timeout": format!("{timeout_s}s")}
            }
        }))
        .unwrap();
        let policy = Policy::from_spec(&spec.spec.policy);
        decision::decide(&DecisionInput {
            runs,
            definition_id: 1,
            branch: "refs/heads/main",
            pipeline_name: None,
            policy: &policy,
            now: Timestamp::now(),
            previous_wait: None,
        })
    }

    #[test]
    fn only_decided_pipelines_without_a_run_in_flight_are_idle() {
        let done = run(1, "completed", Some("succeeded"));
        let failed = run(1, "completed", Some("failed"));
        let queued = run(2, "notStarted", None);
        let running = run(2, "inProgress", None);
        assert!(
            is_idle(&verdict_for(std::slice::from_ref(&done), 600)),
            "Open"
        );
        assert!(
            is_idle(&verdict_for(std::slice::from_ref(&failed), 600)),
            "Blocked on a failure"
        );
        for in_flight in [&queued, &running] {
            let v = verdict_for(&[done.clone(), in_flight.clone()], 600);
            assert_eq!(v.phase, Phase::Waiting);
            assert!(!is_idle(&v), "a run in flight within its timeout");
            // Timed out: Blocked, but the run is still in flight.
            let v = verdict_for(&[done.clone(), in_flight.clone()], 0);
            assert_eq!((v.phase, v.reason), (Phase::Blocked, Reason::TimedOut));
            assert!(!is_idle(&v), "a timed-out wait keeps polling at interval");
        }
        let none = verdict_for(&[], 600);
        assert_eq!(none.phase, Phase::Waiting);
        assert!(!is_idle(&none), "no runs yet");
    }

    #[test]
    fn a_secret_maps_to_the_gates_in_its_namespace_that_reference_it() {
        let mut writer = Writer::<PipelineGate>::default();
        for g in [
            gate("a", "one", "pat"),
            gate("a", "two", "pat"),
            gate("a", "other-secret", "different"),
            gate("b", "same-name-elsewhere", "pat"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(g));
        }
        let store = writer.as_reader();
        let mut names: Vec<String> = gates_using_secret(&store, &secret("a", "pat").metadata)
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["one", "two"]);
        assert!(gates_using_secret(&store, &secret("c", "pat").metadata).is_empty());
    }
}
