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
        kube::runtime::watcher::Config::default().labels(&self.label_selector())
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

/// A label value as `k8s.io/apimachinery/pkg/util/validation.IsValidLabelValue` accepts it (empty is
/// valid there; `--shard` refuses it separately).
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key as `IsQualifiedName` accepts it: an optional DNS-subdomain prefix and `/`, then a name.
fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty() && valid_label_value(name);
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

/// Splits on the commas outside parentheses (`a in (x,y),b` is two requirements).
fn split_requirements(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".to_string());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".to_string());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn check_key(key: &str) -> Result<(), String> {
    if valid_label_key(key) {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if valid_label_value(value) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

/// A label selector in the grammar of `k8s.io/apimachinery/pkg/labels.Parse`. An empty selector is
/// refused: it would serve every object, the labelled ones too, beside the shards serving them.
fn validate_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("it is empty (it would serve the objects of every shard)".to_string());
    }
    for raw in split_requirements(selector)? {
        let part = raw.trim();
        if part.is_empty() {
            return Err("it has an empty requirement".to_string());
        }
        if let Some(key) = part.strip_prefix('!') {
            check_key(key.trim())?;
        } else if let Some((k, v)) = part.split_once("!=") {
            check_key(k.trim())?;
            check_value(v.trim())?;
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            check_key(k.trim())?;
            check_value(v.trim())?;
        } else if let Some((k, rest)) = part
            .split_once(" notin ")
            .or_else(|| part.split_once(" in "))
        {
            check_key(k.trim())?;
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: a set is written (a,b)"))?;
            for v in inner.split(',') {
                check_value(v.trim())?;
            }
        } else {
            check_key(part)?;
        }
    }
    Ok(())
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
