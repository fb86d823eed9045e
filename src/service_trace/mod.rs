//! ServiceTrace: where a change is, from CI build to the revision the cluster runs.
//!
//! The pure core (no I/O):
//! - [`revision`]: parse what GitOps agents and workloads report as deployed.
//! - [`refs`]: the head commit of a branch from Refs - List (prefix filter, annotated tags).
//! - [`deployed`]: read a Flux Kustomization, Argo CD Application or workload object.
//! - [`order`]: whether the manifest head came after the newest successful build.
//! - [`stages`]: the trace itself: stages and one [`Kstatus`](crate::conditions::Kstatus).
//! - [`status`]: the status a verdict asks for.
//!
//! The I/O around it:
//! - [`read`]: Azure DevOps and the deployed object, into a [`TraceInput`].
//! - [`commit_dates`]: committer dates already read.
//! - [`reconcile`]: PAT, read, trace, one status write, Events, requeue.
//! - [`controller`]: the watches that trigger a reconcile.

pub mod commit_dates;
pub mod controller;
pub mod deployed;
pub mod flow;
pub mod order;
pub mod read;
pub mod reconcile;
pub mod refs;
pub mod revision;
pub mod stages;
pub mod status;
#[cfg(test)]
mod tests;

pub use stages::{trace, TraceInput, TraceVerdict};

/// The kind name, for metrics, logs and errors.
pub const KIND: &str = "ServiceTrace";

impl crate::reconciler::runtime::CacheCompact for crate::crd::ServiceTrace {}
