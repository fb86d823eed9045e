//! Webhook health (the receiver records most of it; the gate reconciler records what polling found first), so a user sees when hooks lose events: deliveries by type and outcome, rejections by
//! reason, duplicates, patch latency, and how often polling found a change before any webhook did.
//! Every label value is from a fixed set (unknown event types are counted as `other`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event_type: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Cheap to clone: every clone updates the same series.
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    events: Family<EventLabels, Counter>,
    rejections: Family<ReasonLabels, Counter>,
    duplicates: Counter,
    hinted_objects: Family<KindLabels, Counter>,
    patch_seconds: Histogram,
    polling_found_first: Family<KindLabels, Counter>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            rejections: Family::default(),
            duplicates: Counter::default(),
            hinted_objects: Family::default(),
            // 1 ms … ~4 s: patches normally take a few milliseconds; the tail shows a struggling API server.
            patch_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            polling_found_first: Family::default(),
        }
    }
}

impl WebhookMetrics {
    /// Unregistered: for a receiver whose metrics nobody scrapes (tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Create the metrics and register them under `lockstep_webhook_*`, as [`super::Metrics::register`]
    /// does for the rest.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let registry = registry.sub_registry_with_prefix("lockstep");
        m.register_in(registry);
        m
    }

    fn register_in(&self, registry: &mut Registry) {
        registry.register(
            "webhook_events",
            "Service-hook deliveries that passed authentication and parsing, by event type and outcome (accepted, unmatched, test, ignored, duplicate, unavailable)",
            self.events.clone(),
        );
        registry.register(
            "webhook_rejections",
            "Service-hook deliveries refused before processing, by reason",
            self.rejections.clone(),
        );
        registry.register(
            "webhook_duplicates",
            "Deliveries whose event id was already processed (Azure DevOps retries)",
            self.duplicates.clone(),
        );
        registry.register(
            "webhook_hinted_objects",
            "Objects hinted because of a webhook (annotated with lockstep.dev/requested-at, or gates handed straight to this process's controller), by kind",
            self.hinted_objects.clone(),
        );
        registry.register(
            "webhook_patch_duration_seconds",
            "Time to hint every object one delivery concerns: the wait for gates handed to this process's controller, then the annotation patches",
            self.patch_seconds.clone(),
        );
        registry.register(
            "webhook_polling_found_first",
            "Changes that polling found before any webhook hinted them: webhooks are missing, late or losing events",
            self.polling_found_first.clone(),
        );
    }

    pub fn record_event(&self, event_type: &'static str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                event_type,
                outcome,
            })
            .inc();
    }

    pub fn record_rejection(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn record_duplicate(&self) {
        self.duplicates.inc();
    }

    pub fn record_hinted(&self, kind: &'static str, count: usize) {
        self.hinted_objects
            .get_or_create(&KindLabels { kind })
            .inc_by(count as u64);
    }

    pub fn observe_patch(&self, elapsed: std::time::Duration) {
        self.patch_seconds.observe(elapsed.as_secs_f64());
    }

    /// The controller calls this when a poll found a new run or commit for an object that had no webhook
    /// hint since the previous poll (see `HintIndex::last_hint`).
    pub fn record_polling_found_first(&self) {
        self.record_polling_found_first_for("unspecified");
    }

    /// As [`WebhookMetrics::record_polling_found_first`], labelled with the object kind
    /// (`PipelineGate`, `ServiceTrace`).
    pub fn record_polling_found_first_for(&self, kind: &'static str) {
        self.polling_found_first
            .get_or_create(&KindLabels { kind })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_series_render_with_prefix() {
        let mut registry = Registry::default();
        let m = WebhookMetrics::register(&mut registry);
        m.record_event("build.complete", "accepted");
        m.record_rejection("invalid_credentials");
        m.record_duplicate();
        m.record_hinted("PipelineGate", 2);
        m.observe_patch(std::time::Duration::from_millis(3));
        m.record_polling_found_first_for("PipelineGate");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for expected in [
            r#"lockstep_webhook_events_total{event_type="build.complete",outcome="accepted"} 1"#,
            r#"lockstep_webhook_rejections_total{reason="invalid_credentials"} 1"#,
            "lockstep_webhook_duplicates_total 1",
            r#"lockstep_webhook_hinted_objects_total{kind="PipelineGate"} 2"#,
            "lockstep_webhook_patch_duration_seconds_count 1",
            r#"lockstep_webhook_polling_found_first_total{kind="PipelineGate"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }
}
