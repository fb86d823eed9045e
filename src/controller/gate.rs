//! The PipelineGate reconciler: read the PAT, read the runs (shared per pipeline), decide, write status
//! only when it changed, record Events on transitions, and requeue at the right moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::gate_status::{self, Desired, GateEvent, Outcome, Severity, StatusInput};
use super::token_cache::TokenCache;
use super::Error;
use crate::ado::{AdoClient, AdoError, Build};
use crate::conditions::{self, READY};
use crate::crd::{duration_or, PipelineGate, PipelineGateStatus};
use crate::gate::{self, DecisionInput, Phase, Policy, Reason, Verdict};
use crate::pipeline_key::{full_branch_ref, PipelineKey};
use crate::poll_cache::PollCache;
use crate::secret::SecretString;
use crate::telemetry::Metrics;
use crate::webhook::{HintIndex, WebhookMetrics};

/// Field manager for status writes.
pub const FIELD_MANAGER: &str = "lockstep";
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
    /// How long a Secret read is shared by the gates that reference it (see [`TokenCache`]); zero reads
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

/// What the last status write of one gate was based on, to bridge the moment before the watch delivers it.
struct Written {
    base_resource_version: Option<String>,
    status: PipelineGateStatus,
}

/// Everything a gate reconcile needs.
pub struct GateContext {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub recorders: EventRecorders,
    pub metrics: Arc<Metrics>,
    pub config: GateConfig,
    /// The controller's view of all gates, for the Ready gauge and to prune per-gate memory.
    pub store: Store<PipelineGate>,
    /// The webhook receiver's hint log, when it runs: to count changes polling found before any hook.
    pub hints: Option<WebhookHints>,
    /// Secrets read for their PAT, shared by the gates that reference them.
    pub tokens: TokenCache,
    memory: Mutex<Memory>,
}

/// Recorders that Events go through, one chosen per object.
///
/// kube's `Recorder` keeps every Event it recorded for six minutes (to count repeats as a series) and
/// sweeps that whole cache, under one lock, on every publish. With one recorder, N gates changing at once
/// cost O(N²) and serialize on the lock; spread over shards, each sweep sees N / shards entries. An
/// object always maps to the same shard, so its repeats still form one series.
pub struct EventRecorders(Vec<Recorder>);

/// Enough that a sweep stays short at tens of thousands of objects; a recorder is a few pointers.
const EVENT_RECORDER_SHARDS: usize = 64;

impl EventRecorders {
    pub fn new(client: &kube::Client, reporter: &Reporter) -> Self {
        Self(
            (0..EVENT_RECORDER_SHARDS)
                .map(|_| Recorder::new(client.clone(), reporter.clone()))
                .collect(),
        )
    }

    pub fn for_object(&self, key: &ObjectRef<PipelineGate>) -> &Recorder {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys: the same object picks the same shard for the process's life.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.0[(h.finish() % self.0.len() as u64) as usize]
    }
}

/// Per-gate memory, and how many remembered gates are in each Ready state (kept in step with the map, so
/// the gauge costs O(1) per reconcile rather than a pass over every gate).
#[derive(Default)]
struct Memory {
    gates: HashMap<ObjectRef<PipelineGate>, GateMemory>,
    ready: ReadyTally,
}

#[derive(Default)]
struct ReadyTally {
    r#true: i64,
    r#false: i64,
    unknown: i64,
}

impl ReadyTally {
    fn add(&mut self, ready: Option<&str>, by: i64) {
        match ready {
            Some("True") => self.r#true += by,
            Some("False") => self.r#false += by,
            Some("Unknown") => self.unknown += by,
            _ => {}
        }
    }
}

/// What the reconciler needs from the webhook receiver to measure webhook health.
#[derive(Clone)]
pub struct WebhookHints {
    pub index: Arc<HintIndex>,
    pub metrics: WebhookMetrics,
}

#[derive(Default)]
struct GateMemory {
    last_success: Option<Timestamp>,
    failures: u32,
    written: Option<Written>,
    ready: Option<String>,
    /// When this gate last read runs (cached or not), to tell whether a hint arrived since.
    last_poll: Option<Instant>,
}

impl GateContext {
    pub fn new(
        client: kube::Client,
        ado: AdoClient,
        cache: Arc<BuildsCache>,
        recorders: EventRecorders,
        metrics: Arc<Metrics>,
        config: GateConfig,
        store: Store<PipelineGate>,
    ) -> Self {
        Self {
            client,
            ado,
            cache,
            recorders,
            metrics,
            tokens: TokenCache::new(config.secret_cache_ttl),
            config,
            store,
            hints: None,
            memory: Mutex::new(Memory::default()),
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

    fn with_memory<T>(
        &self,
        key: &ObjectRef<PipelineGate>,
        f: impl FnOnce(&mut GateMemory) -> T,
    ) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.gates.entry(key.clone()).or_default())
    }

    /// Record the gate's Ready state and refresh the gauge; forget gates that left the store.
    fn update_ready_gauge(&self, key: &ObjectRef<PipelineGate>, ready: Option<String>) {
        let mut guard = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let memory = &mut *guard;
        let entry = memory.gates.entry(key.clone()).or_default();
        let previous = std::mem::replace(&mut entry.ready, ready);
        memory.ready.add(previous.as_deref(), -1);
        memory.ready.add(entry.ready.as_deref(), 1);
        // Remembering more gates than the store holds means some were deleted: only then is a pass
        // over all of them worth it.
        if memory.gates.len() > self.store.len() {
            let (gates, tally) = (&mut memory.gates, &mut memory.ready);
            gates.retain(|k, m| {
                let keep = k == key || self.store.get(k).is_some();
                if !keep {
                    tally.add(m.ready.as_deref(), -1);
                }
                keep
            });
        }
        let tally = &memory.ready;
        self.metrics
            .set_ready_counts(KIND, tally.r#true, tally.r#false, tally.unknown);
    }
}

/// Reconcile one gate. Azure DevOps problems become status; only Kubernetes API failures are errors.
pub async fn reconcile(gate: Arc<PipelineGate>, ctx: Arc<GateContext>) -> Result<Action, Error> {
    let timer = ctx.metrics.reconcile_started(KIND);
    let result = reconcile_inner(&gate, &ctx).await;
    let key = ObjectRef::from_obj(&*gate);
    match &result {
        Ok(_) => {
            ctx.with_memory(&key, |m| m.failures = 0);
            timer.finish("success");
        }
        Err(e) => timer.finish(e.category()),
    }
    result
}

/// Back off exponentially per gate on Kubernetes API errors: 1s, 2s, 4s … capped at 5 minutes.
pub fn error_policy(gate: Arc<PipelineGate>, error: &Error, ctx: Arc<GateContext>) -> Action {
    let key = ObjectRef::from_obj(&*gate);
    let failures = ctx.with_memory(&key, |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    let delay = Duration::from_secs(1u64 << failures.saturating_sub(1).min(9))
        .min(Duration::from_secs(300));
    warn!(gate = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// What reading Azure DevOps (or failing to get that far) produced.
enum Read {
    /// `read_ok`: from a successful Builds List, as opposed to an error verdict or a missing Secret.
    Verdict {
        verdict: Box<Verdict>,
        read_ok: bool,
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
    let stale_after = duration_or(&spec.policy.stale_after, ctx.config.default_stale_after);
    let interval = duration_or(&spec.interval, ctx.config.default_interval);
    let current = current_status(gate, ctx, &key);

    let read = if spec.suspend {
        Read::Suspended
    } else {
        match read_token(gate, &namespace, &ctx.client, &ctx.tokens).await? {
            Err(verdict) => Read::Verdict {
                verdict: Box::new(verdict),
                read_ok: false,
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
        let previous_poll = ctx.with_memory(&key, |m| {
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
    let last_success = ctx.with_memory(&key, |m| m.last_success);
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
        gate,
        &namespace,
        &name,
        current.as_ref(),
        &desired,
        ctx,
        &key,
    )
    .await?;
    publish_events(gate, &desired.events, ctx).await;
    ctx.update_ready_gauge(&key, ready);

    let action = match &read {
        Read::Suspended => Action::await_change(),
        Read::Verdict {
            verdict,
            read_ok: true,
        } => {
            let period = match verdict.phase {
                Phase::Waiting => ctx.config.fast_interval,
                Phase::Open | Phase::Blocked => interval,
            };
            let mut after = next_poll(period, pipeline_phase(gate), Timestamp::now());
            if let Some(deadline) = verdict.deadline.filter(|_| verdict.phase == Phase::Waiting) {
                after = after.min(until(deadline));
            }
            Action::requeue(after)
        }
        // Bad credentials or a missing pipeline: nothing changes until someone fixes it (the Secret watch
        // and spec changes trigger a reconcile sooner), so the normal interval is plenty.
        Read::Verdict { read_ok: false, .. } => Action::requeue(interval),
        Read::Transient { retry_after, .. } => {
            let mut after = ctx.config.fast_interval.min(interval);
            if let Some(retry_after) = retry_after {
                after = after.max(*retry_after);
            }
            Action::requeue(after)
        }
    };
    debug!(gate = %key, ?action, "reconciled");
    Ok(action)
}

/// Time until the next poll: the next point of a grid of `period` steps whose offset is fixed per
/// pipeline (`phase`). Every gate following a pipeline polls at the same instants, however it came by its
/// last answer (a webhook, its creation, a spec change), so they keep sharing one request per period;
/// requeueing `period` after each gate's own answer let gates that read at different times drift into
/// separate cohorts, each with its own request. Different pipelines get different offsets, which spreads
/// the polls over the period. Never sooner than 200 ms (no busy loop) and never later than `period`
/// (plus those 200 ms) from now.
fn next_poll(period: Duration, phase: u64, now: Timestamp) -> Duration {
    let period_ms = period.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
    let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let offset = phase % period_ms;
    let since_grid = (now_ms + period_ms - offset) % period_ms;
    Duration::from_millis(period_ms - since_grid).max(Duration::from_millis(200))
}

/// The grid offset of the gate's pipeline: a hash with fixed keys, so every replica picks the same.
fn pipeline_phase(gate: &PipelineGate) -> u64 {
    use std::hash::{Hash, Hasher};
    let ado = &gate.spec.azure_devops;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    PipelineKey::new(
        &ado.organization_url,
        &ado.project,
        gate.spec.pipeline.definition_id,
        &gate.spec.pipeline.branch,
    )
    .hash(&mut h);
    h.finish()
}

/// Duration until `deadline` (whole seconds), plus a little so the reconcile runs at or after it.
fn until(deadline: Timestamp) -> Duration {
    let left = deadline.duration_since(Timestamp::now());
    Duration::try_from(left).unwrap_or_default() + Duration::from_millis(20)
}

/// The gate's current status: the object's, unless the watch has not yet delivered our last write.
fn current_status(
    gate: &PipelineGate,
    ctx: &GateContext,
    key: &ObjectRef<PipelineGate>,
) -> Option<PipelineGateStatus> {
    let rv = gate.metadata.resource_version.clone();
    ctx.with_memory(key, |m| match &m.written {
        Some(w) if w.base_resource_version == rv => Some(w.status.clone()),
        // The watch delivered a newer object: the copy is never needed again, so it is not kept.
        _ => {
            m.written = None;
            gate.status.clone()
        }
    })
}

/// The PAT from the gate's Secret, or the AuthenticationFailed verdict that says which Secret/key is wrong.
async fn read_token(
    gate: &PipelineGate,
    namespace: &str,
    client: &kube::Client,
    tokens: &TokenCache,
) -> Result<Result<SecretString, Verdict>, Error> {
    let secret_ref = &gate.spec.azure_devops.credentials.secret_ref;
    let secret = match tokens.get(namespace, &secret_ref.name) {
        Some(cached) => cached,
        None => {
            let ticket = tokens.ticket();
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let read = secrets
                .get_opt(&secret_ref.name)
                .await
                .map_err(|source| Error::ReadSecret {
                    namespace: namespace.to_string(),
                    name: secret_ref.name.clone(),
                    source,
                })?
                .map(Arc::new);
            tokens.store(ticket, namespace, &secret_ref.name, read.clone());
            read
        }
    };
    let problem = match secret {
        None => format!(
            "Secret {namespace}/{} was not found: create it with the personal access token under key \"{}\"",
            secret_ref.name, secret_ref.key
        ),
        Some(secret) => {
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&secret_ref.key))
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
            match value {
                Some(token) if !token.is_empty() => return Ok(Ok(SecretString::new(token))),
                Some(_) => format!(
                    "key \"{}\" of Secret {namespace}/{} is empty: put the personal access token there",
                    secret_ref.key, secret_ref.name
                ),
                None => format!(
                    "Secret {namespace}/{} has no key \"{}\": put the personal access token under that key",
                    secret_ref.name, secret_ref.key
                ),
            }
        }
    };
    Ok(Err(Verdict {
        phase: Phase::Blocked,
        reason: Reason::AuthenticationFailed,
        message: problem,
        latest_run: None,
        last_completed_run: None,
        last_succeeded_run: None,
        waiting: None,
        deadline: None,
    }))
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
        };
    };
    let not_before = gate
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let fetched = ctx
        .cache
        .get_or_fetch(&key, token, not_before, || {
            ctx.ado.list_builds(
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
            }
        }
        Err(err) => match gate::decide_error(err) {
            Some(verdict) => Read::Verdict {
                verdict: Box::new(verdict),
                read_ok: false,
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

async fn write_status_if_changed(
    gate: &PipelineGate,
    namespace: &str,
    name: &str,
    current: Option<&PipelineGateStatus>,
    desired: &Desired,
    ctx: &GateContext,
    key: &ObjectRef<PipelineGate>,
) -> Result<(), Error> {
    if current == Some(&desired.status) {
        return Ok(());
    }
    let api: Api<PipelineGate> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": PipelineGate::api_version(&()),
        "kind": PipelineGate::kind(&()),
        "status": desired.status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        kind: KIND,
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    })?;
    let ready = conditions::find(&desired.status.conditions, READY);
    info!(
        gate = %key,
        ready = ready.map(|c| c.status.as_str()),
        reason = ready.map(|c| c.reason.as_str()),
        "status updated"
    );
    ctx.with_memory(key, |m| {
        m.written = Some(Written {
            base_resource_version: gate.metadata.resource_version.clone(),
            status: desired.status.clone(),
        })
    });
    Ok(())
}

async fn publish_events(gate: &PipelineGate, events: &[GateEvent], ctx: &GateContext) {
    let reference = gate.object_ref(&());
    for e in events {
        let event = Event {
            type_: match e.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: e.reason.to_string(),
            note: Some(truncate(&e.note, 1000)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(err) = ctx
            .recorders
            .for_object(&ObjectRef::from_obj(gate))
            .publish(&event, &reference)
            .await
        {
            // An Event is best effort; the status already says the same thing.
            warn!(gate = %ObjectRef::from_obj(gate), reason = e.reason, error = %err, "could not record Event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Gates in the Secret's namespace that reference it: a rotated PAT re-reconciles exactly those.
pub fn gates_using_secret(
    store: &Store<PipelineGate>,
    secret: &Secret,
) -> Vec<ObjectRef<PipelineGate>> {
    let (Some(ns), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|g| {
            g.metadata.namespace.as_deref() == Some(ns)
                && g.spec.azure_devops.credentials.secret_ref.name == name
        })
        .map(|g| ObjectRef::from_obj(&**g))
        .collect()
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
    fn the_ready_tally_follows_gates_between_states() {
        let mut tally = ReadyTally::default();
        tally.add(Some("True"), 1);
        tally.add(Some("True"), 1);
        tally.add(None, -1);
        // One gate moves from True to False.
        tally.add(Some("True"), -1);
        tally.add(Some("False"), 1);
        tally.add(Some("Unknown"), 1);
        assert_eq!((tally.r#true, tally.r#false, tally.unknown), (1, 1, 1));
    }

    #[tokio::test]
    async fn an_object_always_records_through_the_same_recorder() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(service, "default");
        let recorders = EventRecorders::new(
            &client,
            &Reporter {
                controller: "lockstep".into(),
                instance: None,
            },
        );
        let shard = |name: &str| {
            let key = ObjectRef::<PipelineGate>::new(name).within("ns");
            recorders.for_object(&key) as *const Recorder
        };
        assert_eq!(shard("a"), shard("a"));
        let distinct: std::collections::HashSet<_> =
            (0..200).map(|i| shard(&format!("gate-{i}"))).collect();
        assert!(distinct.len() > 1, "objects spread over the shards");
    }

    #[test]
    fn polls_land_on_the_pipeline_grid() {
        let period = Duration::from_secs(10);
        let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
        // Offset 3 s: the grid is …, 3 s, 13 s, 23 s, …
        assert_eq!(next_poll(period, 3_000, at(1_000)), Duration::from_secs(2));
        assert_eq!(
            next_poll(period, 3_000, at(5_500)),
            Duration::from_millis(7_500)
        );
        // Exactly on a grid point: the next one, a full period on.
        assert_eq!(next_poll(period, 3_000, at(13_000)), period);
        // Two gates of one pipeline that read at different moments meet at the same instant.
        let first =
            at(21_000) + jiff::SignedDuration::try_from(next_poll(period, 7, at(21_000))).unwrap();
        let second =
            at(24_321) + jiff::SignedDuration::try_from(next_poll(period, 7, at(24_321))).unwrap();
        assert_eq!(first, second);
        // Never a busy loop, never longer than the period.
        assert_eq!(
            next_poll(period, 3_000, at(12_950)),
            Duration::from_millis(200)
        );
        for now in (0..50_000).step_by(777) {
            let d = next_poll(period, 12_345, at(now));
            assert!(d >= Duration::from_millis(200) && d <= period, "{d:?}");
        }
    }

    #[test]
    fn gates_of_one_pipeline_share_a_phase() {
        let a = gate("a", "one", "pat");
        let mut b = gate("b", "two", "other");
        assert_eq!(pipeline_phase(&a), pipeline_phase(&b));
        b.spec.pipeline.definition_id = 2;
        assert_ne!(pipeline_phase(&a), pipeline_phase(&b));
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

    #[test]
    fn long_event_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1000 + "…".len());
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", 1000), "short");
    }
}
