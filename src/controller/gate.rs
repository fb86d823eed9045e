//! The PipelineGate reconciler: read the PAT, read the runs (shared per pipeline), decide, write status
//! only when it changed, record Events on transitions, and requeue at the right moment.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::credentials::{objects_using_secret, read_token};
use super::events::publish_transition_event;
use super::gate_status::{self, GateEvent, Outcome, Severity, StatusInput};
use super::memory::ObjectMemory;
use super::reconcile_io::ReconcileIo;
use super::status_write::write_status_if_changed;
use super::Error;
use crate::ado::{AdoError, Build};
use crate::conditions::{self, READY};
use crate::crd::{duration_or, PipelineGate, PipelineGateStatus};
use crate::gate::{self, DecisionInput, Phase, Policy, Reason, Verdict};
use crate::pipeline_key::{full_branch_ref, PipelineKey};
use crate::poll_cache::PollCache;
use crate::secret::SecretString;
use crate::webhook::{HintIndex, WebhookMetrics};

pub use super::status_write::FIELD_MANAGER;
/// Annotation a webhook (or a human) sets to ask for a reconcile now. Its value is an RFC 3339 time, and
/// the reconcile then uses no cached Builds List answer older than it.
pub use crate::webhook::REQUESTED_AT_ANNOTATION;
const KIND: &str = "PipelineGate";
/// Runs fetched per Builds List: enough to find the newest completed run behind a few queued or ignored ones.
const RUNS_PER_LIST: u32 = 20;

/// The shared Builds List cache: one request per (pipeline, token) per period.
pub type BuildsCache = PollCache<PipelineKey, Vec<Build>, AdoError>;

/// Tunables, from flags.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// Polling period while a run is in flight (DESIGN: 10s).
    pub fast_interval: Duration,
    /// `spec.interval` when unset.
    pub default_interval: Duration,
    /// `spec.policy.staleAfter` when unset.
    pub default_stale_after: Duration,
    /// How long a Secret read is shared by the objects that reference it (see [`super::token_cache::TokenCache`]); zero reads
    /// the Secret on every reconcile.
    pub secret_cache_ttl: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            fast_interval: Duration::from_secs(10),
            default_interval: Duration::from_secs(60),
            default_stale_after: Duration::from_secs(600),
            secret_cache_ttl: Duration::ZERO,
        }
    }
}

/// Everything a gate reconcile needs.
pub struct GateContext {
    pub io: ReconcileIo,
    /// The controller's view of all gates, for the Ready gauge and to prune per-gate memory.
    pub store: Store<PipelineGate>,
    /// The webhook receiver's hint log, when it runs: to count changes polling found before any hook.
    pub hints: Option<WebhookHints>,
    memory: ObjectMemory<PipelineGate, PipelineGateStatus, GateMemory>,
}

/// What the reconciler needs from the webhook receiver to measure webhook health.
#[derive(Clone)]
pub struct WebhookHints {
    pub index: Arc<HintIndex>,
    pub metrics: WebhookMetrics,
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

    /// Polling found a new run: was it hinted since the previous poll? If not, webhooks are missing,
    /// late or losing events, and the metric says so.
    fn note_new_run(&self, key: &ObjectRef<PipelineGate>, previous_poll: Option<Instant>) {
        let Some(hints) = &self.hints else { return };
        let hinted = match (hints.index.last_hint(key), previous_poll) {
            (Some(hint), Some(previous)) => hint >= previous,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !hinted {
            hints.metrics.record_polling_found_first_for(KIND);
        }
    }
}

/// Reconcile one gate. Azure DevOps problems become status; only Kubernetes API failures are errors.
pub async fn reconcile(gate: Arc<PipelineGate>, ctx: Arc<GateContext>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*gate);
    ctx.memory
        .track_reconcile(&ctx.io.metrics, &key, reconcile_inner(&gate, &ctx))
        .await
}

/// Back off exponentially per gate on Kubernetes API errors (see [`super::backoff`]).
pub fn error_policy(gate: Arc<PipelineGate>, error: &Error, ctx: Arc<GateContext>) -> Action {
    let key = ObjectRef::from_obj(&*gate);
    let delay = ctx.memory.retry_delay_after_failure(&key);
    warn!(gate = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// What reading Azure DevOps (or failing to get that far) produced.
enum Read {
    /// `read_ok`: from a successful Builds List, as opposed to an error verdict or a missing Secret.
    Verdict {
        verdict: Box<Verdict>,
        read_ok: bool,
        /// Phase of the pipeline's requeue grid (see [`until_next_tick`]).
        tick_phase: u64,
    },
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Suspended,
}

async fn reconcile_inner(gate: &PipelineGate, ctx: &GateContext) -> Result<Action, Error> {
    let name = gate.name_any();
    let namespace = gate.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: KIND,
        name: name.clone(),
    })?;
    let key = ObjectRef::from_obj(gate);
    let spec = &gate.spec;
    let now = gate_status::whole_seconds(Timestamp::now());
    let stale_after = duration_or(&spec.policy.stale_after, ctx.io.config.default_stale_after);
    let interval = duration_or(&spec.interval, ctx.io.config.default_interval);
    let current = ctx.memory.current_status(&key, gate, gate.status.as_ref());

    let read = if spec.suspend {
        Read::Suspended
    } else {
        let secret_ref = &spec.azure_devops.credentials.secret_ref;
        match read_token(&ctx.io.client, &ctx.io.tokens, &namespace, secret_ref).await? {
            Err(problem) => Read::Verdict {
                verdict: Box::new(authentication_failed(problem)),
                read_ok: false,
                tick_phase: 0,
            },
            Ok(token) => read_and_decide(gate, &token, now, current.as_ref(), ctx).await,
        }
    };

    if let Read::Verdict {
        verdict,
        read_ok: true,
        ..
    } = &read
    {
        // Remembered for staleness: exact, unlike lastCheckedTime in status.
        let previous_poll = ctx.memory.with_extra(&key, |m| {
            m.last_success = Some(now);
            m.last_poll.replace(Instant::now())
        });
        let old_run = current
            .as_ref()
            .and_then(|s| s.latest_run.as_ref())
            .map(|r| r.id);
        let new_run = verdict.latest_run.as_ref().map(|r| r.id);
        if old_run.is_some() && new_run.is_some() && old_run != new_run {
            ctx.note_new_run(&key, previous_poll);
        }
    }
    let outcome = match &read {
        Read::Verdict {
            verdict, read_ok, ..
        } => Outcome::Verdict {
            verdict,
            read_ok: *read_ok,
        },
        Read::Transient { message, .. } => Outcome::Transient {
            error: message.clone(),
        },
        Read::Suspended => Outcome::Suspended,
    };
    let last_success = ctx.memory.with_extra(&key, |m| m.last_success);
    let desired = gate_status::desired(
        &StatusInput {
            current: current.as_ref(),
            generation: gate.metadata.generation,
            now,
            stale_after,
            last_success,
        },
        &outcome,
    );
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
    publish_events(gate, &desired.events, ctx).await;
    ctx.memory
        .update_ready_gauge(&ctx.io.metrics, &ctx.store, &key, ready);

    let action = match &read {
        Read::Suspended => Action::await_change(),
        Read::Verdict {
            verdict,
            read_ok: true,
            tick_phase,
        } => {
            let period = match verdict.phase {
                Phase::Waiting => ctx.io.config.fast_interval,
                Phase::Open | Phase::Blocked => interval,
            };
            let mut after = until_next_tick(period, *tick_phase, SystemTime::now());
            if let Some(deadline) = verdict.deadline.filter(|_| verdict.phase == Phase::Waiting) {
                after = after.min(until(deadline));
            }
            Action::requeue(after)
        }
        // Bad credentials or a missing pipeline: nothing changes until someone fixes it (the Secret watch
        // and spec changes trigger a reconcile sooner), so the normal interval is plenty.
        Read::Verdict { read_ok: false, .. } => Action::requeue(interval),
        Read::Transient {
            message,
            retry_after,
        } => {
            let mut after = ctx.io.config.fast_interval.min(interval);
            if let Some(retry_after) = retry_after {
                after = after.max(*retry_after);
            }
            // The retry time lives here, not in status: lastError stays put while the hold counts down.
            info!(gate = %key, error = %message, retry_in_s = after.as_secs(), "Azure DevOps read failed; the last verdict stands");
            Action::requeue(after)
        }
    };
    debug!(gate = %key, ?action, "reconciled");
    Ok(action)
}

/// Shortest requeue: never a busy loop.
const MIN_REQUEUE: Duration = Duration::from_millis(200);

/// Delay until the next tick of the pipeline's requeue grid of `period`.
///
/// Every gate following one pipeline requeues to the same wall-clock instant, so they all meet the shared
/// Builds List answer and cost one request per period. A gate knocked off the grid (a slow reconcile under
/// load, a webhook hint, a restart) rejoins at its next tick; aligning to the age of the answer each gate
/// saw instead let such a gate found a second group that kept fetching on its own, period after period.
/// The phase comes from the pipeline, which also spreads distinct pipelines over the period instead of
/// firing all of them at once.
fn until_next_tick(period: Duration, phase: u64, now: SystemTime) -> Duration {
    let period_ms = period.as_millis().max(1);
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let into_period = (now_ms + period_ms - u128::from(phase) % period_ms) % period_ms;
    let mut left = period_ms - into_period;
    let min = MIN_REQUEUE.as_millis();
    if left < min {
        left += (min - left).div_ceil(period_ms) * period_ms;
    }
    Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX))
}

/// The grid phase of a pipeline: stable for the process, different between pipelines.
fn tick_phase(key: &PipelineKey) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys, so every gate on `key` gets the same phase.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Duration until `deadline` (whole seconds), plus a little so the reconcile runs at or after it.
fn until(deadline: Timestamp) -> Duration {
    let left = deadline.duration_since(Timestamp::now());
    Duration::try_from(left).unwrap_or_default() + Duration::from_millis(20)
}

/// The verdict for a PAT that cannot be read: blocked until someone fixes the Secret `problem` names.
fn authentication_failed(problem: String) -> Verdict {
    Verdict {
        phase: Phase::Blocked,
        reason: Reason::AuthenticationFailed,
        message: problem,
        latest_run: None,
        last_completed_run: None,
        last_succeeded_run: None,
        waiting: None,
        deadline: None,
    }
}

/// Builds List through the shared cache, then the decision.
async fn read_and_decide(
    gate: &PipelineGate,
    token: &SecretString,
    now: Timestamp,
    current: Option<&PipelineGateStatus>,
    ctx: &GateContext,
) -> Read {
    let ado_spec = &gate.spec.azure_devops;
    let pipeline = &gate.spec.pipeline;
    let Some(key) = PipelineKey::new(
        &ado_spec.organization_url,
        &ado_spec.project,
        pipeline.definition_id,
        &pipeline.branch,
    ) else {
        let verdict = Verdict {
            phase: Phase::Blocked,
            reason: Reason::NotFound,
            message: format!(
                "organizationUrl {:?} is not an Azure DevOps organization or collection URL: use https://dev.azure.com/<org>",
                ado_spec.organization_url
            ),
            latest_run: None,
            last_completed_run: None,
            last_succeeded_run: None,
            waiting: None,
            deadline: None,
        };
        return Read::Verdict {
            verdict: Box::new(verdict),
            read_ok: false,
            tick_phase: 0,
        };
    };
    let not_before = gate
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let fetched = ctx
        .io
        .cache
        .get_or_fetch(&key, token, not_before, || {
            ctx.io.ado.list_builds(
                &ado_spec.organization_url,
                &ado_spec.project,
                pipeline.definition_id,
                &pipeline.branch,
                RUNS_PER_LIST,
                token,
            )
        })
        .await;
    let age = Instant::now().saturating_duration_since(fetched.finished_at);
    match &fetched.result {
        Ok(runs) => {
            let branch = full_branch_ref(&pipeline.branch);
            let policy = Policy::from_spec(&gate.spec.policy);
            let verdict = gate::decide(&DecisionInput {
                runs,
                definition_id: pipeline.definition_id,
                branch: &branch,
                pipeline_name: None,
                policy: &policy,
                now,
                previous_wait: gate_status::previous_wait(current),
            });
            Read::Verdict {
                verdict: Box::new(verdict),
                read_ok: true,
                tick_phase: tick_phase(&key),
            }
        }
        Err(err) => match gate::decide_error(err) {
            Some(verdict) => Read::Verdict {
                verdict: Box::new(verdict),
                read_ok: false,
                tick_phase: 0,
            },
            None => Read::Transient {
                message: err.to_string(),
                retry_after: match err {
                    AdoError::RateLimited { retry_after, .. } => {
                        Some(retry_after.saturating_sub(age))
                    }
                    _ => None,
                },
            },
        },
    }
}

async fn publish_events(gate: &PipelineGate, events: &[GateEvent], ctx: &GateContext) {
    for e in events {
        let type_ = match e.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        };
        publish_transition_event(&ctx.io.recorders, gate, type_, e.reason, &e.note).await;
    }
}

/// Gates in the Secret's namespace that reference it: a rotated PAT re-reconciles exactly those.
pub fn gates_using_secret(
    store: &Store<PipelineGate>,
    secret: &Secret,
) -> Vec<ObjectRef<PipelineGate>> {
    objects_using_secret(store, secret, |g| {
        &g.spec.azure_devops.credentials.secret_ref
    })
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

    fn secret(ns: &str, name: &str) -> Secret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}
        }))
        .unwrap()
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
        let mut names: Vec<String> = gates_using_secret(&store, &secret("a", "pat"))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["one", "two"]);
        assert!(gates_using_secret(&store, &secret("c", "pat")).is_empty());
    }

    #[test]
    fn gates_on_one_pipeline_requeue_to_the_same_tick() {
        let period = Duration::from_secs(60);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Two gates of one pipeline reconciled 0.7 s apart (one delayed by load) meet at the same instant.
        let a = t0 + until_next_tick(period, 42, t0);
        let later = t0 + Duration::from_millis(700);
        let b = later + until_next_tick(period, 42, later);
        assert_eq!(a, b);
        assert!(a > t0 && a <= t0 + period + MIN_REQUEUE, "{a:?}");
        // Another pipeline ticks at another phase.
        let c = t0 + until_next_tick(period, 43, t0);
        assert_ne!(a, c);
    }

    #[test]
    fn a_tick_too_close_is_skipped_rather_than_busy_looping() {
        let period = Duration::from_secs(1);
        let t0 = UNIX_EPOCH + Duration::from_millis(1_800_000_000_950);
        // phase 0: the next tick is 50 ms away, below the minimum, so the one after it.
        let d = until_next_tick(period, 0, t0);
        assert_eq!(d, Duration::from_millis(1050));
        assert!(until_next_tick(Duration::ZERO, 7, t0) >= MIN_REQUEUE);
    }

    #[test]
    fn requeues_land_on_the_pipeline_grid() {
        let period = Duration::from_secs(10);
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        // Phase 3 s: the grid is …, 3 s, 13 s, 23 s, …
        assert_eq!(
            until_next_tick(period, 3_000, at(1_000)),
            Duration::from_secs(2)
        );
        assert_eq!(
            until_next_tick(period, 3_000, at(5_500)),
            Duration::from_millis(7_500)
        );
        // Exactly on a grid point: the next one, a full period on.
        assert_eq!(until_next_tick(period, 3_000, at(13_000)), period);
        // Never a busy loop, never much longer than the period.
        for now in (0..50_000).step_by(777) {
            let d = until_next_tick(period, 12_345, at(now));
            assert!(d >= MIN_REQUEUE && d <= period + MIN_REQUEUE, "{d:?}");
        }
    }

    #[test]
    fn gates_of_one_pipeline_share_a_phase() {
        let key = |definition_id| {
            PipelineKey::new("https://dev.azure.com/o", "P", definition_id, "main").unwrap()
        };
        assert_eq!(tick_phase(&key(1)), tick_phase(&key(1)));
        assert_ne!(tick_phase(&key(1)), tick_phase(&key(2)));
    }

    #[test]
    fn deadline_requeue_lands_at_or_just_after_the_deadline() {
        let in_5s = Timestamp::now() + jiff::SignedDuration::from_secs(5);
        let d = until(in_5s);
        assert!(
            d > Duration::from_secs(4) && d <= Duration::from_millis(5020),
            "{d:?}"
        );
        let past = Timestamp::now() - jiff::SignedDuration::from_secs(5);
        assert_eq!(until(past), Duration::from_millis(20));
    }
}
