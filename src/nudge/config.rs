//! Controller-wide nudge settings, from `lockstep run`'s flags.

/// Controller-wide nudge settings (`lockstep run --nudge-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NudgeConfig {
    /// Whether a gate without `spec.nudge.enabled` nudges (`--nudge-default`).
    pub default_enabled: bool,
    /// Nudge Flux Kustomizations (`--nudge-flux`); the chart grants `patch` on them only then.
    pub flux: bool,
    /// Nudge Argo CD Applications (`--nudge-argocd`); the chart grants `patch` on them only then.
    pub argocd: bool,
    /// Where Argo CD keeps its Applications when the tracking id does not name a namespace.
    pub argocd_namespace: String,
    /// `--namespace`: dependents are looked for only there (`None`: every namespace).
    pub watch_namespace: Option<String>,
}

impl Default for NudgeConfig {
    fn default() -> Self {
        Self {
            default_enabled: false,
            flux: true,
            argocd: true,
            argocd_namespace: "argocd".to_string(),
            watch_namespace: None,
        }
    }
}
