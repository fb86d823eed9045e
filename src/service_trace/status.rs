//! The ServiceTrace status the controller wants: a pure function of the current status and what this
//! reconcile learned, written only when it differs from the current one.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::stages::TraceVerdict;
use crate::conditions::Kstatus;
use crate::crd::{ServiceTrace, ServiceTraceStatus};
use crate::reconciler::status_write::WithConditions;

/// `status.lastCheckedTime` is refreshed at least this often even when nothing else changed, so readers
/// can tell a quiet trace from a dead controller without a status write on every poll.
const LAST_CHECKED_REFRESH: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

impl WithConditions for ServiceTraceStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// The status for a verdict: stages, commit ids, conditions, observedGeneration; `lastError` cleared.
pub fn desired_status(
    verdict: &TraceVerdict,
    previous: &ServiceTraceStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> ServiceTraceStatus {
    let mut next = previous.clone();
    verdict.apply_to(&mut next);
    next.last_error = None;
    next.observed_generation = generation;
    next.conditions = verdict
        .kstatus
        .to_conditions(&previous.conditions, generation, Time(now));
    // lastCheckedTime moves with every other change, and at least every LAST_CHECKED_REFRESH.
    let checked = previous.last_checked_time.as_ref().map(|t| t.0);
    let mut unchanged = next.clone();
    unchanged.last_checked_time = previous.last_checked_time.clone();
    let stale = checked.is_none_or(|t| now.duration_since(t) >= LAST_CHECKED_REFRESH);
    next.last_checked_time = if unchanged == *previous && !stale {
        previous.last_checked_time.clone()
    } else {
        Some(Time(now))
    };
    next
}

/// `status` with the conditions of `k` and the object's generation observed.
pub fn with_kstatus(
    mut status: ServiceTraceStatus,
    k: &Kstatus,
    trace: &ServiceTrace,
    now: Timestamp,
) -> ServiceTraceStatus {
    status.conditions = k.to_conditions(&status.conditions, trace.metadata.generation, Time(now));
    status.observed_generation = trace.metadata.generation;
    status
}
