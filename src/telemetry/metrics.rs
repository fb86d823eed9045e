//! Prometheus metrics (prometheus-client), registered once and shared through the controller context.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::ado::RequestObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `PipelineGate` or `ServiceTrace`.
    pub kind: String,
    /// `success` or an error category.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdoRequestLabels {
    /// The client's endpoint name (`builds_list`, ...), never a URL (unbounded cardinality).
    pub endpoint: String,
    /// HTTP status code, or `none` when no response arrived (timeout, connection error).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub ready: String,
}

/// Every metric lockstep exports.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub ado_requests: Family<AdoRequestLabels, Counter>,
    pub ado_request_duration: Histogram,
    pub objects_by_ready: Family<ReadyLabels, Gauge>,
    /// Builds List requests per pipeline-hour (issue 15); fed where the shared cache misses.
    pub builds_list: Arc<super::poll_metrics::BuildsListRate>,
}

impl Metrics {
    /// Create the metrics and register them under the `lockstep_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            ado_requests: Family::default(),
            ado_request_duration: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            objects_by_ready: Family::default(),
            builds_list: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("lockstep");
        r.register(
            "reconciles",
            "Reconciliations by kind and result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            m.reconcile_duration.clone(),
        );
        r.register(
            "ado_requests",
            "Azure DevOps HTTP requests by endpoint and status code",
            m.ado_requests.clone(),
        );
        r.register(
            "ado_request_duration_seconds",
            "Azure DevOps HTTP request latency",
            m.ado_request_duration.clone(),
        );
        r.register(
            "objects",
            "Objects by kind and Ready condition status",
            m.objects_by_ready.clone(),
        );
        r.register_collector(Box::new(m.builds_list.clone()));
        Arc::new(m)
    }

    /// Starts timing a reconciliation; record the result with [`ReconcileTimer::finish`].
    pub fn reconcile_started(self: &Arc<Self>, kind: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            kind,
            started: Instant::now(),
        }
    }

    /// Replace the Ready-state counts of one kind.
    pub fn set_ready_counts(&self, kind: &str, true_: i64, false_: i64, unknown: i64) {
        for (ready, n) in [("True", true_), ("False", false_), ("Unknown", unknown)] {
            self.objects_by_ready
                .get_or_create(&ReadyLabels {
                    kind: kind.to_string(),
                    ready: ready.to_string(),
                })
                .set(n);
        }
    }
}

/// Times one reconciliation and counts it by result.
pub struct ReconcileTimer {
    metrics: Arc<Metrics>,
    kind: &'static str,
    started: Instant,
}

impl ReconcileTimer {
    pub fn finish(self, result: &str) {
        self.metrics
            .reconcile_duration
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .reconciles
            .get_or_create(&ReconcileLabels {
                kind: self.kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }
}

/// Feeds the ADO client's responses into the metrics.
pub struct AdoRequestMetrics(pub Arc<Metrics>);

impl RequestObserver for AdoRequestMetrics {
    fn on_response(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "none".to_string(), |s| s.to_string());
        self.0
            .ado_requests
            .get_or_create(&AdoRequestLabels {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
        self.0.ado_request_duration.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn ado_responses_and_reconciles_show_up_in_the_text_format() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let observer = AdoRequestMetrics(metrics.clone());
        observer.on_response("builds_list", Some(200), Duration::from_millis(30));
        observer.on_response("builds_list", None, Duration::from_secs(10));
        metrics.reconcile_started("PipelineGate").finish("success");
        metrics.set_ready_counts("PipelineGate", 2, 1, 0);
        let text = render(&registry);
        assert!(
            text.contains(r#"lockstep_ado_requests_total{endpoint="builds_list",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lockstep_ado_requests_total{endpoint="builds_list",status="none"} 1"#)
        );
        assert!(
            text.contains(r#"lockstep_reconciles_total{kind="PipelineGate",result="success"} 1"#)
        );
        assert!(text.contains(r#"lockstep_objects{kind="PipelineGate",ready="True"} 2"#));
        assert!(text.contains("lockstep_reconcile_duration_seconds_count 1"));
    }
}
