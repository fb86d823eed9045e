//! lockstep keeps GitOps deployments in lockstep with Azure DevOps pipelines.
//!
//! Where things live:
//! - [`crd`]: the PipelineGate and ServiceTrace custom resources (the user's contract).
//! - [`ado`]: Azure DevOps REST models and the HTTP client.
//! - [`pipeline_key`]: what an object follows, normalised for shared polling and webhook routing.
//! - [`secret`]: a string type for PATs and passwords that cannot be logged by accident.
//! - [`trace`]: ServiceTrace's pure core (revisions, refs, stage tracing).

pub mod ado;
pub mod crd;
pub mod pipeline_key;
pub mod secret;
pub mod trace;
