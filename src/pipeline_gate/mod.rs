//! PipelineGate: hold a GitOps deployment until an Azure DevOps pipeline's newest run succeeded.
//!
//! - [`decision`]: the pure decision (runs + policy → [`Verdict`]), shared with `lockstep check`.
//! - [`status`]: the pure status and Events for a reconcile's [`status::Outcome`].
//! - [`reconcile`]: the I/O around them: the PAT, the shared Builds List, the status write, the requeue.
//! - [`controller`]: the watches that trigger a reconcile.
//! - [`nudge`]: what the reconcile does after the gate opened (ask Flux and Argo CD to reconcile now).

pub mod controller;
pub mod decision;
pub mod nudge;
pub mod reconcile;
pub mod status;
#[cfg(test)]
mod tests;

pub use decision::{
    decide, decide_error, DecisionInput, Phase, Policy, Reason, Verdict, Waiting, DEFAULT_TIMEOUT,
};

/// The kind name, for metrics, logs and errors.
pub const KIND: &str = "PipelineGate";

/// Besides what every kind sheds, an open gate's three equal run summaries become one allocation.
impl crate::reconciler::runtime::CacheCompact for crate::crd::PipelineGate {
    fn compact_for_cache(&mut self) {
        crate::reconciler::runtime::strip_unread(&mut self.metadata);
        if let Some(status) = self.status.as_mut() {
            status.share_equal_runs();
        }
    }
}
