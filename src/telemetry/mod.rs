//! What lockstep tells operators about itself: Prometheus metrics and logs. Every metric set registers
//! the same way, `X::register(&mut registry)`, under the `lockstep_` prefix.

pub mod logging;
pub mod metrics;
pub mod webhook_metrics;

pub use logging::{init_logging, LogFormat};
pub use metrics::{AdoRequestMetrics, Metrics, ReconcileTimer};
pub use webhook_metrics::WebhookMetrics;
