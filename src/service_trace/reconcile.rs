//! The ServiceTrace reconciler: read the PAT, read everything the trace needs ([`super::read`]), trace
//! ([`super::stages`]), and write the one status that produced ([`super::status`]) only when it changed.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{debug, info};

use super::commit_dates::CommitDates;
use super::deployed::DeployedKind;
use super::read::{deployed_target, read_all, Reader, Reads};
use super::status::{
    apply_flow, desired_status_with, environment_stages, per_environment_verdict, with_kstatus,
};
use super::KIND;
use crate::conditions::{self, Kstatus, READY};
use crate::crd::{duration_or, requested_at, whole_seconds, ServiceTrace, ServiceTraceStatus};
use crate::reconciler::credentials::{objects_using_secret, resolve, CredentialError};
use crate::reconciler::events::{reasons, Transition};
use crate::reconciler::idle::{poll_period, IdleInput, ProjectKey};
use crate::reconciler::status_write::write_status_if_changed;
use crate::reconciler::{Error, ObjectMemory, ReconcileIo, WebhookHints};

/// The newest build's number and the environments it reached this reconcile, with lead times.
type Arrivals = (Option<String>, Vec<(String, Option<String>)>);

/// Everything a trace reconcile needs.
pub struct TraceContext {
    pub io: ReconcileIo,
    /// The controller's view of all traces, to prune per-trace memory.
    pub store: Store<ServiceTrace>,
    /// Committer dates of manifest heads already read (they never change).
    commit_dates: CommitDates,
    /// Recent commits per branch head and source commits already read (see `read::FlowCache`).
    flow_cache: super::read::FlowCache,
    /// Per trace: when polling last read Azure DevOps successfully (for webhook health).
    memory: ObjectMemory<ServiceTrace, ServiceTraceStatus, TraceExtra>,
    /// Webhook health, when a receiver runs in this process.
    hints: Option<WebhookHints>,
}

/// What a trace remembers between reconciles beyond its status.
#[derive(Default)]
pub struct TraceExtra {
    last_poll: Option<std::time::Instant>,
}

impl TraceContext {
    pub(super) fn reader(&self) -> Reader<'_> {
        Reader {
            io: &self.io,
            commit_dates: &self.commit_dates,
            flow_cache: &self.flow_cache,
        }
    }

    pub fn new(io: ReconcileIo, store: Store<ServiceTrace>) -> Self {
        Self {
            io,
            store,
            commit_dates: CommitDates::default(),
            flow_cache: Default::default(),
            memory: ObjectMemory::new(KIND),
            hints: None,
        }
    }

    /// Count, for webhook health, the changes polling found before any hook announced them.
    pub fn with_webhook_hints(mut self, hints: WebhookHints) -> Self {
        self.hints = Some(hints);
        self
    }

    /// The watch delivered `trace` (see [`ObjectMemory::observe`]).
    pub fn observe(&self, trace: &ServiceTrace) {
        self.memory.observe(trace);
    }
}

/// Reconcile one trace. Azure DevOps problems become status; only Kubernetes API failures are errors.
pub async fn reconcile(trace: Arc<ServiceTrace>, ctx: Arc<TraceContext>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*trace);
    ctx.memory
        .track_reconcile(&ctx.io.metrics, &key, reconcile_inner(&trace, &ctx))
        .await
}

/// Back off exponentially per trace on Kubernetes API errors (see [`crate::reconciler::backoff`]).
pub fn error_policy(trace: Arc<ServiceTrace>, error: &Error, ctx: Arc<TraceContext>) -> Action {
    ctx.memory
        .requeue_after_failure(&ObjectRef::from_obj(&*trace), error)
}

async fn reconcile_inner(trace: &ServiceTrace, ctx: &TraceContext) -> Result<Action, Error> {
    let name = trace.name_any();
    let namespace = trace.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: KIND,
        name: name.clone(),
    })?;
    let key = ObjectRef::from_obj(trace);
    let now = whole_seconds(Timestamp::now());
    let interval = duration_or(&trace.spec.interval, ctx.io.config.default_interval);
    let fast = ctx.io.config.fast_interval.min(interval);
    let current = ctx
        .memory
        .current_status(&key, trace, trace.status.as_ref());
    let previous = current.clone().unwrap_or_default();

    // Environments the newest build reached in this reconcile, for one Event each after the write.
    let mut arrivals: Option<Arrivals> = None;
    // Every outcome comes down to one desired status and one requeue; the write happens once, below.
    // `announce`: a change of Ready deserves an Event (a suspended trace or a transient error never does).
    let (desired, action, announce) = if trace.spec.suspend {
        let desired = with_kstatus(
            previous.clone(),
            &Kstatus::suspended(&previous.conditions),
            trace,
            now,
        );
        (desired, Action::await_change(), false)
    } else {
        match resolve(&ctx.io, &namespace, &trace.spec.azure_devops.credentials).await {
            Err(CredentialError::Api(e)) => return Err(e),
            Err(e) if e.is_transient() => {
                let message = e.to_string();
                info!(error = %message, retry_in_s = fast.as_secs(), "no Azure DevOps token; the last verdict stands");
                let mut desired = previous.clone();
                desired.last_error = Some(message);
                (desired, Action::requeue(fast), false)
            }
            Err(problem) => {
                let desired = with_kstatus(
                    previous.clone(),
                    &Kstatus::stalled("AuthenticationFailed", problem.to_string()),
                    trace,
                    now,
                );
                (
                    desired,
                    crate::reconciler::schedule::requeue(interval),
                    true,
                )
            }
            Ok(auth) => match read_all(trace, &namespace, &auth, now, &ctx.reader()).await? {
                Reads::Transient {
                    message,
                    retry_after,
                } => {
                    let mut after = fast;
                    if let Some(retry_after) = retry_after {
                        after = after.max(retry_after);
                    }
                    // The retry time lives here, not in status: lastError stays put while the hold
                    // counts down.
                    info!(error = %message, retry_in_s = after.as_secs(), "Azure DevOps read failed; the last verdict stands");
                    let mut desired = previous.clone();
                    desired.last_error = Some(message);
                    (desired, crate::reconciler::schedule::requeue(after), false)
                }
                Reads::Complete(input, flow) => {
                    let verdict = per_environment_verdict(&input, &flow.deployed);
                    note_polled_change_of(ctx, &key, &previous, &verdict, Some(trace));
                    let mut desired = desired_status_with(
                        &verdict,
                        &previous,
                        trace.metadata.generation,
                        now,
                        |next| {
                            environment_stages(
                                &trace.spec,
                                &input,
                                &flow.deployed,
                                &previous.stages,
                                next,
                                now,
                            )
                        },
                    );
                    let composed = apply_flow(
                        &trace.spec,
                        &input,
                        &flow.reads,
                        &verdict,
                        &previous,
                        &mut desired,
                        trace.metadata.generation,
                        now,
                    );
                    let mut after = if verdict.in_flight {
                        fast
                    } else {
                        idle_period(trace, interval, ctx)
                    };
                    // Look again when a waiting step would overrun its timeout, to report it on time.
                    if let Some(deadline) = composed.as_ref().and_then(|c| c.view.next_deadline) {
                        let until = deadline.duration_since(now).unsigned_abs();
                        after = after.min(until.max(std::time::Duration::from_secs(1)));
                    }
                    arrivals = composed.map(|c| (c.view.latest.build.number.clone(), c.arrivals));
                    debug!(
                        ready = verdict.kstatus.ready.as_str(),
                        reason = verdict.kstatus.reason.as_str(),
                        "reconciled"
                    );
                    (desired, crate::reconciler::schedule::requeue(after), true)
                }
            },
        }
    };

    let ready = conditions::find(&desired.conditions, READY).map(|c| c.status.clone());
    ctx.memory
        .update_ready_gauge(&ctx.io.metrics, &ctx.store, &key, ready);
    write_status_if_changed(
        &ctx.io.client,
        &ctx.memory,
        trace,
        &namespace,
        current.as_ref(),
        &desired,
    )
    .await?;
    let mut transitions = Vec::new();
    if announce {
        transitions.extend(ready_transition(current.as_ref(), &desired));
    }
    if let Some((number, reached)) = arrivals {
        let tag = number.unwrap_or_default();
        for (env, lead) in reached {
            let note = match lead {
                Some(lead) => format!("build {tag} arrived in {env} (lead time {lead})"),
                None => format!("build {tag} arrived in {env}"),
            };
            transitions.push(Transition {
                type_: EventType::Normal,
                reason: reasons::TRACE_ARRIVED,
                note,
            });
        }
    }
    ctx.io
        .recorders
        .publish_after_reconcile(trace, transitions)
        .await;
    Ok(action)
}

/// A new CI build or a moved manifest head that polling saw before any webhook named this trace: the
/// same webhook-health counter the gates feed (`lockstep_webhook_polling_found_first_total`).
#[cfg(test)]
pub(super) fn note_polled_change(
    ctx: &TraceContext,
    key: &ObjectRef<ServiceTrace>,
    previous: &ServiceTraceStatus,
    verdict: &super::stages::TraceVerdict,
) {
    note_polled_change_of(ctx, key, previous, verdict, None);
}

/// [`note_polled_change`] that, when polling was first, also makes hooks of the trace's project unproven
/// (`trace`: the project and the `requested-at` another replica may have written).
fn note_polled_change_of(
    ctx: &TraceContext,
    key: &ObjectRef<ServiceTrace>,
    previous: &ServiceTraceStatus,
    verdict: &super::stages::TraceVerdict,
    trace: Option<&ServiceTrace>,
) {
    let previous_poll = ctx
        .memory
        .with_extra(key, |m| m.last_poll.replace(std::time::Instant::now()));
    let Some(hints) = &ctx.hints else { return };
    let newest_build = verdict
        .stages
        .first()
        .and_then(|s| s.run.as_ref())
        .map(|r| r.id);
    let old_build = previous.latest.as_ref().map(|l| l.build.id);
    let build_moved = old_build.is_some() && newest_build.is_some() && old_build != newest_build;
    let head_moved = previous.manifest_commit_id.is_some()
        && verdict.manifest_commit_id.is_some()
        && previous.manifest_commit_id != verdict.manifest_commit_id;
    if build_moved || head_moved {
        let ado = trace.map(|t| &t.spec.azure_devops);
        let project = ado.and_then(|a| ProjectKey::new(&a.organization_url, &a.project));
        hints.note_polled_change_in(
            key,
            previous_poll,
            project.as_ref(),
            trace.and_then(requested_at),
        );
    }
}

/// The period of a trace with nothing in flight: `interval`, stretched while hooks for its project have
/// proven themselves (see [`crate::reconciler::idle`]). Deployments it follows reconcile it through their
/// own watches whatever this says; its waiting steps' deadlines still cut the requeue short.
fn idle_period(
    trace: &ServiceTrace,
    interval: std::time::Duration,
    ctx: &TraceContext,
) -> std::time::Duration {
    let ado = &trace.spec.azure_devops;
    let stretch = ctx.io.config.idle_poll_stretch;
    let hooks_proven = stretch > 1
        && match (
            &ctx.hints,
            ProjectKey::new(&ado.organization_url, &ado.project),
        ) {
            (Some(hints), Some(project)) => {
                hints.hooks_proven(&ObjectRef::from_obj(trace), &project, requested_at(trace))
            }
            _ => false,
        };
    poll_period(IdleInput {
        interval,
        stretch,
        idle: true,
        hooks_proven,
        // Traces have no staleAfter; the hook window bounds them.
        ceiling: crate::reconciler::idle::HOOK_WINDOW,
    })
}

/// An Event when Ready changes status or reason, so `kubectl describe` shows the trace's history.
fn ready_transition(
    current: Option<&ServiceTraceStatus>,
    desired: &ServiceTraceStatus,
) -> Option<Transition> {
    let before = current.and_then(|s| conditions::find(&s.conditions, READY));
    let after = conditions::find(&desired.conditions, READY)?;
    if before.is_some_and(|b| b.status == after.status && b.reason == after.reason) {
        return None;
    }
    let stalled = conditions::status_of(&desired.conditions, conditions::STALLED)
        == conditions::ConditionStatus::True;
    let (type_, reason) = match (after.status.as_str(), stalled) {
        ("True", _) => (EventType::Normal, reasons::TRACE_READY),
        (_, true) => (EventType::Warning, reasons::TRACE_STALLED),
        ("False", false) => (EventType::Normal, reasons::TRACE_PROGRESSING),
        _ => (EventType::Normal, reasons::TRACE_UNKNOWN),
    };
    Some(Transition {
        type_,
        reason,
        note: after.message.clone(),
    })
}

/// Traces in the Secret's namespace that reference it.
pub fn traces_using_secret(
    store: &Store<ServiceTrace>,
    secret: &ObjectMeta,
) -> Vec<ObjectRef<ServiceTrace>> {
    objects_using_secret(store, secret, |t| &t.spec.azure_devops.credentials)
}

/// Traces whose `spec.deployed` names this object: a sync or rollout re-traces exactly those.
pub fn traces_deployed_on(
    store: &Store<ServiceTrace>,
    kind: DeployedKind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Vec<ObjectRef<ServiceTrace>> {
    let (Some(ns), Some(name)) = (namespace, name) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|t| {
            let trace_ns = t.metadata.namespace.as_deref().unwrap_or_default();
            t.spec.environment_list().iter().any(|e| {
                deployed_target(&e.deployed(), trace_ns)
                    .is_some_and(|d| d.kind == kind && d.namespace == ns && d.name == name)
            })
        })
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}
