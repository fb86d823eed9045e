//! The Events both controllers record, built so kube's `Recorder` groups only true repeats into a series.
//!
//! `Recorder::publish` folds an Event into an existing series when type, reason, action, reporter and
//! object match, and then only bumps the count: the note of the first Event stays. Two different
//! transitions with one reason (`GateWaiting` for run .1, then for run .2) would so show the first run's
//! message "x2 over 6s" in `kubectl describe`. The action carries a digest of the note, so an Event joins a
//! series only when it says exactly the same thing again. Both controllers publish on transitions only, so
//! a series still means a real recurrence (a gate flapping back to the same state), never a poll.

use std::hash::{DefaultHasher, Hash, Hasher};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
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

/// Recorders that Events go through, one chosen per object.
///
/// kube's `Recorder` keeps every Event it recorded for six minutes (to count repeats as a series) and
/// sweeps that whole cache, under one lock, on every publish. With one recorder, N objects changing at
/// once cost O(N²) and serialize on the lock; spread over shards, each sweep sees N / shards entries. An
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

    /// The recorder for `key`: always the same one for the same object.
    pub fn for_object<K>(&self, key: &ObjectRef<K>) -> &Recorder
    where
        K: Resource<DynamicType = ()>,
    {
        // DefaultHasher::new() has fixed keys: the same object picks the same shard for the process's life.
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.0[(h.finish() % self.0.len() as u64) as usize]
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
    let key = ObjectRef::from_obj(obj);
    if let Err(err) = recorders
        .for_object(&key)
        .publish(&event, &obj.object_ref(&()))
        .await
    {
        warn!(object = %key, reason, error = %err, "could not record Event");
    }
}

/// `Reconcile/<digest of the note>`: well under the 128 characters the API allows. `DefaultHasher::new()`
/// is the same in every call, which is all the Recorder's in-process series cache needs.
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
    use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};

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
            let key = ObjectRef::<crate::crd::PipelineGate>::new(name).within("ns");
            recorders.for_object(&key) as *const Recorder
        };
        assert_eq!(shard("a"), shard("a"));
        let distinct: std::collections::HashSet<_> =
            (0..200).map(|i| shard(&format!("gate-{i}"))).collect();
        assert!(distinct.len() > 1, "objects spread over the shards");
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
                .for_object(&ObjectRef::<crate::crd::PipelineGate>::new("base").within("default"))
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
    }
}
