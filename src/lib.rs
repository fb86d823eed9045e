//! lockstep keeps GitOps deployments in lockstep with Azure DevOps pipelines.
//!
//! Where things live:
//! - [`crd`]: the PipelineGate and ServiceTrace custom resources (the user's contract).
//! - [`ado`]: Azure DevOps REST models and the HTTP client.
//! - [`check`]: `lockstep check`, the gate decision for plain CI pipelines.
//! - [`gate`]: the PipelineGate decision (pure), shared by the controller and `lockstep check`.
//! - [`pipeline_key`]: what an object follows, normalised for shared polling and webhook routing.
//! - [`secret`]: a string type for PATs and passwords that cannot be logged by accident.

pub mod ado;
pub mod check;
pub mod crd;
pub mod gate;
pub mod pipeline_key;
pub mod secret;
