//! Stuck flows: how long each step may take after the previous one finished, with arithmetic that
//! saturates so no duration the schema accepts can overflow a clock.

use jiff::{SignedDuration, Timestamp};

use crate::crd::ServiceTraceSpec;

/// `policy.timeout` when unset.
pub const DEFAULT_TIMEOUT: SignedDuration = SignedDuration::from_mins(30);

/// The timeout of every step of one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    /// Build finished → image tag in the HLD repository.
    pub hld: SignedDuration,
    /// HLD commit (or build, without HLD) → manifest commit.
    pub manifest: SignedDuration,
    /// Per environment, in promotion order: manifest commit (or the previous environment's arrival)
    /// → running there.
    pub environments: Vec<SignedDuration>,
}

/// A Kubernetes duration as a `SignedDuration`, capped at a year like every spec duration (the schema
/// refuses longer values; an object stored under an older CRD may still hold one).
pub fn signed(d: &kube::core::Duration) -> SignedDuration {
    let capped = std::time::Duration::from(*d).min(crate::crd::MAX_SPEC_DURATION);
    SignedDuration::try_from(capped).unwrap_or(SignedDuration::MAX)
}

impl Timeouts {
    pub fn from_spec(spec: &ServiceTraceSpec) -> Self {
        let policy = spec.policy.clone().unwrap_or_default();
        let base = policy.timeout.as_ref().map_or(DEFAULT_TIMEOUT, signed);
        Self {
            hld: policy.hld_timeout.as_ref().map_or(base, signed),
            manifest: policy.manifest_timeout.as_ref().map_or(base, signed),
            environments: spec
                .environment_list()
                .iter()
                .map(|e| e.timeout.as_ref().map_or(base, signed))
                .collect(),
        }
    }
}

/// `since + timeout`, saturating at the end of time.
pub fn deadline(since: Timestamp, timeout: SignedDuration) -> Timestamp {
    since.checked_add(timeout).unwrap_or(Timestamp::MAX)
}

/// Has the step overrun? `false` while `since` is unknown: without a start there is no clock to run out.
pub fn overdue(since: Option<Timestamp>, timeout: SignedDuration, now: Timestamp) -> bool {
    since.is_some_and(|s| now > deadline(s, timeout))
}

/// When the caller should look again to notice the step overrunning: the deadline, if it is ahead.
pub fn wake_at(
    since: Option<Timestamp>,
    timeout: SignedDuration,
    now: Timestamp,
) -> Option<Timestamp> {
    since.map(|s| deadline(s, timeout)).filter(|d| *d > now)
}

/// `30m`, `2h`, `1h30m`, `45s`: how a timeout is named in messages (the way users wrote it, roughly).
pub fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
