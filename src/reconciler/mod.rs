//! The machinery every kind's reconciler uses. Nothing here names a kind: `pipeline_gate` and
//! `service_trace` import this folder, never the other way round (`tests/module_layers.rs` checks it).
//!
//! - [`io`]: what a reconcile talks to ([`ReconcileIo`]): clients, the shared Builds List cache, the
//!   tunables ([`ReconcilerConfig`]).
//! - [`runtime`]: what the process shares with its controllers ([`Shared`]), namespace scoping,
//!   readiness after the first list, the bounded stop.
//! - [`schedule`]: the pipeline's requeue grid ([`until_next_tick`]); [`idle`]: how far idle polling
//!   stretches while service hooks prove themselves.
//! - [`memory`]: per-object memory (failure streak, last write, Ready gauge); [`backoff`]: retry delays.
//! - [`status_write`]: server-side apply of a status, only when it changed.
//! - [`events`]: transition Events and their reasons; [`credentials`], [`token_cache`]: the PAT or Entra token.
//! - [`hints`]: what the webhook receiver lends the reconcilers; [`hook_relay`]: the receiver handing
//!   objects straight to a controller in the same process; [`error`]: what fails a reconcile.

pub mod backoff;
pub mod credentials;
pub mod error;
pub mod events;
pub mod hints;
pub mod hook_relay;
pub mod idle;
pub mod io;
pub mod memory;
pub mod runtime;
pub mod schedule;
pub mod status_write;
pub mod token_cache;

pub use credentials::{objects_using_secret, resolve, CredentialError};
pub use error::Error;
pub use events::EventRecorders;
pub use hints::{HintLog, WebhookHints};
pub use hook_relay::HookRelay;
pub use io::{BuildsCache, ReconcileIo, ReconcilerConfig, RUNS_PER_LIST};
pub use memory::ObjectMemory;
pub use runtime::{scoped, FirstList, Shared};
pub use schedule::until_next_tick;
