//! lockstep keeps GitOps deployments in lockstep with Azure DevOps pipelines.
//!
//! Where things live:
//! - [`crd`]: the PipelineGate and ServiceTrace custom resources (the user's contract).
//! - [`ado`]: Azure DevOps REST models and the HTTP client.
//! - [`check`]: `lockstep check`, the gate decision for plain CI pipelines.
//! - [`gate`]: the PipelineGate decision (pure), shared by the controller and `lockstep check`.
//! - [`conditions`]: kstatus Ready/Reconciling/Stalled, shared by both kinds.
//! - [`controller`]: the reconcilers and their wiring; [`run`] is `lockstep run`.
//! - [`poll_cache`]: one Azure DevOps request per pipeline per period, however many objects follow it.
//! - [`telemetry`], [`http`], [`leader`]: metrics and logs, probes, leader election.
//! - [`pipeline_key`]: what an object follows, normalised for shared polling and webhook routing.
//! - [`secret`]: a string type for PATs and passwords that cannot be logged by accident.
//! - [`trace`]: ServiceTrace's pure core (revisions, refs, stage tracing).
//! - [`webhook`]: the Azure DevOps service-hook receiver that turns deliveries into reconcile hints.

pub mod ado;
pub mod api;
pub mod check;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod gate;
pub mod http;
pub mod leader;
pub mod pipeline_key;
pub mod poll_cache;
pub mod run;
pub mod secret;
pub mod telemetry;
pub mod trace;
pub mod webhook;
