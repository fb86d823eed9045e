//! What lockstep tells operators about itself: Prometheus metrics and logs.

pub mod logging;
pub mod metrics;

pub use logging::{init_logging, LogFormat};
pub use metrics::{AdoRequestMetrics, Metrics, ReconcileTimer};
