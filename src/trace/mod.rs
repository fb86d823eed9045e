//! ServiceTrace's pure core: where a change is, from CI build to the revision the cluster runs.
//!
//! - [`revision`]: parse what GitOps agents and workloads report as deployed.
//! - [`refs`]: the head commit of a branch from Refs - List (prefix filter, annotated tags).
//! - [`deployed`]: read a Flux Kustomization, Argo CD Application or workload object.
//! - [`order`]: whether the manifest head came after the newest successful build.
//! - [`stages`]: the trace itself, stages and conditions.
//!
//! No I/O here: the controller reads Azure DevOps and the cluster, then calls [`stages::trace`].

pub mod deployed;
pub mod order;
pub mod refs;
pub mod revision;
pub mod stages;

pub use stages::{trace, TraceInput, TraceVerdict};
