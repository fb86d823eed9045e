//! Sharding, as Flux does it: several lockstep Deployments split one cluster's PipelineGates and
//! ServiceTraces by a label, each serving only the objects its label selector matches and electing its
//! own leader on its own Lease.
//!
//! - `--shard VALUE` serves the objects labelled `sharding.lockstep.dev/key: VALUE`.
//! - `--watch-label-selector SELECTOR` serves the objects SELECTOR matches (any Kubernetes label selector).
//! - Neither: only the objects **without** the label (`!sharding.lockstep.dev/key`).
//!
//! The default differs from Flux's (whose controllers serve every object unless started with
//! `--watch-label-selector='!sharding.fluxcd.io/key'`) on purpose: with it, labelling an object for a
//! shard moves it out of the main instance in one step, and adding shards can never make two instances
//! write one object's status (two writers would fight over its conditions, each with its own
//! poll timing, and send every Event twice). An object labelled for a shard that does not run is served
//! by nobody: it shows no status, which gates fail closed on, instead of being served twice.
//!
//! The selector is applied to every watch and list of the kinds lockstep owns: both controllers, the
//! webhook receiver's index, the read API's own caches and the hook-health check. Everything else is
//! keyed on those (a nudge follows its gate's reconcile), so it follows.

use std::fmt;

use crate::label_selector::valid_label_value;

/// Objects per list page when a watch of an owned kind (re)lists. The list is paged, never
/// `resourceVersion=0`: the API server serves that from its watch cache in one response whatever the
/// limit (see the emulator's `list`), so 10 000 gates would arrive as one body of tens of MiB, decoded at
/// once (managedFields included) before anything is dropped. A page of 100 decoded gates is about 1 MiB;
/// 100 list requests for 10 000 objects at start-up or after a watch expired is the price.
pub const OWNED_PAGE_SIZE: u32 = 100;

/// The label that assigns an object to a shard.
pub const SHARD_LABEL: &str = "sharding.lockstep.dev/key";

/// The Lease of the unsharded instance (the `--lease-name` default).
pub const DEFAULT_LEASE_NAME: &str = "lockstep-leader";

/// Which objects this instance serves.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Sharding {
    /// No flag: the objects without [`SHARD_LABEL`].
    #[default]
    Unlabelled,
    /// `--shard VALUE`: the objects whose [`SHARD_LABEL`] is VALUE.
    Shard(String),
    /// `--watch-label-selector`: the objects a label selector matches.
    Selector(String),
}

/// A `--shard` or `--watch-label-selector` that Kubernetes would not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("invalid --shard {value:?}: a shard is a label value (at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit)")]
    ShardValue { value: String },
    #[error("invalid --watch-label-selector {selector:?}: {reason}; write requirements like `key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` or `!key`, separated by commas")]
    Selector { selector: String, reason: String },
    #[error("--shard and --watch-label-selector both choose the objects this instance serves; give one of them")]
    Both,
}

impl Sharding {
    /// From the flags; `None` for a flag not given.
    pub fn from_flags(shard: Option<&str>, selector: Option<&str>) -> Result<Self, ShardError> {
        match (shard, selector) {
            (Some(_), Some(_)) => Err(ShardError::Both),
            (Some(value), None) => {
                if value.is_empty() || !valid_label_value(value) {
                    return Err(ShardError::ShardValue {
                        value: value.to_string(),
                    });
                }
                Ok(Sharding::Shard(value.to_string()))
            }
            (None, Some(selector)) => {
                validate_selector(selector).map_err(|reason| ShardError::Selector {
                    selector: selector.to_string(),
                    reason,
                })?;
                Ok(Sharding::Selector(selector.trim().to_string()))
            }
            (None, None) => Ok(Sharding::Unlabelled),
        }
    }

    /// The label selector every watch and list of PipelineGates and ServiceTraces carries.
    pub fn label_selector(&self) -> String {
        match self {
            Sharding::Unlabelled => format!("!{SHARD_LABEL}"),
            Sharding::Shard(value) => format!("{SHARD_LABEL}={value}"),
            Sharding::Selector(selector) => selector.clone(),
        }
    }

    /// `watcher::Config` with this instance's selector: for every watch of an owned kind.
    pub fn watcher_config(&self) -> kube::runtime::watcher::Config {
        kube::runtime::watcher::Config::default()
            .labels(&self.label_selector())
            .page_size(OWNED_PAGE_SIZE)
    }

    /// `ListParams` with this instance's selector: for every list of an owned kind.
    pub fn list_params(&self) -> kube::api::ListParams {
        kube::api::ListParams::default().labels(&self.label_selector())
    }

    /// The shard's name for logs and metrics: the `--shard` value, `""` for the unsharded instance, the
    /// selector itself otherwise.
    pub fn describe(&self) -> String {
        match self {
            Sharding::Unlabelled => String::new(),
            Sharding::Shard(v) => v.clone(),
            Sharding::Selector(s) => s.clone(),
        }
    }

    /// The Lease this instance elects its leader on, unless `--lease-name` names one: each shard has its
    /// own, so each elects its own leader and they never wait on one another. The unsharded instance keeps
    /// [`DEFAULT_LEASE_NAME`], so a cluster that starts sharding keeps its Lease.
    ///
    /// A Lease name is a DNS subdomain and a label value is not (it may hold capitals and `_`); such a
    /// value is lowered into the name and a hash of the exact value appended, so `A` and `a` differ.
    pub fn lease_name(&self, explicit: Option<&str>) -> String {
        if let Some(name) = explicit {
            return name.to_string();
        }
        match self {
            Sharding::Unlabelled => DEFAULT_LEASE_NAME.to_string(),
            Sharding::Shard(value) => {
                let lowered: String = value
                    .chars()
                    .map(|c| match c.to_ascii_lowercase() {
                        c @ ('a'..='z' | '0'..='9' | '-') => c,
                        _ => '-',
                    })
                    .collect();
                if lowered == *value {
                    format!("{DEFAULT_LEASE_NAME}-shard-{value}")
                } else {
                    format!("{DEFAULT_LEASE_NAME}-shard-{lowered}-{:08x}", fnv1a(value))
                }
            }
            Sharding::Selector(selector) => {
                format!("{DEFAULT_LEASE_NAME}-selector-{:08x}", fnv1a(selector))
            }
        }
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label_selector())
    }
}

/// FNV-1a, 32 bits: a hash that is the same in every build and version (std's hasher is not), so a
/// shard's derived Lease name survives an upgrade.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A label selector in the grammar of `k8s.io/apimachinery/pkg/labels.Parse` ([`crate::label_selector`]).
/// An empty selector is refused: it would serve every object, the labelled ones too, beside the shards
/// serving them.
fn validate_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("it is empty (it would serve the objects of every shard)".to_string());
    }
    crate::label_selector::parse(selector)
        .map(|_| ())
        .map_err(|e| e.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_flags_only_unlabelled_objects_are_served() {
        let s = Sharding::from_flags(None, None).unwrap();
        assert_eq!(s, Sharding::Unlabelled);
        assert_eq!(s.label_selector(), "!sharding.lockstep.dev/key");
        assert_eq!(s.lease_name(None), "lockstep-leader");
    }

    #[test]
    fn a_shard_serves_its_label_value_on_its_own_lease() {
        let s = Sharding::from_flags(Some("team-a"), None).unwrap();
        assert_eq!(s.label_selector(), "sharding.lockstep.dev/key=team-a");
        assert_eq!(s.lease_name(None), "lockstep-leader-shard-team-a");
        assert_eq!(s.lease_name(Some("mine")), "mine", "an explicit name wins");
        let b = Sharding::from_flags(Some("team-b"), None).unwrap();
        assert_ne!(s.lease_name(None), b.lease_name(None));
    }

    #[test]
    fn shard_values_that_are_not_lease_names_get_a_distinct_valid_name() {
        let upper = Sharding::from_flags(Some("Team_A"), None)
            .unwrap()
            .lease_name(None);
        let lower = Sharding::from_flags(Some("team-a"), None)
            .unwrap()
            .lease_name(None);
        assert!(
            upper.starts_with("lockstep-leader-shard-team-a-"),
            "{upper}"
        );
        assert_ne!(upper, lower);
        assert!(upper
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        // Stable across builds: the derived name is part of the deployed state.
        assert_eq!(fnv1a("a"), 0xe40c_292c);
    }

    #[test]
    fn invalid_shard_values_are_refused_with_the_rule() {
        for bad in ["", "-a", "a-", "a b", "a/b", &"x".repeat(64)] {
            let err = Sharding::from_flags(Some(bad), None).unwrap_err();
            assert!(matches!(err, ShardError::ShardValue { .. }), "{bad:?}");
            assert!(err.to_string().contains("63 characters"), "{err}");
        }
        assert_eq!(
            Sharding::from_flags(Some("a"), Some("x=y")),
            Err(ShardError::Both)
        );
    }

    #[test]
    fn selectors_follow_the_kubernetes_grammar() {
        for good in [
            "sharding.lockstep.dev/key in (a,b)",
            "!sharding.lockstep.dev/key",
            "team=web,tier!=canary",
            "team==web",
            "env notin (prod, staging),team",
        ] {
            let s = Sharding::from_flags(None, Some(good)).unwrap();
            assert_eq!(s.label_selector(), good);
            assert!(s.lease_name(None).starts_with("lockstep-leader-selector-"));
        }
        for bad in [
            "",
            " ",
            "a=b,",
            "a in b",
            "a=(b",
            "Bad_Prefix.io/x=y",
            "x=-bad",
            "a in (b,-c)",
            "(a)",
        ] {
            let err = Sharding::from_flags(None, Some(bad)).unwrap_err();
            assert!(matches!(err, ShardError::Selector { .. }), "{bad:?}");
            assert!(err.to_string().contains("key=value"), "{err}");
        }
    }

    #[test]
    fn selectors_reach_watches_and_lists() {
        let s = Sharding::Shard("a".into());
        assert_eq!(
            s.watcher_config().label_selector.as_deref(),
            Some("sharding.lockstep.dev/key=a")
        );
        assert_eq!(
            s.list_params().label_selector.as_deref(),
            Some("sharding.lockstep.dev/key=a")
        );
    }
}
