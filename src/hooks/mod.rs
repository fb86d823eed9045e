//! Azure DevOps service-hook subscriptions, seen from lockstep (issue 18).
//!
//! - [`client`]: Subscriptions - List / Create / Replace and Projects - Get, over HTTPS with a PAT or a
//!   Microsoft Entra token.
//! - [`cluster`]: the gates and traces that need hooks, by organization, and the credential they use.
//! - [`model`]: a subscription as the API returns it, and its state.
//! - [`coverage`]: which subscriptions cover a pipeline, and the plan `lockstep hooks sync` carries out
//!   (pure).
//! - [`health`]: the periodic check in `lockstep run`: a metric per state and event type,
//!   `status.hooks` on every gate and trace, an Event when a covering subscription goes on probation or is disabled.
//! - [`sync`]: `lockstep hooks sync`, deriving what is needed from the cluster unless told.
//! - [`setup`]: the same, periodically, in `lockstep run --hooks-sync` (leader only, off by default).

pub mod client;
pub mod cluster;
pub mod coverage;
pub mod health;
pub mod model;
pub mod setup;
pub mod sync;

pub use client::{HooksClient, HooksError};
pub use model::Subscription;
