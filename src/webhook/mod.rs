//! Azure DevOps service hooks as reconcile hints.
//!
//! A delivery is authenticated ([`auth`]), parsed into routing hints ([`payload`]), de-duplicated by event
//! id ([`dedup`]), routed to the PipelineGates and ServiceTraces it concerns through an in-memory index fed
//! by the controllers' watches ([`index`]), and turned into a `lockstep.dev/requested-at` annotation on
//! each of them ([`server`]), so whichever replica leads reconciles them and re-reads Azure DevOps. The
//! payload never decides a verdict; polling stays the safety net for events Azure DevOps drops.

pub mod auth;
pub mod dedup;
pub mod index;
pub mod metrics;
pub mod payload;
pub mod server;

pub use auth::{AuthConfigError, WebhookAuth, DEFAULT_TOKEN_HEADER};
pub use index::{feed_from_watchers, Affected, GateRef, HintIndex, TraceRef};
pub use metrics::WebhookMetrics;
pub use payload::{parse_event, EventKind, HintTarget, PayloadError, WebhookEvent};
pub use server::{
    router, serve, ServeError, WebhookConfig, WebhookServer, WebhookState, HOOK_PATH,
    REQUESTED_AT_ANNOTATION,
};
