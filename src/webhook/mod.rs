//! Azure DevOps service hooks as reconcile hints.
//!
//! A delivery is authenticated ([`auth`]), parsed into routing hints ([`payload`]), de-duplicated by event
//! id ([`dedup`]), routed to the PipelineGates and ServiceTraces it concerns through an in-memory index fed
//! by the controllers' watches ([`index`]), and turned into a `lockstep.dev/requested-at` annotation on
//! each of them ([`server`]), so whichever replica leads reconciles them and re-reads Azure DevOps. The
//! payload never decides a verdict; polling stays the safety net for events Azure DevOps drops.
//!
//! Wiring in `lockstep run` (every replica, leader or not: Azure DevOps may deliver to any pod, and the
//! annotation reaches whichever replica leads):
//!
//! ```text
//! let index = Arc::new(HintIndex::new());
//! tokio::spawn(feed_from_watchers(gates_api, traces_api, watcher::Config::default(), index.clone()));
//! let webhook_metrics = WebhookMetrics::new();
//! webhook_metrics.register(registry.sub_registry_with_prefix("lockstep"));
//! if let Some(auth) = WebhookAuth::from_flags(user, password_file, token_file, Some(header), allow_unauthenticated)? {
//!     let state = WebhookState::new(client.clone(), index.clone(), auth, webhook_metrics.clone());
//!     let server = serve(webhook_addr, state, shutdown_future).await?;   // server.local_addr(), server.wait()
//! }
//! // in the reconciler, after a poll found a new run/commit:
//! if index.last_hint(&ObjectRef::from_obj(&*gate)).is_none_or(|t| t < previous_poll) {
//!     webhook_metrics.record_polling_found_first_for("PipelineGate");
//! }
//! ```

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
