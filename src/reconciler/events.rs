//! The Events both controllers record, and the recorder that posts them as `events.k8s.io/v1` series.
//!
//! An Event joins an existing series when type, reason, action, reporter, regarded and related object
//! match, and then only bumps the count: the note of the first Event stays. Two different transitions
//! with one reason (`GateWaiting` for run .1, then for run .2) would so show the first run's message
//! "x2 over 6s" in `kubectl describe`. The action carries a digest of the note, so an Event joins a series
//! only when it says exactly the same thing again. Both controllers publish on transitions only, so a
//! series still means a real recurrence (a gate flapping back to the same state), never a poll.
//!
//! [`EventRecorders`] sends what kube-runtime 5's `Recorder` sends (a create for the first Event of a
//! series, then a patch of `series.count` / `series.lastObservedTime` for each repeat within six minutes),
//! but remembers only a hash of each series key with its count and times. kube's `Recorder` keeps every
//! Event it posted, whole, for six minutes: at 10 000 gates that was about 50 MiB after a settle.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use serde_json::json;
use tracing::warn;

/// Every Event reason lockstep records, so `kubectl describe` readers and alerts have one list to look up.
pub mod reasons {
    /// A gate opened: its pipeline's newest run succeeded.
    pub const GATE_OPENED: &str = "GateOpened";
    /// A gate waits for a queued or running run.
    pub const GATE_WAITING: &str = "GateWaiting";
    /// A gate blocked on a failed, canceled or missing run.
    pub const GATE_BLOCKED: &str = "GateBlocked";
    /// A gate waited longer than its policy allows.
    pub const TIMED_OUT: &str = "TimedOut";
    /// The personal access token cannot be read or was rejected.
    pub const AUTH_FAILED: &str = "AuthFailed";
    /// Azure DevOps failed transiently; the last verdict stands.
    pub const AZURE_DEVOPS_ERROR: &str = "AzureDevOpsError";
    /// Azure DevOps has not answered for longer than `staleAfter`: Ready is Unknown.
    pub const API_UNAVAILABLE: &str = "ApiUnavailable";
    /// A trace reached Ready: the newest build runs in the cluster.
    pub const TRACE_READY: &str = "TraceReady";
    /// A trace is stalled on a failure or something it cannot read.
    pub const TRACE_STALLED: &str = "TraceStalled";
    /// A trace follows a change in flight.
    pub const TRACE_PROGRESSING: &str = "TraceProgressing";
    /// A trace cannot tell where the change is.
    pub const TRACE_UNKNOWN: &str = "TraceUnknown";
    /// A gate opened and lockstep asked the Flux Kustomizations / Argo CD Applications waiting on it to
    /// reconcile now; the note names them.
    pub const NUDGED: &str = "Nudged";
    /// A nudge was refused or failed (RBAC, a missing object); the gate is open regardless.
    pub const NUDGE_FAILED: &str = "NudgeFailed";
    /// A service-hook subscription covering the object's pipeline went on probation or was disabled:
    /// Azure DevOps drops its events until it is enabled again (`lockstep hooks sync`).
    pub const HOOK_UNHEALTHY: &str = "HookSubscriptionUnhealthy";
    /// The credential may not read the service-hook subscriptions (said once per organization).
    pub const HOOKS_UNREADABLE: &str = "HookSubscriptionsUnreadable";
    /// The hook set-up (`--hooks-sync`) created or re-enabled subscriptions the object needs.
    pub const HOOKS_SYNCED: &str = "HookSubscriptionsSynced";
    /// A trace's newest build reached one of its environments.
    pub const TRACE_ARRIVED: &str = "BuildArrived";
}

/// The API server rejects notes above 1 kB.
const MAX_NOTE_BYTES: usize = 1000;

/// An Event about the regarded object, in a series only with Events of the same type, reason and note.
pub fn transition_event(type_: EventType, reason: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        action: series_action(note),
        secondary: None,
    }
}

/// How long a series stays open after its last Event: kube-runtime's `Recorder` (and client-go's
/// `EventSeries` logic, `k8s.io/client-go/tools/events`) use six minutes.
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// Open series remembered at most. Far above what transitions produce (one per object and state within
/// six minutes); past it the series idle longest are forgotten, so a repeat starts a new Event instead of
/// joining the old one (what kube does after the TTL too).
const MAX_SERIES: usize = 65_536;

/// Expired series are swept at most this often (and whenever the map is full); an expired entry found
/// on lookup is never used, so the sweep only bounds memory.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// What the recorder knows of one open series: enough to name its Event and count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Series {
    /// When the series' Event was created; its name ends in these nanoseconds, as kube names it.
    first: Timestamp,
    last: Timestamp,
    count: i32,
}

#[derive(Default)]
struct SeriesCache {
    /// Keyed by a hash of the series key (see [`EventRecorders::series_key`]). A collision at most joins
    /// an Event to a series whose Event then has another name: the patch finds nothing, and a new Event is
    /// created instead.
    open: HashMap<u64, Series>,
    last_sweep: Option<Timestamp>,
}

impl SeriesCache {
    /// The open series for `key` at `now`, if it has not expired.
    fn get(&self, key: u64, now: Timestamp) -> Option<Series> {
        self.open
            .get(&key)
            .copied()
            .filter(|s| s.last + SERIES_TTL > now)
    }

    fn record(&mut self, key: u64, series: Series) {
        let now = series.last;
        let due = self
            .last_sweep
            .is_none_or(|last| now.duration_since(last) >= SWEEP_EVERY);
        if due || (self.open.len() >= MAX_SERIES && !self.open.contains_key(&key)) {
            self.open.retain(|_, s| s.last + SERIES_TTL > now);
            self.last_sweep = Some(now);
        }
        if self.open.len() >= MAX_SERIES && !self.open.contains_key(&key) {
            // Every series is live: forget the one idle longest (O(n), only when over the bound).
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| *k)
            {
                self.open.remove(&oldest);
            }
        }
        self.open.insert(key, series);
    }
}

/// Posts Events about objects, counting repeats within six minutes as a series of one Event.
///
/// Memory is one small entry per open series (a key hash, two times and a count), bounded by
/// [`MAX_SERIES`]; the lock is never held across a request.
///
/// A cheap handle: clones share the series and the background queue
/// ([`EventRecorders::publish_after_reconcile`]).
#[derive(Clone)]
pub struct EventRecorders(Arc<RecorderState>);

pub struct RecorderState {
    client: kube::Client,
    reporter: Reporter,
    /// Random keys: names of the cluster's objects feed the hash, so its buckets must not be predictable.
    hasher: RandomState,
    series: Mutex<SeriesCache>,
    /// Events waiting to be posted, and how many posters are running. A poster is a task spawned when
    /// there is work and fewer than [`BACKGROUND_POSTS`] run; it ends when the queue is empty, so an idle
    /// process runs none and nothing long-lived can die unnoticed.
    queue: Mutex<Backlog>,
    max_queued: usize,
}

#[derive(Default)]
struct Backlog {
    waiting: VecDeque<Queued>,
    posters: usize,
    /// Reconciles whose Events are waiting or being posted.
    unposted: usize,
}

/// One reconcile's Events: a few hundred bytes, where a task per reconcile would hold a whole request
/// future.
struct Queued {
    regarding: ObjectReference,
    transitions: Vec<Transition>,
}

/// Background posters at once: few, so a burst of Events never stands in front of the status writes of
/// the reconciles that follow (the API server serves both).
const BACKGROUND_POSTS: usize = 4;

/// Reconciles whose Events may wait in the background. Past it the reconcile posts its own Events before
/// it returns: slower, but nothing is dropped and memory stays bounded.
const MAX_QUEUED: usize = 1024;

/// How long a stopping controller waits for Events still posting in the background
/// ([`EventRecorders::flush`]): they are best effort, and a stop must not wait on an API server that does
/// not answer.
pub const EVENT_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// One Event a reconcile publishes: see [`transition_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl std::ops::Deref for EventRecorders {
    type Target = RecorderState;
    fn deref(&self) -> &RecorderState {
        &self.0
    }
}

impl EventRecorders {
    pub fn new(client: &kube::Client, reporter: &Reporter) -> Self {
        Self(Arc::new(RecorderState {
            client: client.clone(),
            reporter: reporter.clone(),
            hasher: RandomState::new(),
            series: Mutex::new(SeriesCache::default()),
            queue: Mutex::new(Backlog::default()),
            max_queued: MAX_QUEUED,
        }))
    }

    #[cfg(test)]
    fn with_max_queued(client: &kube::Client, reporter: &Reporter, max_queued: usize) -> Self {
        let mut recorders = Self::new(client, reporter);
        if let Some(state) = Arc::get_mut(&mut recorders.0) {
            state.max_queued = max_queued;
        }
        recorders
    }

    /// Post a reconcile's `transitions` about `obj`, in order, once the reconcile has moved on: its
    /// status is written and says the same, so the Events need not hold the reconcile's slot (at 100
    /// gates per delivery they were half of the API requests in front of the last gate's status write).
    /// Best effort like every Event, except that a full queue makes the caller wait instead of dropping
    /// anything. [`EventRecorders::flush`] waits for them.
    pub async fn publish_after_reconcile<K>(&self, obj: &K, transitions: Vec<Transition>)
    where
        K: Resource<DynamicType = ()>,
    {
        if transitions.is_empty() {
            return;
        }
        let regarding = obj.object_ref(&());
        let queued = {
            let mut backlog = self.backlog();
            if backlog.waiting.len() >= self.max_queued {
                Err((regarding, transitions))
            } else {
                backlog.waiting.push_back(Queued {
                    regarding,
                    transitions,
                });
                backlog.unposted += 1;
                let spawn = backlog.posters < BACKGROUND_POSTS;
                if spawn {
                    backlog.posters += 1;
                }
                Ok(spawn)
            }
        };
        match queued {
            Err((regarding, transitions)) => self.post_all(&transitions, &regarding).await,
            Ok(true) => {
                let this = self.clone();
                tokio::spawn(async move { this.post_backlog().await });
            }
            Ok(false) => {}
        }
    }

    /// A poster: post what waits until nothing does. The count of posters goes down however it ends (a
    /// panic included), so the next reconcile with Events starts another.
    async fn post_backlog(&self) {
        struct Poster<'a>(&'a RecorderState);
        impl Drop for Poster<'_> {
            fn drop(&mut self) {
                self.0.backlog().posters -= 1;
            }
        }
        let _poster = Poster(self);
        loop {
            let Some(next) = self.backlog().waiting.pop_front() else {
                return;
            };
            self.post_all(&next.transitions, &next.regarding).await;
            self.backlog().unposted -= 1;
        }
    }

    async fn post_all(&self, transitions: &[Transition], regarding: &ObjectReference) {
        for t in transitions {
            let event = transition_event(t.type_, t.reason, &t.note);
            if let Err(err) = self.publish(&event, regarding).await {
                let object = format!(
                    "{}/{}",
                    regarding.namespace.as_deref().unwrap_or_default(),
                    regarding.name.as_deref().unwrap_or_default()
                );
                warn!(%object, reason = t.reason, error = %err, "could not record Event");
            }
        }
    }

    /// Wait, at most `within`, until the Events handed to the background are posted: at shutdown, after
    /// the last reconcile.
    pub async fn flush(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.queued() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Reconciles whose Events wait in the background or are being posted.
    pub fn queued(&self) -> usize {
        self.backlog().unposted
    }
}

impl RecorderState {
    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        // Every critical section is a push, a pop or a count: a poisoned lock is still consistent.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The series key kube-runtime uses: type, action, reason, reporter (fixed per recorder) and the
    /// regarded and related objects by apiVersion, kind, name, namespace and uid.
    fn series_key(&self, ev: &Event, regarding: &ObjectReference) -> u64 {
        fn reference(r: &ObjectReference, h: &mut impl Hasher) {
            (&r.api_version, &r.kind, &r.name, &r.namespace, &r.uid).hash(h);
        }
        let mut h = self.hasher.build_hasher();
        ev.type_.hash(&mut h);
        ev.action.hash(&mut h);
        ev.reason.hash(&mut h);
        reference(regarding, &mut h);
        match &ev.secondary {
            Some(r) => {
                1u8.hash(&mut h);
                reference(r, &mut h);
            }
            None => 0u8.hash(&mut h),
        }
        h.finish()
    }

    fn event_name(&self, regarding: &ObjectReference, first: Timestamp) -> String {
        format!(
            "{}.{:x}",
            regarding.name.as_ref().unwrap_or(&self.reporter.controller),
            first.as_nanosecond()
        )
    }

    fn series(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        // A panic while holding the lock leaves a consistent map (every write is one insert or retain).
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Post `ev` about `regarding`: a new Event, or a count bump of the open series it repeats.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        // Also the Event's name (with the regarded object's): each post takes its own time, so two
        // Events of one reconcile never share a name.
        let now = Timestamp::now();
        let key = self.series_key(ev, regarding);
        let open = self.series().get(key, now);
        let events: Api<K8sEvent> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        if let Some(open) = open {
            let count = open.count + 1;
            // Only the series changes; the API server keeps the rest (a merge patch, as kube sends).
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match events
                .patch(
                    &self.event_name(regarding, open.first),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.series().record(
                        key,
                        Series {
                            first: open.first,
                            last: now,
                            count,
                        },
                    );
                    return Ok(());
                }
                // Deleted meanwhile (the API server's event TTL, or a hash collision): start anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        events
            .create(&PostParams::default(), &self.new_event(ev, regarding, now))
            .await?;
        self.series().record(
            key,
            Series {
                first: now,
                last: now,
                count: 1,
            },
        );
        Ok(())
    }

    /// The first Event of a series, field for field what kube-runtime 5's `Recorder` creates.
    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(self.event_name(regarding, now)),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            series: None,
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            related: ev.secondary.clone(),
            ..K8sEvent::default()
        }
    }
}

/// Record a [`transition_event`] about `obj`. Best effort: the status already says the same thing, so
/// a failure is only logged and never fails the reconcile.
pub async fn publish_transition_event<K>(
    recorders: &EventRecorders,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let event = transition_event(type_, reason, note);
    if let Err(err) = recorders.publish(&event, &obj.object_ref(&())).await {
        let key = ObjectRef::from_obj(obj);
        warn!(object = %key, reason, error = %err, "could not record Event");
    }
}

/// `Reconcile/<digest of the note>`: well under the 128 characters the API allows. `DefaultHasher::new()`
/// is the same in every call and every process, so a restarted replica names the same series alike.
fn series_action(note: &str) -> String {
    let mut hasher = DefaultHasher::new();
    note.hash(&mut hasher);
    format!("Reconcile/{:016x}", hasher.finish())
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

/// The recorders the controller's unit tests publish through, as the controllers do but for instance "test".
#[cfg(test)]
pub fn test_recorders(client: &kube::Client) -> EventRecorders {
    EventRecorders::new(
        client,
        &Reporter {
            controller: "lockstep".into(),
            instance: Some("test".into()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::api::{Api, ListParams};
    use kube::ResourceExt;
    use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn series(first: i64, last: i64, count: i32) -> Series {
        Series {
            first: at(first),
            last: at(last),
            count,
        }
    }

    #[test]
    fn a_series_expires_six_minutes_after_its_last_event() {
        let mut cache = SeriesCache::default();
        cache.record(1, series(0, 100, 3));
        assert_eq!(cache.get(1, at(100 + 359)), Some(series(0, 100, 3)));
        assert_eq!(cache.get(1, at(100 + 360)), None, "expired on lookup");
        assert_eq!(cache.get(2, at(101)), None);
    }

    #[test]
    fn expired_series_are_swept_and_the_cache_stays_bounded() {
        let mut cache = SeriesCache::default();
        cache.record(1, series(0, 0, 1));
        // A minute later the sweep runs; at 6 minutes series 1 has expired and goes.
        cache.record(2, series(360, 360, 1));
        assert_eq!(cache.open.len(), 1);
        assert!(cache.open.contains_key(&2));

        let mut full = SeriesCache::default();
        for k in 0..MAX_SERIES as u64 {
            full.record(k, series(0, k as i64 % 300, 1));
        }
        assert_eq!(full.open.len(), MAX_SERIES);
        // All live: the one idle longest (key 0, last at 0; 300 shares it) makes room.
        full.record(u64::MAX, series(301, 301, 1));
        assert_eq!(full.open.len(), MAX_SERIES);
        assert!(full.open.contains_key(&u64::MAX));
        assert_eq!(
            (0..MAX_SERIES as u64)
                .filter(|k| !full.open.contains_key(k))
                .count(),
            1
        );
    }

    fn gate_named(name: &str) -> crate::crd::PipelineGate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {
                "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": "P",
                                "credentials": {"secretRef": {"name": "pat", "key": "token"}}},
                "pipeline": {"definitionId": 1, "branch": "main"}
            }
        }))
        .unwrap()
    }

    fn transitions(notes: &[&str]) -> Vec<Transition> {
        notes
            .iter()
            .map(|n| Transition {
                type_: EventType::Normal,
                reason: reasons::GATE_WAITING,
                note: n.to_string(),
            })
            .collect()
    }

    /// The notes of the Events about `name`, oldest first.
    async fn notes_about(events: &Api<K8sEvent>, name: &str) -> Vec<String> {
        let mut found: Vec<K8sEvent> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        found.into_iter().filter_map(|e| e.note).collect()
    }

    #[tokio::test]
    async fn events_handed_over_after_a_reconcile_are_posted_in_order_and_flushed() {
        let emu = KubeEmulator::start(EmulatorConfig::default())
            .await
            .unwrap();
        let client = emu.client().await;
        let recorders = test_recorders(&client);
        let events: Api<K8sEvent> = Api::namespaced(client, "default");
        let notes = ["Run 1 is queued", "Run 1 is in progress", "Run 1 succeeded"];
        let gates: Vec<_> = (0..20).map(|i| gate_named(&format!("g{i}"))).collect();
        for gate in &gates {
            recorders
                .publish_after_reconcile(gate, transitions(&notes))
                .await;
        }
        // Nothing to post is no work at all.
        recorders
            .publish_after_reconcile(&gates[0], Vec::new())
            .await;
        recorders.flush(std::time::Duration::from_secs(10)).await;
        assert_eq!(recorders.queued(), 0);
        for gate in &gates {
            assert_eq!(notes_about(&events, &gate.name_any()).await, notes);
        }
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_reconcile_post_its_own_events() {
        let emu = KubeEmulator::start(EmulatorConfig::default())
            .await
            .unwrap();
        let client = emu.client().await;
        let reporter = Reporter {
            controller: "lockstep".into(),
            instance: Some("test".into()),
        };
        let recorders = EventRecorders::with_max_queued(&client, &reporter, 0);
        let events: Api<K8sEvent> = Api::namespaced(client, "default");
        let gate = gate_named("full");
        recorders
            .publish_after_reconcile(&gate, transitions(&["Run 2 is queued"]))
            .await;
        // Posted before the call returned: nothing was queued, nothing dropped.
        assert_eq!(recorders.queued(), 0);
        assert_eq!(notes_about(&events, "full").await, ["Run 2 is queued"]);
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, MAX_NOTE_BYTES);
        assert!(t.len() <= MAX_NOTE_BYTES + "…".len());
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", MAX_NOTE_BYTES), "short");
    }

    #[test]
    fn the_action_differs_exactly_when_the_note_does() {
        let a = transition_event(EventType::Normal, "GateWaiting", "Run 20261122.1 is queued");
        let b = transition_event(EventType::Normal, "GateWaiting", "Run 20261122.2 is queued");
        let a_again =
            transition_event(EventType::Normal, "GateWaiting", "Run 20261122.1 is queued");
        assert_ne!(a.action, b.action);
        assert_eq!(a.action, a_again.action);
        assert!(a.action.len() <= 128, "{}", a.action);
    }

    /// Through kube's real Recorder against the emulator: what `kubectl describe` reads back.
    #[tokio::test]
    async fn a_new_message_is_a_new_event_and_a_repeat_joins_its_series() {
        let emu = KubeEmulator::start(EmulatorConfig::default())
            .await
            .unwrap();
        let client = emu.client().await;
        let recorders = test_recorders(&client);
        // The regarded object need not exist: the API server does not check `regarding`.
        let reference = ObjectReference {
            api_version: Some("lockstep.dev/v1alpha1".into()),
            kind: Some("PipelineGate".into()),
            namespace: Some("default".into()),
            name: Some("base".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        };
        for note in [
            "Run 20261122.1 is queued",
            "Run 20261122.1 is in progress",
            "Run 20261122.2 is queued",
            "Run 20261122.2 is queued",
        ] {
            recorders
                .publish(
                    &transition_event(EventType::Normal, "GateWaiting", note),
                    &reference,
                )
                .await
                .unwrap();
        }

        let events: Api<K8sEvent> = Api::namespaced(client, "default");
        let mut seen: Vec<(String, i32)> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.note.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("Run 20261122.1 is in progress".to_string(), 1),
                ("Run 20261122.1 is queued".to_string(), 1),
                ("Run 20261122.2 is queued".to_string(), 2),
            ]
        );

        // A third repeat patches the same Event again; what the create set stays.
        let repeat = transition_event(EventType::Normal, "GateWaiting", "Run 20261122.2 is queued");
        recorders.publish(&repeat, &reference).await.unwrap();
        let queued = |list: Vec<K8sEvent>| {
            list.into_iter()
                .filter(|e| e.note.as_deref() == Some("Run 20261122.2 is queued"))
                .collect::<Vec<_>>()
        };
        let found = queued(events.list(&ListParams::default()).await.unwrap().items);
        assert_eq!(found.len(), 1);
        let event = &found[0];
        let series = event.series.as_ref().unwrap();
        assert_eq!(series.count, 3);
        assert!(series.last_observed_time.0 >= event.event_time.as_ref().unwrap().0);
        assert_eq!(event.reporting_controller.as_deref(), Some("lockstep"));
        assert_eq!(event.reporting_instance.as_deref(), Some("test"));
        assert_eq!(event.action, Some(repeat.action.clone()));
        assert_eq!(event.regarding.as_ref(), Some(&reference));

        // The Event is gone (the API server's event TTL): the next repeat starts a new one.
        events
            .delete(&event.name_any(), &Default::default())
            .await
            .unwrap();
        recorders.publish(&repeat, &reference).await.unwrap();
        let found = queued(events.list(&ListParams::default()).await.unwrap().items);
        assert_eq!(found.len(), 1);
        assert_ne!(found[0].name_any(), event.name_any());
        assert_eq!(found[0].series, None);
    }
}
