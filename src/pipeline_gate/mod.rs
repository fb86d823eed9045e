//! PipelineGate: hold a GitOps deployment until an Azure DevOps pipeline's newest run succeeded.
//!
//! - [`decision`]: the pure decision (runs + policy → [`Verdict`]), shared with `lockstep check`.
//! - [`status`]: the pure status and Events for a reconcile's [`status::Outcome`].
//! - [`reconcile`]: the I/O around them: the PAT, the shared Builds List, the status write, the requeue.
//! - [`controller`]: the watches that trigger a reconcile.

pub mod controller;
pub mod decision;
pub mod reconcile;
pub mod status;
#[cfg(test)]
mod tests;

pub use decision::{
    decide, decide_error, DecisionInput, Phase, Policy, Reason, Verdict, Waiting, DEFAULT_TIMEOUT,
};

/// The kind name, for metrics, logs and errors.
pub const KIND: &str = "PipelineGate";
