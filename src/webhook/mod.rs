//! Azure DevOps service hooks as reconcile hints: the receiver, and nothing else.
//!
//! A delivery is authenticated ([`auth`]), parsed into routing hints ([`payload`]), de-duplicated by event
//! id ([`dedup`]), optionally limited to listed subscriptions ([`allowlist`]), routed to the PipelineGates and ServiceTraces it concerns through an in-memory index fed
//! by its own watches ([`index`]), and turned into a `lockstep.dev/requested-at` annotation on each of them
//! ([`server`]), so whichever replica leads reconciles them and re-reads Azure DevOps. The payload never
//! decides a verdict; polling stays the safety net for events Azure DevOps drops.
//!
//! `lockstep run` wires it (`start_webhook` in [`crate::run`]) on every replica, leader or not: Azure
//! DevOps may deliver to any pod, and the annotation reaches whichever replica leads. Its metrics are in
//! [`crate::telemetry::WebhookMetrics`]; the reconcilers see its index only through
//! [`crate::reconciler::HintLog`].

pub mod allowlist;
pub mod auth;
pub mod dedup;
pub mod generated_password;
pub mod index;
pub mod payload;
pub mod server;

pub use allowlist::{AllowlistError, SubscriptionAllowlist};
pub use auth::{
    AuthConfigError, Reload, SubscriptionCredentials, WebhookAuth, WebhookAuthFlags,
    DEFAULT_TOKEN_HEADER, RELOAD_INTERVAL, ROTATION_GRACE,
};
pub use index::{feed_from_watchers, Affected, GateRef, HintIndex, TraceRef};
pub use payload::{parse_event, EventKind, HintTarget, PayloadError, WebhookEvent};
pub use server::{
    router, serve, ServeError, WebhookConfig, WebhookServer, WebhookState, HOOK_PATH,
};
