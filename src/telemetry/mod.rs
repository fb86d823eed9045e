//! What lockstep tells operators about itself: Prometheus metrics and logs. Every metric set registers
//! the same way, `X::register(&mut registry)`, under the `lockstep_` prefix.

pub mod hook_metrics;
pub mod logging;
pub mod metrics;
pub mod poll_metrics;
pub mod webhook_metrics;

pub use hook_metrics::HookMetrics;
pub use logging::{init_logging, LogFormat};
pub use metrics::{AdoRequestMetrics, Metrics, ReconcileTimer};
pub use poll_metrics::BuildsListRate;
pub use webhook_metrics::WebhookMetrics;
