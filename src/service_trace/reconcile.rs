//! The ServiceTrace reconciler: read the PAT, read everything the trace needs ([`super::read`]), trace
//! ([`super::stages`]), and write the one status that produced ([`super::status`]) only when it changed.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{debug, info};

use super::commit_dates::CommitDates;
use super::deployed::DeployedKind;
use super::read::{deployed_target, read_all, Reader, Reads};
use super::stages;
use super::status::{desired_status, with_kstatus};
use super::KIND;
use crate::conditions::{self, Kstatus, READY};
use crate::crd::{duration_or, whole_seconds, ServiceTrace, ServiceTraceStatus};
use crate::reconciler::credentials::{objects_using_secret, read_token, CredentialError};
use crate::reconciler::events::{publish_transition_event, reasons};
use crate::reconciler::status_write::write_status_if_changed;
use crate::reconciler::{Error, ObjectMemory, ReconcileIo};

/// Everything a trace reconcile needs.
pub struct TraceContext {
    pub io: ReconcileIo,
    /// The controller's view of all traces, to prune per-trace memory.
    pub store: Store<ServiceTrace>,
    /// Committer dates of manifest heads already read (they never change).
    commit_dates: CommitDates,
    memory: ObjectMemory<ServiceTrace, ServiceTraceStatus>,
}

impl TraceContext {
    fn reader(&self) -> Reader<'_> {
        Reader {
            io: &self.io,
            commit_dates: &self.commit_dates,
        }
    }

    pub fn new(io: ReconcileIo, store: Store<ServiceTrace>) -> Self {
        Self {
            io,
            store,
            commit_dates: CommitDates::default(),
            memory: ObjectMemory::new(KIND),
        }
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
        let secret_ref = &trace.spec.azure_devops.credentials.secret_ref;
        match read_token(&ctx.io.client, &ctx.io.tokens, &namespace, secret_ref).await {
            Err(CredentialError::Api(e)) => return Err(e),
            Err(problem) => {
                let desired = with_kstatus(
                    previous.clone(),
                    &Kstatus::stalled("AuthenticationFailed", problem.to_string()),
                    trace,
                    now,
                );
                (desired, Action::requeue(interval), true)
            }
            Ok(token) => match read_all(trace, &namespace, &token, now, &ctx.reader()).await? {
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
                    (desired, Action::requeue(after), false)
                }
                Reads::Complete(input) => {
                    let verdict = stages::trace(&input);
                    let desired =
                        desired_status(&verdict, &previous, trace.metadata.generation, now);
                    let after = if verdict.in_flight { fast } else { interval };
                    debug!(
                        ready = verdict.kstatus.ready.as_str(),
                        reason = verdict.kstatus.reason.as_str(),
                        "reconciled"
                    );
                    (desired, Action::requeue(after), true)
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
    if announce {
        publish_transition(trace, current.as_ref(), &desired, ctx).await;
    }
    Ok(action)
}

/// An Event when Ready changes status or reason, so `kubectl describe` shows the trace's history.
async fn publish_transition(
    trace: &ServiceTrace,
    current: Option<&ServiceTraceStatus>,
    desired: &ServiceTraceStatus,
    ctx: &TraceContext,
) {
    let before = current.and_then(|s| conditions::find(&s.conditions, READY));
    let Some(after) = conditions::find(&desired.conditions, READY) else {
        return;
    };
    if before.is_some_and(|b| b.status == after.status && b.reason == after.reason) {
        return;
    }
    let stalled = conditions::status_of(&desired.conditions, conditions::STALLED)
        == conditions::ConditionStatus::True;
    let (type_, reason) = match (after.status.as_str(), stalled) {
        ("True", _) => (EventType::Normal, reasons::TRACE_READY),
        (_, true) => (EventType::Warning, reasons::TRACE_STALLED),
        ("False", false) => (EventType::Normal, reasons::TRACE_PROGRESSING),
        _ => (EventType::Normal, reasons::TRACE_UNKNOWN),
    };
    publish_transition_event(&ctx.io.recorders, trace, type_, reason, &after.message).await;
}

/// Traces in the Secret's namespace that reference it.
pub fn traces_using_secret(
    store: &Store<ServiceTrace>,
    secret: &Secret,
) -> Vec<ObjectRef<ServiceTrace>> {
    objects_using_secret(store, secret, |t| {
        &t.spec.azure_devops.credentials.secret_ref
    })
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
            deployed_target(&t.spec.deployed, trace_ns)
                .is_some_and(|d| d.kind == kind && d.namespace == ns && d.name == name)
        })
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}
