//! What a reconciler borrows from the webhook receiver, when one runs in this process, to measure webhook
//! health: when each object was last hinted, and the counter of changes polling found first. Passed in by
//! `lockstep run`, so no reconciler reaches into the receiver.

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::reflector::ObjectRef;
use kube::Resource;

use super::hook_relay::HookRelay;
use super::idle::{instant_of, HookActivity, ProjectKey};
use crate::crd::PipelineGate;
use crate::telemetry::WebhookMetrics;

/// When a webhook last hinted an object (the receiver's index implements it).
pub trait HintLog: Send + Sync {
    /// `kind` is the object's kind (`PipelineGate`, `ServiceTrace`); `None`: never hinted.
    fn last_hint(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Instant>;
}

#[derive(Clone)]
pub struct WebhookHints {
    pub log: Arc<dyn HintLog>,
    pub metrics: WebhookMetrics,
    /// Whether hooks have proven themselves per organization+project (issue 15, [`super::idle`]); shared
    /// by both reconcilers.
    pub activity: Arc<HookActivity>,
    /// Gates the receiver hands straight to the PipelineGate controller (see [`HookRelay`]).
    pub gate_relay: Arc<HookRelay<PipelineGate>>,
}

impl WebhookHints {
    pub fn new(log: Arc<dyn HintLog>, metrics: WebhookMetrics) -> Self {
        Self {
            log,
            metrics,
            activity: Arc::default(),
            gate_relay: Arc::default(),
        }
    }

    /// Are hooks arriving for `project`? Folds in first what this object knows: the receiver's hint time
    /// for it in this process, and `requested_at` (the `lockstep.dev/requested-at` a receiver on any
    /// replica wrote). Both are written only after a delivery was authenticated and accepted.
    pub fn hooks_proven<K>(
        &self,
        key: &ObjectRef<K>,
        project: &ProjectKey,
        requested_at: Option<jiff::Timestamp>,
    ) -> bool
    where
        K: Resource<DynamicType = ()>,
    {
        let now = Instant::now();
        let kind = K::kind(&());
        let local = self
            .log
            .last_hint(&kind, key.namespace.as_deref(), &key.name);
        let remote = requested_at.and_then(|at| instant_of(at, jiff::Timestamp::now(), now));
        if let Some(at) = local.max(remote) {
            self.activity.note_delivery(project, at);
        }
        self.activity.proven(project, now)
    }

    /// [`WebhookHints::note_polled_change`] for an object of `project`: a change polling found first
    /// also makes hooks of that project unproven until the next delivery ([`super::idle`]).
    /// `requested_at` as in [`WebhookHints::hooks_proven`]: a delivery another replica received since the
    /// previous poll announced the change too, even though this process' hint log does not know it.
    pub fn note_polled_change_in<K>(
        &self,
        key: &ObjectRef<K>,
        previous_poll: Option<Instant>,
        project: Option<&ProjectKey>,
        requested_at: Option<jiff::Timestamp>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        if !self.note_polled_change(key, previous_poll) {
            return;
        }
        let now = Instant::now();
        let remote = requested_at.and_then(|at| instant_of(at, jiff::Timestamp::now(), now));
        let announced_elsewhere = match (remote, previous_poll) {
            (Some(hint), Some(previous)) => hint >= previous,
            _ => false,
        };
        if let (Some(project), false) = (project, announced_elsewhere) {
            self.activity.note_polling_found_first(project, now);
        }
    }

    /// Polling found a new run or commit of `key`: was it hinted since `previous_poll`? If not, webhooks
    /// are missing, late or losing events, and the metric says so. Returns true when polling was first.
    pub fn note_polled_change<K>(&self, key: &ObjectRef<K>, previous_poll: Option<Instant>) -> bool
    where
        K: Resource<DynamicType = ()>,
    {
        let kind = K::kind(&());
        let last = self
            .log
            .last_hint(&kind, key.namespace.as_deref(), &key.name);
        let hinted = match (last, previous_poll) {
            (Some(hint), Some(previous)) => hint >= previous,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !hinted {
            self.metrics
                .record_polling_found_first_for(kind_label(&kind));
        }
        !hinted
    }
}

/// The metric's label: a fixed set, so a kind name never becomes an unbounded label value.
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "PipelineGate" => "PipelineGate",
        "ServiceTrace" => "ServiceTrace",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PipelineGate;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Log(Mutex<Option<Instant>>);

    impl HintLog for Log {
        fn last_hint(&self, _: &str, _: Option<&str>, _: &str) -> Option<Instant> {
            *self.0.lock().unwrap()
        }
    }

    fn setup() -> (Arc<Log>, WebhookHints, ObjectRef<PipelineGate>, ProjectKey) {
        let log = Arc::new(Log::default());
        let hints = WebhookHints::new(log.clone(), WebhookMetrics::new());
        let key = ObjectRef::new("g").within("n");
        let project = ProjectKey::new("https://dev.azure.com/o", "P").unwrap();
        (log, hints, key, project)
    }

    #[test]
    fn a_local_hint_proves_hooks_and_a_change_polling_found_first_unproves_them() {
        let (log, hints, key, project) = setup();
        assert!(!hints.hooks_proven(&key, &project, None), "no delivery yet");
        *log.0.lock().unwrap() = Some(Instant::now());
        assert!(hints.hooks_proven(&key, &project, None));
        // Another object of the same project benefits; another project does not.
        let other: ObjectRef<PipelineGate> = ObjectRef::new("h").within("n");
        *log.0.lock().unwrap() = None;
        assert!(hints.hooks_proven(&other, &project, None));
        let elsewhere = ProjectKey::new("https://dev.azure.com/o", "Q").unwrap();
        assert!(!hints.hooks_proven(&other, &elsewhere, None));

        // A poll after the hint finds a new run nobody announced.
        let previous_poll = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        hints.note_polled_change_in(&key, previous_poll, Some(&project), None);
        assert!(!hints.hooks_proven(&other, &project, None));
        // The next delivery proves them again.
        std::thread::sleep(Duration::from_millis(2));
        *log.0.lock().unwrap() = Some(Instant::now());
        assert!(hints.hooks_proven(&key, &project, None));
    }

    #[test]
    fn an_announced_change_keeps_hooks_proven() {
        let (log, hints, key, project) = setup();
        let previous_poll = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        *log.0.lock().unwrap() = Some(Instant::now());
        hints.note_polled_change_in(&key, previous_poll, Some(&project), None);
        assert!(hints.hooks_proven(&key, &project, None));
    }

    #[test]
    fn another_replicas_annotation_counts_as_a_delivery_unless_in_the_future() {
        let (_log, hints, key, project) = setup();
        let future = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600);
        assert!(!hints.hooks_proven(&key, &project, Some(future)));
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(7200);
        assert!(!hints.hooks_proven(&key, &project, Some(old)));
        let previous_poll = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        let just_now = jiff::Timestamp::now();
        assert!(hints.hooks_proven(&key, &project, Some(just_now)));
        // The change that annotation announced is not "polling found first" for the stretch (the
        // metric, which reads this process' hint log only, still counts it).
        hints.note_polled_change_in(&key, previous_poll, Some(&project), Some(just_now));
        assert!(hints.hooks_proven(&key, &project, Some(just_now)));
    }
}
