//! `spec.nudge` of a PipelineGate: what lockstep asks to reconcile at once when the gate opens.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many explicit targets per gate: each is one PATCH when the gate opens.
pub const MAX_NUDGE_TARGETS: usize = 16;

/// When the gate opens (or opens again for a newer run), request an immediate reconcile of what waits on
/// it instead of leaving Flux and Argo CD to notice on their own schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NudgeSpec {
    /// Nudge when this gate opens. Unset: the controller's `--nudge-default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Argo CD: also retry the Application's last sync when it failed (phase Failed or Error) and no
    /// operation is running, e.g. a sync that failed on this gate's health. Off by default: a retry
    /// re-applies whatever that sync applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_failed_sync: bool,
    /// Objects to nudge besides those the gate's labels and annotations reveal (the Flux Kustomization
    /// that applied it and the Kustomizations depending on that one; the Argo CD Application managing it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub targets: Vec<NudgeTarget>,
}

/// One object to nudge.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct NudgeTarget {
    pub kind: NudgeKind,
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The object's namespace; default: the gate's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// What lockstep can nudge.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum NudgeKind {
    /// A Flux `kustomize.toolkit.fluxcd.io` Kustomization: `reconcile.fluxcd.io/requestedAt` is set.
    Kustomization,
    /// An Argo CD `argoproj.io` Application: `argocd.argoproj.io/refresh` is set.
    Application,
}

impl NudgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NudgeKind::Kustomization => "Kustomization",
            NudgeKind::Application => "Application",
        }
    }
}

/// Whether Azure DevOps service hooks reach lockstep for this object's pipeline (`status.hooks`), written
/// by the hook-health check (`--hook-health-interval`), not by the reconciler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookCoverage {
    /// `Covered` (an enabled subscription covers the pipeline), `Degraded` (only subscriptions on
    /// probation or disabled do), `NotCovered`, or `Unknown` (the subscriptions could not be read).
    pub state: HookCoverageState,
    /// The ids of the subscriptions that cover the pipeline (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub subscriptions: Vec<String>,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// See [`HookCoverage::state`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HookCoverageState {
    Covered,
    Degraded,
    NotCovered,
    Unknown,
}

impl HookCoverageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Covered => "Covered",
            Self::Degraded => "Degraded",
            Self::NotCovered => "NotCovered",
            Self::Unknown => "Unknown",
        }
    }
}
