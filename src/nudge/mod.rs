//! Nudging: when a gate opens, ask Flux and Argo CD to reconcile what waits on it now, instead of at
//! their next `--requeue-dependency`, `retryInterval` or sync backoff (issue 18).
//!
//! - [`targets`]: which objects wait on a gate (pure): the Flux Kustomization that applied it, the
//!   Kustomizations whose `dependsOn` names that one, the Argo CD Application managing it, and the gate's
//!   explicit `spec.nudge.targets`.
//! - [`patch`]: the requests, exactly as `flux reconcile` and `argocd app get --refresh` make them.
//!
//! A nudge is best effort: the gate's status already tells Flux and Argo CD the truth, so a refused or
//! failed patch is reported (a Warning Event) and never fails the reconcile.

pub mod config;
pub mod patch;
pub mod targets;

pub use config::NudgeConfig;
pub use patch::{nudge_gate, NudgeReport};
pub use targets::{Target, TargetWhy};
