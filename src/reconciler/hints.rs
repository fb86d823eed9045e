//! What a reconciler borrows from the webhook receiver, when one runs in this process, to measure webhook
//! health: when each object was last hinted, and the counter of changes polling found first. Passed in by
//! `lockstep run`, so no reconciler reaches into the receiver.

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::reflector::ObjectRef;
use kube::Resource;

use super::hook_relay::HookRelay;
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
    /// Gates the receiver hands straight to the PipelineGate controller (see [`HookRelay`]).
    pub gate_relay: Arc<HookRelay<PipelineGate>>,
}

impl WebhookHints {
    /// Polling found a new run or commit of `key`: was it hinted since `previous_poll`? If not, webhooks
    /// are missing, late or losing events, and the metric says so.
    pub fn note_polled_change<K>(&self, key: &ObjectRef<K>, previous_poll: Option<Instant>)
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
