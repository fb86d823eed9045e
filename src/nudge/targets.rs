//! Which objects wait on a gate. Pure: labels, annotations and listed Kustomizations in, targets out.

use std::collections::BTreeMap;

use serde_json::Value;

use super::config::NudgeConfig;
use crate::crd::{NudgeKind, NudgeSpec};

/// Label kustomize-controller puts on everything a Kustomization applied: its name.
/// (fluxcd/kustomize-controller, `internal/controller/kustomization_controller.go`: `kustomize.toolkit.fluxcd.io/name`.)
pub const FLUX_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// ... and its namespace.
pub const FLUX_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Argo CD's annotation-based resource tracking: `<app>:<group>/<kind>:<namespace>/<name>`, where `<app>`
/// is `<namespace>_<name>` for an Application outside Argo CD's own namespace
/// (argo-cd `util/argo/resource_tracking.go`).
pub const ARGOCD_TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's default label-based tracking (`application.instanceLabelKey`): the Application's name.
pub const ARGOCD_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// At most this many objects nudged per opening, whatever the labels and dependents reveal: each is a
/// PATCH, and a gate is not a broadcast mechanism.
pub const MAX_TARGETS: usize = 64;

/// Why an object is nudged, for the Event that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetWhy {
    /// The Kustomization that applied the gate.
    AppliedGate,
    /// A Kustomization whose `dependsOn` names the one that applied the gate.
    DependsOn,
    /// The Application managing the gate.
    ManagesGate,
    /// Listed in `spec.nudge.targets`.
    Explicit,
}

/// One object to nudge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub kind: NudgeKind,
    pub namespace: String,
    pub name: String,
    pub why: TargetWhy,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Whether the gate nudges at all.
pub fn enabled(config: &NudgeConfig, spec: Option<&NudgeSpec>) -> bool {
    spec.and_then(|s| s.enabled)
        .unwrap_or(config.default_enabled)
}

/// The Kustomization that applied the gate, from kustomize-controller's labels.
pub fn applying_kustomization(labels: &BTreeMap<String, String>) -> Option<(String, String)> {
    let name = labels.get(FLUX_NAME_LABEL)?;
    let namespace = labels.get(FLUX_NAMESPACE_LABEL)?;
    (!name.is_empty() && !namespace.is_empty()).then(|| (namespace.clone(), name.clone()))
}

/// The Application managing the gate: the tracking annotation first (what Argo CD uses when set), else
/// the instance label (Argo CD's default tracking method, Applications in Argo CD's namespace).
pub fn managing_application(
    config: &NudgeConfig,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    if let Some(id) = annotations.get(ARGOCD_TRACKING_ANNOTATION) {
        let app = id.split(':').next().unwrap_or_default();
        if let Some((ns, name)) = app.split_once('_') {
            if !ns.is_empty() && !name.is_empty() {
                return Some((ns.to_string(), name.to_string()));
            }
        } else if !app.is_empty() {
            return Some((config.argocd_namespace.clone(), app.to_string()));
        }
    }
    let name = labels.get(ARGOCD_INSTANCE_LABEL)?;
    (!name.is_empty()).then(|| (config.argocd_namespace.clone(), name.clone()))
}

/// Kustomizations (as listed, JSON) whose `spec.dependsOn` names `parent` (namespace, name). A
/// `dependsOn` entry without a namespace means the dependent's own (Flux `meta.NamespacedObjectReference`).
pub fn dependents_of(parent: &(String, String), kustomizations: &[Value]) -> Vec<Target> {
    let mut out = Vec::new();
    for k in kustomizations {
        let (Some(ns), Some(name)) = (
            k["metadata"]["namespace"].as_str(),
            k["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let names_parent = k["spec"]["dependsOn"].as_array().is_some_and(|deps| {
            deps.iter().any(|d| {
                let dep_ns = d["namespace"].as_str().unwrap_or(ns);
                d["name"].as_str() == Some(parent.1.as_str()) && dep_ns == parent.0
            })
        });
        if names_parent {
            out.push(Target {
                kind: NudgeKind::Kustomization,
                namespace: ns.to_string(),
                name: name.to_string(),
                why: TargetWhy::DependsOn,
            });
        }
    }
    out
}

/// Everything to nudge for a gate in `gate_namespace`, without the dependents (they need a list):
/// de-duplicated, only of the kinds the controller nudges, at most [`MAX_TARGETS`].
pub fn direct_targets(
    config: &NudgeConfig,
    gate_namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    spec: Option<&NudgeSpec>,
) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some((namespace, name)) = applying_kustomization(labels) {
        out.push(Target {
            kind: NudgeKind::Kustomization,
            namespace,
            name,
            why: TargetWhy::AppliedGate,
        });
    }
    if let Some((namespace, name)) = managing_application(config, labels, annotations) {
        out.push(Target {
            kind: NudgeKind::Application,
            namespace,
            name,
            why: TargetWhy::ManagesGate,
        });
    }
    for t in spec.map(|s| s.targets.as_slice()).unwrap_or_default() {
        out.push(Target {
            kind: t.kind,
            namespace: t
                .namespace
                .clone()
                .unwrap_or_else(|| gate_namespace.to_string()),
            name: t.name.clone(),
            why: TargetWhy::Explicit,
        });
    }
    finish(config, out)
}

/// Keep the kinds the controller nudges, drop repeats (first reason wins), cap at [`MAX_TARGETS`].
pub fn finish(config: &NudgeConfig, targets: Vec<Target>) -> Vec<Target> {
    let mut seen = std::collections::HashSet::new();
    targets
        .into_iter()
        .filter(|t| match t.kind {
            NudgeKind::Kustomization => config.flux,
            NudgeKind::Application => config.argocd,
        })
        .filter(|t| seen.insert((t.kind, t.namespace.clone(), t.name.clone())))
        .take(MAX_TARGETS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NudgeTarget;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flux_labels_name_the_applying_kustomization() {
        let labels = map(&[
            (FLUX_NAME_LABEL, "gates"),
            (FLUX_NAMESPACE_LABEL, "flux-system"),
        ]);
        let t = direct_targets(&NudgeConfig::default(), "web", &labels, &map(&[]), None);
        assert_eq!(
            t,
            [Target {
                kind: NudgeKind::Kustomization,
                namespace: "flux-system".into(),
                name: "gates".into(),
                why: TargetWhy::AppliedGate
            }]
        );
        // Half a pair reveals nothing.
        let half = map(&[(FLUX_NAME_LABEL, "gates")]);
        assert!(direct_targets(&NudgeConfig::default(), "web", &half, &map(&[]), None).is_empty());
    }

    #[test]
    fn argo_tracking_id_wins_over_the_instance_label_and_may_name_a_namespace() {
        let cfg = NudgeConfig::default();
        let labels = map(&[(ARGOCD_INSTANCE_LABEL, "from-label")]);
        let plain = map(&[(
            ARGOCD_TRACKING_ANNOTATION,
            "web:lockstep.dev/PipelineGate:web/base",
        )]);
        assert_eq!(
            managing_application(&cfg, &labels, &plain),
            Some(("argocd".into(), "web".into()))
        );
        let any_ns = map(&[(
            ARGOCD_TRACKING_ANNOTATION,
            "team-a_web:lockstep.dev/PipelineGate:web/base",
        )]);
        assert_eq!(
            managing_application(&cfg, &labels, &any_ns),
            Some(("team-a".into(), "web".into()))
        );
        assert_eq!(
            managing_application(&cfg, &labels, &map(&[])),
            Some(("argocd".into(), "from-label".into()))
        );
    }

    #[test]
    fn dependents_match_name_and_namespace_defaulting_to_their_own() {
        let parent = ("flux-system".to_string(), "gates".to_string());
        let list = vec![
            json!({"metadata": {"name": "apps", "namespace": "flux-system"},
                   "spec": {"dependsOn": [{"name": "infra"}, {"name": "gates"}]}}),
            json!({"metadata": {"name": "other-ns", "namespace": "team"},
                   "spec": {"dependsOn": [{"name": "gates"}]}}),
            json!({"metadata": {"name": "cross", "namespace": "team"},
                   "spec": {"dependsOn": [{"name": "gates", "namespace": "flux-system"}]}}),
            json!({"metadata": {"name": "none", "namespace": "flux-system"}, "spec": {}}),
        ];
        let names: Vec<String> = dependents_of(&parent, &list)
            .into_iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(
            names,
            ["Kustomization flux-system/apps", "Kustomization team/cross"]
        );
    }

    #[test]
    fn explicit_targets_default_to_the_gate_namespace_and_disabled_kinds_are_dropped() {
        let spec = NudgeSpec {
            enabled: Some(true),
            retry_failed_sync: false,
            targets: vec![
                NudgeTarget {
                    kind: NudgeKind::Application,
                    name: "web".into(),
                    namespace: None,
                },
                NudgeTarget {
                    kind: NudgeKind::Kustomization,
                    name: "apps".into(),
                    namespace: Some("flux-system".into()),
                },
                NudgeTarget {
                    kind: NudgeKind::Kustomization,
                    name: "apps".into(),
                    namespace: Some("flux-system".into()),
                },
            ],
        };
        let cfg = NudgeConfig::default();
        let all: Vec<String> = direct_targets(&cfg, "web", &map(&[]), &map(&[]), Some(&spec))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            all,
            ["Application web/web", "Kustomization flux-system/apps"]
        );
        let no_argo = NudgeConfig {
            argocd: false,
            ..cfg
        };
        assert_eq!(
            direct_targets(&no_argo, "web", &map(&[]), &map(&[]), Some(&spec)).len(),
            1
        );
    }

    #[test]
    fn the_gate_setting_beats_the_controller_default() {
        let on = NudgeConfig {
            default_enabled: true,
            ..NudgeConfig::default()
        };
        let off = NudgeConfig::default();
        let opt_out = NudgeSpec {
            enabled: Some(false),
            ..NudgeSpec::default()
        };
        let opt_in = NudgeSpec {
            enabled: Some(true),
            ..NudgeSpec::default()
        };
        assert!(enabled(&on, None));
        assert!(!enabled(&off, None));
        assert!(!enabled(&on, Some(&opt_out)));
        assert!(enabled(&off, Some(&opt_in)));
        assert!(!enabled(&off, Some(&NudgeSpec::default())));
    }
}
